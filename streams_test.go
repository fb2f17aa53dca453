package drainkit_test

import (
	"context"
	"io"
	"runtime"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/reflection"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"

	"github.com/drainkit/drainkit/interceptors"
	"github.com/drainkit/drainkit/internal/servetest"
)

const (
	// streamTimeout is the WithStreamTimeout the stalled-upload test lets
	// fire; its client must hear of it well before stalledWithin.
	streamTimeout = 100 * time.Millisecond
	stalledWithin = 2 * time.Second

	// flowWindow is the client's flow-control window in the Send test, and
	// flowChunk the size of each message the handler sends.
	flowWindow = 64 << 10
	flowChunk  = 16 << 10
)

// streamService runs the handler a test gives for each streaming method,
// with the stream grpc passes it.
type streamService struct {
	testgrpc.UnimplementedTestServiceServer
	duplex func(testgrpc.TestService_FullDuplexCallServer) error
	output func(testgrpc.TestService_StreamingOutputCallServer) error
	input  func(testgrpc.TestService_StreamingInputCallServer) error
}

func (s *streamService) FullDuplexCall(stream testgrpc.TestService_FullDuplexCallServer) error {
	return s.duplex(stream)
}

func (s *streamService) StreamingOutputCall(_ *testgrpc.StreamingOutputCallRequest, stream testgrpc.TestService_StreamingOutputCallServer) error {
	return s.output(stream)
}

func (s *streamService) StreamingInputCall(stream testgrpc.TestService_StreamingInputCallServer) error {
	return s.input(stream)
}

// A transport serves a grpc.Server to a client; the Tracker must end
// streams on both.
type transport struct {
	name  string
	serve func(t *testing.T, srv *grpc.Server, dial ...grpc.DialOption) *grpc.ClientConn
}

var transports = []transport{
	{name: "listener", serve: serveBufconn},
	{name: "ServeHTTP", serve: serveHTTP},
}

// serveBufconn serves srv on an in-memory listener of its own until the test
// ends, and returns a client of it.
func serveBufconn(t *testing.T, srv *grpc.Server, dial ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	return servetest.Serve(t, srv, false, dial...)
}

// serveHTTP serves srv through grpc.Server.ServeHTTP on an http.Server that
// speaks unencrypted HTTP/2 on a loopback port, until the test ends, and
// returns a client of it.
func serveHTTP(t *testing.T, srv *grpc.Server, dial ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	return servetest.Serve(t, srv, true, dial...)
}

// TestStreamsEndOnGRPCTransports fails when grpc-go no longer gives the
// Tracker a way to end a stream whose handler is blocked in RecvMsg or
// SendMsg: cancellation would then reach only the handler's context, and
// every drain with an idle bidi stream open would be forced.
func TestStreamsEndOnGRPCTransports(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			ends := make(chan bool, 1)
			srv := grpc.NewServer()
			testgrpc.RegisterTestServiceServer(srv, &streamService{duplex: func(stream testgrpc.TestService_FullDuplexCallServer) error {
				ends <- interceptors.EndsStreams(stream.Context())
				return nil
			}})
			cc := tr.serve(t, srv)
			stream, err := testgrpc.NewTestServiceClient(cc).FullDuplexCall(testContext(t))
			if err != nil {
				t.Fatalf("FullDuplexCall() = %v", err)
			}
			if !receive(t, ends, "the handler's report") {
				t.Fatalf("EndsStreams() = false in a handler served by grpc-go: its ServerTransportStream has lost WriteStatus(*status.Status) error; " +
					"interceptors.Tracker can no longer end streams blocked in Recv or Send (see the interceptors package doc)")
			}
			if _, err := stream.Recv(); err != io.EOF {
				t.Errorf("Recv() = %v, want io.EOF", err)
			}
		})
	}
	if interceptors.EndsStreams(context.Background()) {
		t.Errorf("EndsStreams(context.Background()) = true, want false")
	}
}

// blockedEnd is how a stream handler's blocked Recv or Send, then the
// handler itself, ended.
type blockedEnd struct {
	blockedErr error // what the blocked Recv or Send returned
}

// openDuplex opens a bidi stream on cc, sends it one message and waits
// for its handler to report, on recvd, that it has received it.
func openDuplex(t *testing.T, cc *grpc.ClientConn, recvd <-chan struct{}) testgrpc.TestService_FullDuplexCallClient {
	t.Helper()
	stream, err := testgrpc.NewTestServiceClient(cc).FullDuplexCall(testContext(t))
	if err != nil {
		t.Fatalf("FullDuplexCall() = %v", err)
	}
	if err := stream.Send(&testgrpc.StreamingOutputCallRequest{}); err != nil {
		t.Fatalf("Send() = %v", err)
	}
	receive(t, recvd, "the handler's first message")
	return stream
}

