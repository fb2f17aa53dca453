package drain_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/drainkit/drainkit/drain"
	"github.com/drainkit/drainkit/interceptors"
)

// blockedStreams is a TestService whose long-lived streams block where
// users' handlers do: FullDuplexCall in Recv, on a client that sends
// nothing, and StreamingOutputCall in Send, on a client that reads
// nothing. Neither looks at its context. Each handler sends on entered as
// it begins to block, and its result on returned.
type blockedStreams struct {
	testgrpc.UnimplementedTestServiceServer
	entered  chan string
	returned chan error
}

func (s *blockedStreams) FullDuplexCall(stream testgrpc.TestService_FullDuplexCallServer) error {
	s.entered <- "FullDuplexCall"
	_, err := stream.Recv()
	s.returned <- err
	return err
}

func (s *blockedStreams) StreamingOutputCall(_ *testgrpc.StreamingOutputCallRequest, stream testgrpc.TestService_StreamingOutputCallServer) error {
	msg := &testgrpc.StreamingOutputCallResponse{Payload: &testgrpc.Payload{Body: make([]byte, 64<<10)}}
	if err := stream.Send(msg); err != nil {
		s.returned <- err
		return err
	}
	// The client reads nothing: within a window or two, Send blocks on
	// flow control.
	s.entered <- "StreamingOutputCall"
	for {
		if err := stream.Send(msg); err != nil {
			s.returned <- err
			return err
		}
	}
}

// TestDrainEndsStreamsBlockedInRecvAndSend drains, with a grace period
// and a cancel grace of an hour, a server whose long-lived streams block
// in Recv and in Send and never look at their context: the Graceful phase
// must wake both handlers, before the client of the blocked Send reads
// anything, their clients must read codes.Unavailable, and the drain must
// be clean and prompt, not wait for the Force phase's Stop to free them.
// (The client reads once the handlers have returned: grpc writes the
// status of a stream after the messages queued before it, which wait for
// a client that reads.)
func TestDrainEndsStreamsBlockedInRecvAndSend(t *testing.T) {
	svc := &blockedStreams{entered: make(chan string, 2), returned: make(chan error, 2)}
	tr := interceptors.NewTracker(interceptors.WithLongLived(
		"/grpc.testing.TestService/FullDuplexCall", "/grpc.testing.TestService/StreamingOutputCall"))
	srv := grpc.NewServer(tr.ServerOptions()...)
	testgrpc.RegisterTestServiceServer(srv, svc)
	client := testgrpc.NewTestServiceClient(serveBuf(t, srv))
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()

	bidi, err := client.FullDuplexCall(ctx)
	if err != nil {
		t.Fatalf("FullDuplexCall() = %v", err)
	}
	receive(t, svc.entered, "the FullDuplexCall handler to block in Recv")
	out, err := client.StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{})
	if err != nil {
		t.Fatalf("StreamingOutputCall() = %v", err)
	}
	receive(t, svc.entered, "the StreamingOutputCall handler to send")

	d := drain.New(srv, tr, drain.WithGracePeriod(time.Hour), drain.WithCancelGrace(time.Hour),
		drain.WithForceWait(defaultTestShortTimeout))
	done := startDrain(ctx, d)
	for range 2 {
		if err := receive(t, svc.returned, "a blocked handler to return"); err == nil {
			t.Errorf("blocked handler's Recv or Send = nil, want an error")
		}
	}
	if _, err := bidi.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("FullDuplexCall Recv() = %v, want code Unavailable", err)
	}
	for {
		// The messages sent before the end come first.
		if _, err := out.Recv(); err != nil {
			if status.Code(err) != codes.Unavailable {
				t.Errorf("StreamingOutputCall Recv() = %v, want code Unavailable", err)
			}
			break
		}
	}
	res := receive(t, done, "Drain to return")
	if res.err != nil || res.report.Forced || res.report.Cancelled != 2 {
		t.Errorf("Drain() = forced %t, cancelled %d, %v; want clean, 2 cancelled, nil", res.report.Forced, res.report.Cancelled, res.err)
	}
	if limit := 5 * time.Second; res.report.Duration > limit {
		t.Errorf("Drain() took %v, want well under %v: the streams end at Graceful", res.report.Duration, limit)
	}
}
