package drainkit_test

import (
	"io"
	"testing"

	"google.golang.org/grpc"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"

	"github.com/drainkit/drainkit/interceptors"
)

// lazyHeaderStream sets a header as its first message goes out, as
// wrappers do that add what they learn once the handler answers.
type lazyHeaderStream struct {
	grpc.ServerStream
	set bool
}

func (s *lazyHeaderStream) SendMsg(m any) error {
	if !s.set {
		s.set = true
		if err := s.ServerStream.SetHeader(metadata.Pairs("x-lazy", "1")); err != nil {
			return err
		}
	}
	return s.ServerStream.SendMsg(m)
}

// TestOuterWrapperSetsHeaderOnFirstSend puts, outside the Tracker, an
// interceptor whose stream wrapper sets a header in its first SendMsg: the
// client must receive it, as it does without the Tracker.
func TestOuterWrapperSetsHeaderOnFirstSend(t *testing.T) {
	for _, tp := range transports {
		t.Run(tp.name, func(t *testing.T) {
			tr := interceptors.NewTracker()
			outer := func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
				return h(srv, &lazyHeaderStream{ServerStream: ss})
			}
			srv := grpc.NewServer(grpc.ChainStreamInterceptor(outer, tr.StreamServerInterceptor()))
			testgrpc.RegisterTestServiceServer(srv, &streamService{output: func(stream testgrpc.TestService_StreamingOutputCallServer) error {
				return stream.Send(&testgrpc.StreamingOutputCallResponse{})
			}})
			cc := tp.serve(t, srv)
			stream, err := testgrpc.NewTestServiceClient(cc).StreamingOutputCall(testContext(t), &testgrpc.StreamingOutputCallRequest{})
			if err != nil {
				t.Fatalf("StreamingOutputCall() = %v", err)
			}
			if _, err := stream.Recv(); err != nil {
				t.Fatalf("Recv() = %v", err)
			}
			md, err := stream.Header()
			if err != nil || len(md.Get("x-lazy")) == 0 {
				t.Errorf("Header() = %v, %v; want x-lazy set by the outer wrapper's SendMsg", md, err)
			}
		})
	}
}

// heldStream holds its first SendMsg until release is closed, and says on
// entered that it holds it. It is put outside the Tracker, whose wrapper
// calls it once it has counted the call in: it says on recving that the
// handler has called RecvMsg.
type heldStream struct {
	grpc.ServerStream
	entered chan<- struct{}
	recving chan<- struct{}
	release <-chan struct{}
	held    bool
}

func (s *heldStream) RecvMsg(m any) error {
	select {
	case s.recving <- struct{}{}:
	default:
	}
	return s.ServerStream.RecvMsg(m)
}

func (s *heldStream) SendMsg(m any) error {
	if !s.held {
		s.held = true
		s.entered <- struct{}{}
		<-s.release
	}
	return s.ServerStream.SendMsg(m)
}

// TestCancelDuringFirstSend cancels a bidi stream while a wrapper outside
// the Tracker holds the handler's first Send and another goroutine of the
// handler waits in Recv on a client that sends nothing. Once the Send goes
// on, the stream must end with the Tracker's status, freeing the Recv.
func TestCancelDuringFirstSend(t *testing.T) {
	for _, tp := range transports {
		t.Run(tp.name, func(t *testing.T) {
			tr := interceptors.NewTracker()
			entered, recving, release := make(chan struct{}, 1), make(chan struct{}, 1), make(chan struct{})
			outer := func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
				return h(srv, &heldStream{ServerStream: ss, entered: entered, recving: recving, release: release})
			}
			recvErr := make(chan error, 1)
			srv := grpc.NewServer(grpc.ChainStreamInterceptor(outer, tr.StreamServerInterceptor()))
			testgrpc.RegisterTestServiceServer(srv, &streamService{duplex: func(stream testgrpc.TestService_FullDuplexCallServer) error {
				done := make(chan struct{})
				go func() {
					defer close(done)
					for {
						if _, err := stream.Recv(); err != nil {
							recvErr <- err
							return
						}
					}
				}()
				err := stream.Send(&testgrpc.StreamingOutputCallResponse{})
				<-done
				return err
			}})
			cc := tp.serve(t, srv)
			stream, err := testgrpc.NewTestServiceClient(cc).FullDuplexCall(testContext(t))
			if err != nil {
				t.Fatalf("FullDuplexCall() = %v", err)
			}
			receive(t, entered, "the first Send to be held")
			receive(t, recving, "the handler to wait in Recv")
			if n := tr.CancelAll(errDrain); n != 1 {
				t.Errorf("CancelAll() = %d, want 1", n)
			}
			close(release)
			if err := receive(t, recvErr, "the handler's Recv to return"); err == nil || err == io.EOF {
				t.Errorf("handler's Recv() = %v, want an error", err)
			}
			checkShuttingDown(t, "client after the messages", recvAll(stream.Recv).err, errDrain)
			checkIdle(t, tr)
		})
	}
}