// TestCancelEndsStreamBlockedInRecv cancels a bidi stream whose handler
// waits in Recv for a client that sends nothing, the ordinary
// `for { m, err := stream.Recv() ... }` loop. The client must receive
// codes.Unavailable at once, the handler's Recv must fail, and the handler
// must return.
func TestCancelEndsStreamBlockedInRecv(t *testing.T) {
	for _, cancel := range []struct {
		name      string
		longLived bool
		do        func(*interceptors.Tracker) int
	}{
		{name: "CancelAll", do: func(tr *interceptors.Tracker) int { return tr.CancelAll(errDrain) }},
		{name: "CancelLongLived", longLived: true, do: func(tr *interceptors.Tracker) int { return tr.CancelLongLived(errDrain) }},
	} {
		for _, tp := range transports {
			t.Run(cancel.name+"/"+tp.name, func(t *testing.T) {
				var opts []interceptors.Option
				if cancel.longLived {
					opts = append(opts, interceptors.WithLongLived(duplexMethod))
				}
				tr := interceptors.NewTracker(opts...)
				recvd, ended := make(chan struct{}, 1), make(chan blockedEnd, 1)
				srv := grpc.NewServer(tr.ServerOptions()...)
				testgrpc.RegisterTestServiceServer(srv, &streamService{duplex: func(stream testgrpc.TestService_FullDuplexCallServer) error {
					for {
						_, err := stream.Recv()
						if err != nil {
							ended <- blockedEnd{blockedErr: err}
							return err
						}
						recvd <- struct{}{}
					}
				}})
				cc := tp.serve(t, srv)
				stream := openDuplex(t, cc, recvd)

				if n := cancel.do(tr); n != 1 {
					t.Errorf("%s() = %d, want 1", cancel.name, n)
				}
				clientErr := make(chan error, 1)
				go func() {
					_, err := stream.Recv()
					clientErr <- err
				}()
				checkShuttingDown(t, "client Recv() after "+cancel.name, receive(t, clientErr, "the client's status"), errDrain)
				if end := receive(t, ended, "the handler's blocked Recv to return"); end.blockedErr == nil || end.blockedErr == io.EOF {
					t.Errorf("handler's Recv() = %v, want an error", end.blockedErr)
				}
				checkIdle(t, tr)
			})
		}
	}
}

// TestCancelEndsStreamBlockedInSend cancels a server stream whose handler is
// held in Send by flow control: its client reads nothing. The handler's
// Send must fail and the handler return; the client, once it reads, must
// find codes.Unavailable after the messages sent before.
//
// Only the server's own transport is tried: through ServeHTTP, grpc-go
// writes every frame, the status included, on the HTTP handler's goroutine,
// and that goroutine is the one blocked on the client, so only closing the
// connection ends such a stream (see the interceptors package doc).
func TestCancelEndsStreamBlockedInSend(t *testing.T) {
	tr := interceptors.NewTracker(interceptors.WithLongLived(outputMethod))
	sent, ended := make(chan int, 1024), make(chan blockedEnd, 1)
	srv := grpc.NewServer(tr.ServerOptions()...)
	testgrpc.RegisterTestServiceServer(srv, &streamService{output: func(stream testgrpc.TestService_StreamingOutputCallServer) error {
		msg := &testgrpc.StreamingOutputCallResponse{Payload: &testgrpc.Payload{Body: make([]byte, flowChunk)}}
		for total := 0; ; total += flowChunk {
			select {
			case sent <- total:
			default:
			}
			if err := stream.Send(msg); err != nil {
				ended <- blockedEnd{blockedErr: err}
				return err
			}
		}
	}})
	// A fixed window turns off grpc-go's window growth (BDP estimation), so
	// that flow control holds the handler.
	cc := serveBufconn(t, srv, grpc.WithInitialWindowSize(flowWindow), grpc.WithInitialConnWindowSize(flowWindow))
	stream, err := testgrpc.NewTestServiceClient(cc).StreamingOutputCall(testContext(t), &testgrpc.StreamingOutputCallRequest{})
	if err != nil {
		t.Fatalf("StreamingOutputCall() = %v", err)
	}
	// Once the handler has sent a window, flow control holds its next
	// Sends (grpc-go queues at most 64 KiB more). Cancel only once the
	// handler really waits in Send, so that the test shows what frees it.
	for receive(t, sent, "the handler's progress") < flowWindow {
	}
	waitBlockedInSend(t, "TestCancelEndsStreamBlockedInSend")

	if n := tr.CancelLongLived(errDrain); n != 1 {
		t.Errorf("CancelLongLived() = %d, want 1", n)
	}
	if end := receive(t, ended, "the handler's blocked Send to return"); end.blockedErr == nil {
		t.Errorf("handler's Send() = nil, want an error")
	}
	checkIdle(t, tr)
	r := recvAll(stream.Recv)
	if r.msgs == 0 {
		t.Errorf("client received no message, want those sent before the cancellation")
	}
	checkShuttingDown(t, "client Recv() after the messages", r.err, errDrain)
}

// waitBlockedInSend waits until a goroutine running a function of test is
// blocked in grpc-go's wait for stream write quota: a handler held in Send
// by flow control. It reads the goroutines' stacks until it finds one, for
// defaultTestTimeout at the most.
func waitBlockedInSend(t *testing.T, test string) {
	t.Helper()
	deadline := time.Now().Add(defaultTestTimeout)
	for servetest.Goroutines("(*writeQuota).get", "."+test+".") == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no handler of %s blocked in Send after %v", test, defaultTestTimeout)
		}
		runtime.Gosched()
		time.Sleep(time.Millisecond) // polls a condition; not synchronisation by time
	}
}

// TestStreamTimeoutEndsStalledUpload gives a client-streaming call a stream
// timeout; its client sends one message, then nothing, without closing its
// side, so the handler waits in Recv. The client must receive
// codes.DeadlineExceeded once the timeout passes, and the handler return.
func TestStreamTimeoutEndsStalledUpload(t *testing.T) {
	for _, tp := range transports {
		t.Run(tp.name, func(t *testing.T) {
			tr := interceptors.NewTracker(interceptors.WithStreamTimeout(streamTimeout))
			recvd, ended := make(chan struct{}, 1), make(chan blockedEnd, 1)
			srv := grpc.NewServer(tr.ServerOptions()...)
			testgrpc.RegisterTestServiceServer(srv, &streamService{input: func(stream testgrpc.TestService_StreamingInputCallServer) error {
				for {
					_, err := stream.Recv()
					if err == io.EOF {
						return stream.SendAndClose(&testgrpc.StreamingInputCallResponse{})
					}
					if err != nil {
						ended <- blockedEnd{blockedErr: err}
						return err
					}
					recvd <- struct{}{}
				}
			}})
			cc := tp.serve(t, srv)
			start := time.Now()
			stream, err := testgrpc.NewTestServiceClient(cc).StreamingInputCall(testContext(t))
			if err != nil {
				t.Fatalf("StreamingInputCall() = %v", err)
			}
			if err := stream.Send(&testgrpc.StreamingInputCallRequest{}); err != nil {
				t.Fatalf("Send() = %v", err)
			}
			receive(t, recvd, "the handler's first message")
			clientErr := make(chan error, 1)
			go func() { clientErr <- stream.RecvMsg(new(testgrpc.StreamingInputCallResponse)) }()
			err = receive(t, clientErr, "the client's status")
			took := time.Since(start)
			if status.Code(err) != codes.DeadlineExceeded {
				t.Errorf("client RecvMsg() = %v, want code %v", err, codes.DeadlineExceeded)
			}
			if took < streamTimeout || took > stalledWithin {
				t.Errorf("the stalled upload ended after %v, want between %v and %v", took, streamTimeout, stalledWithin)
			}
			if end := receive(t, ended, "the handler's blocked Recv to return"); end.blockedErr == nil {
				t.Errorf("handler's Recv() = nil, want an error")
			}
			checkIdle(t, tr)
		})
	}
}

// TestLongLivedNilAfterCancelIsUnavailable checks that a long-lived stream
// whose handler answers its cancellation by returning nil, "told to stop,
// so stop", still ends with codes.Unavailable: its client must resubscribe
// elsewhere, not take the subscription as complete. A finite stream that
// returns nil after the same cancellation is not given a status by its
// handler: the Tracker's comes first.
func TestLongLivedNilAfterCancelIsUnavailable(t *testing.T) {
	for _, tp := range transports {
		t.Run(tp.name, func(t *testing.T) {
			tr := interceptors.NewTracker(interceptors.WithLongLived(outputMethod))
			started := make(chan struct{}, 1)
			srv := grpc.NewServer(tr.ServerOptions()...)
			testgrpc.RegisterTestServiceServer(srv, &streamService{output: func(stream testgrpc.TestService_StreamingOutputCallServer) error {
				if err := stream.Send(&testgrpc.StreamingOutputCallResponse{}); err != nil {
					return err
				}
				started <- struct{}{}
				<-stream.Context().Done()
				return nil
			}})
			cc := tp.serve(t, srv)
			stream, err := testgrpc.NewTestServiceClient(cc).StreamingOutputCall(testContext(t), &testgrpc.StreamingOutputCallRequest{})
			if err != nil {
				t.Fatalf("StreamingOutputCall() = %v", err)
			}
			receive(t, started, "the handler to start")
			if n := tr.CancelLongLived(errDrain); n != 1 {
				t.Errorf("CancelLongLived() = %d, want 1", n)
			}
			r := recvAll(stream.Recv)
			if r.msgs != 1 {
				t.Errorf("client received %d messages, want 1", r.msgs)
			}
			checkShuttingDown(t, "the long-lived stream's status", r.err, errDrain)
			checkIdle(t, tr)
		})
	}
}

// TestLongLivedNilWithoutCancelIsOK checks the other side: a long-lived
// stream whose handler returns nil of its own accord, uncancelled, ends
// with codes.OK.
func TestLongLivedNilWithoutCancelIsOK(t *testing.T) {
	tr := interceptors.NewTracker(interceptors.WithLongLived(outputMethod))
	srv := grpc.NewServer(tr.ServerOptions()...)
	testgrpc.RegisterTestServiceServer(srv, &streamService{output: func(stream testgrpc.TestService_StreamingOutputCallServer) error {
		return stream.Send(&testgrpc.StreamingOutputCallResponse{})
	}})
	cc := serveBufconn(t, srv)
	stream, err := testgrpc.NewTestServiceClient(cc).StreamingOutputCall(testContext(t), &testgrpc.StreamingOutputCallRequest{})
	if err != nil {
		t.Fatalf("StreamingOutputCall() = %v", err)
	}
	if r := recvAll(stream.Recv); r.err != nil || r.msgs != 1 {
		t.Errorf("stream = %d messages, %v; want 1, OK", r.msgs, r.err)
	}
	checkIdle(t, tr)
}

// TestCancelledUnaryKeepsResult checks that the Tracker never ends a unary
// call early: one whose handler returns a result despite CancelAll keeps
// it.
func TestCancelledUnaryKeepsResult(t *testing.T) {
	tr := interceptors.NewTracker()
	started, release := make(chan struct{}, 1), make(chan struct{})
	e := startServer(t, func(ctx context.Context, _ string) error {
		started <- struct{}{}
		<-release
		return nil
	}, tr.ServerOptions()...)
	done := e.start(testContext(t), unaryMethod)
	receive(t, started, "the handler to start")
	if n := tr.CancelAll(errDrain); n != 1 {
		t.Errorf("CancelAll() = %d, want 1", n)
	}
	close(release)
	if r := receive(t, done, "the call's end"); r.err != nil {
		t.Errorf("cancelled unary call that returned a result = %v, want it", r.err)
	}
	checkIdle(t, tr)
}

// TestReflectionIsLongLived opens a reflection session, as grpcurl's shell
// and GUI clients keep one, on a server with a default Tracker:
// CancelLongLived ends it at once with codes.Unavailable, and
// RejectLongLived refuses new ones, for both versions of the service.
func TestReflectionIsLongLived(t *testing.T) {
	tr := interceptors.NewTracker()
	srv := grpc.NewServer(tr.ServerOptions()...)
	reflection.Register(srv)
	cc := serveBufconn(t, srv)

	v1, err := reflectionv1.NewServerReflectionClient(cc).ServerReflectionInfo(testContext(t))
	if err != nil {
		t.Fatalf("v1 ServerReflectionInfo() = %v", err)
	}
	v1alpha, err := reflectionv1alpha.NewServerReflectionClient(cc).ServerReflectionInfo(testContext(t))
	if err != nil {
		t.Fatalf("v1alpha ServerReflectionInfo() = %v", err)
	}
	if err := v1.Send(&reflectionv1.ServerReflectionRequest{MessageRequest: &reflectionv1.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatalf("v1 Send() = %v", err)
	}
	if _, err := v1.Recv(); err != nil {
		t.Fatalf("v1 Recv() = %v, want the list of services", err)
	}
	//lint:ignore SA1019 v1alpha is deprecated, but clients still use it, and a drain must end its streams too
	if err := v1alpha.Send(&reflectionv1alpha.ServerReflectionRequest{MessageRequest: &reflectionv1alpha.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatalf("v1alpha Send() = %v", err)
	}
	if _, err := v1alpha.Recv(); err != nil {
		t.Fatalf("v1alpha Recv() = %v, want the list of services", err)
	}

	tr.RejectLongLived(errDrain)
	if n := tr.CancelLongLived(errDrain); n != 2 {
		t.Errorf("CancelLongLived() = %d, want the 2 idle reflection sessions", n)
	}
	_, err = v1.Recv()
	checkShuttingDown(t, "idle v1 reflection session after CancelLongLived", err, errDrain)
	_, err = v1alpha.Recv()
	checkShuttingDown(t, "idle v1alpha reflection session after CancelLongLived", err, errDrain)
	checkIdle(t, tr)

	again, err := reflectionv1.NewServerReflectionClient(cc).ServerReflectionInfo(testContext(t))
	if err == nil {
		_, err = again.Recv()
	}
	checkShuttingDown(t, "new reflection session after RejectLongLived", err, errDrain)
}

// TestFiniteStreamNilAfterCancelIsOK checks that a finite stream whose
// handler, busy elsewhere when it was cancelled, then returns nil without
// touching the stream again keeps its result: codes.OK, after the messages
// it sent before.
func TestFiniteStreamNilAfterCancelIsOK(t *testing.T) {
	tr := interceptors.NewTracker()
	started := make(chan struct{}, 1)
	srv := grpc.NewServer(tr.ServerOptions()...)
	testgrpc.RegisterTestServiceServer(srv, &streamService{output: func(stream testgrpc.TestService_StreamingOutputCallServer) error {
		if err := stream.Send(&testgrpc.StreamingOutputCallResponse{}); err != nil {
			return err
		}
		started <- struct{}{}
		<-stream.Context().Done()
		return nil
	}})
	cc := serveBufconn(t, srv)
	stream, err := testgrpc.NewTestServiceClient(cc).StreamingOutputCall(testContext(t), &testgrpc.StreamingOutputCallRequest{})
	if err != nil {
		t.Fatalf("StreamingOutputCall() = %v", err)
	}
	receive(t, started, "the handler to start")
	if n := tr.CancelAll(errDrain); n != 1 {
		t.Errorf("CancelAll() = %d, want 1", n)
	}
	if r := recvAll(stream.Recv); r.err != nil || r.msgs != 1 {
		t.Errorf("stream = %d messages, %v; want 1, OK", r.msgs, r.err)
	}
	checkIdle(t, tr)
}

// endStats is a server stats.Handler that reports the error with which
// each RPC ended, as otelgrpc and binary logs see it.
type endStats struct{ ends chan error }

func (h *endStats) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (h *endStats) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}
func (h *endStats) HandleConn(context.Context, stats.ConnStats) {}
func (h *endStats) HandleRPC(_ context.Context, s stats.RPCStats) {
	if end, ok := s.(*stats.End); ok {
		h.ends <- end.Error
	}
}

// TestEndedStreamReportsItsStatus cancels a finite stream whose handler is
// blocked in Send, then swallows Send's error and returns nil. The Tracker
// ended the stream with codes.Unavailable: the client, and the server's
// stats handler, must both see that status, on both transports.
func TestEndedStreamReportsItsStatus(t *testing.T) {
	for _, tp := range transports {
		t.Run(tp.name, func(t *testing.T) {
			tr := interceptors.NewTracker()
			recvd := make(chan struct{}, 1)
			sh := &endStats{ends: make(chan error, 1)}
			srv := grpc.NewServer(append(tr.ServerOptions(), grpc.StatsHandler(sh))...)
			testgrpc.RegisterTestServiceServer(srv, &streamService{duplex: func(stream testgrpc.TestService_FullDuplexCallServer) error {
				if _, err := stream.Recv(); err != nil {
					return err
				}
				recvd <- struct{}{}
				stream.Recv() // blocks until the stream is ended
				return nil    // "told to stop, so stop"
			}})
			cc := tp.serve(t, srv)
			stream := openDuplex(t, cc, recvd)
			if n := tr.CancelAll(errDrain); n != 1 {
				t.Errorf("CancelAll() = %d, want 1", n)
			}
			_, err := stream.Recv()
			checkShuttingDown(t, "client Recv() after CancelAll", err, errDrain)
			checkShuttingDown(t, "the status the server's stats handler saw", receive(t, sh.ends, "the server's End stats"), errDrain)
			checkIdle(t, tr)
		})
	}
}
