package interceptors_test

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"

	"github.com/drainkit/drainkit/interceptors"
	"github.com/drainkit/drainkit/internal/servetest"
)

// waitBlockedInRecv waits until a goroutine running fn (a function named
// as in a stack trace) is blocked in grpc-go's wait for a message: a
// handler idle in Recv. It reads the goroutines' stacks until it finds
// one, for statusTestTimeout at the most.
func waitBlockedInRecv(t *testing.T, fn string) {
	t.Helper()
	waitFor(t, fn+" blocked in Recv", func() bool { return countBlockedInRecv(fn) > 0 })
}

// TestCancelCauseOfHandlerBlockedInRecv cancels a stream whose handler
// waits in Recv: Recv fails, and the handler's context must be cancelled
// with the cause given to CancelAll or CancelLongLived, as the doc of
// CancelAll promises, not with the context.Canceled of grpc's stream,
// which ends as the Tracker writes its status.
func TestCancelCauseOfHandlerBlockedInRecv(t *testing.T) {
	const duplex = "/grpc.testing.TestService/FullDuplexCall"
	errCause := errors.New("maintenance")
	for _, cancel := range []struct {
		name string
		do   func(*interceptors.Tracker) int
	}{
		{name: "CancelAll", do: func(tr *interceptors.Tracker) int { return tr.CancelAll(errCause) }},
		{name: "CancelLongLived", do: func(tr *interceptors.Tracker) int { return tr.CancelLongLived(errCause) }},
	} {
		for _, serveHTTP := range []bool{false, true} {
			name := cancel.name + "/listener"
			if serveHTTP {
				name = cancel.name + "/ServeHTTP"
			}
			t.Run(name, func(t *testing.T) {
				tr := interceptors.NewTracker(interceptors.WithLongLived(duplex))
				causes := make(chan error, 1)
				srv := grpc.NewServer(tr.ServerOptions()...)
				testgrpc.RegisterTestServiceServer(srv, &causeService{causes: causes})
				client := testgrpc.NewTestServiceClient(servetest.Serve(t, srv, serveHTTP))
				ctx, cancelCtx := context.WithTimeout(context.Background(), statusTestTimeout)
				defer cancelCtx()
				stream, err := client.FullDuplexCall(ctx)
				if err != nil {
					t.Fatalf("FullDuplexCall() = %v", err)
				}
				waitBlockedInRecv(t, ".(*causeService).FullDuplexCall(")

				if n := cancel.do(tr); n != 1 {
					t.Errorf("%s() = %d, want 1", cancel.name, n)
				}
				select {
				case cause := <-causes:
					if cause != errCause {
						t.Errorf("context.Cause() of a handler woken in Recv by %s = %v, want %v", cancel.name, cause, errCause)
					}
				case <-time.After(statusTestTimeout):
					t.Fatalf("handler still in Recv %v after %s", statusTestTimeout, cancel.name)
				}
				if _, err := stream.Recv(); err == nil {
					t.Errorf("client Recv() after %s = nil, want an error", cancel.name)
				}
				waitIdle(t, tr, "the handler to return")
			})
		}
	}
}

// causeService's FullDuplexCall waits in Recv and reports its context's
// cause once Recv fails.
type causeService struct {
	testgrpc.UnimplementedTestServiceServer
	causes chan<- error
}

func (s *causeService) FullDuplexCall(stream testgrpc.TestService_FullDuplexCallServer) error {
	_, err := stream.Recv()
	// Recv has failed: the handler's context must have ended, as the
	// Tracker cancels it before it frees the stream.
	<-stream.Context().Done()
	s.causes <- context.Cause(stream.Context())
	return err
}

// trailerOrder is a server stats.Handler that records the order in which
// grpc writes the trailers of streams, each named by its client's
// orderKey metadata.
type trailerOrder struct {
	mu    sync.Mutex
	names []string
}

type orderNameKey struct{}

const orderKey = "x-order"

func (h *trailerOrder) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context {
	return context.WithValue(ctx, orderNameKey{}, new(atomic.Value))
}
func (h *trailerOrder) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (h *trailerOrder) HandleConn(context.Context, stats.ConnStats)                       {}
func (h *trailerOrder) HandleRPC(ctx context.Context, s stats.RPCStats) {
	name := ctx.Value(orderNameKey{}).(*atomic.Value)
	switch s := s.(type) {
	case *stats.InHeader:
		if v := s.Header.Get(orderKey); len(v) == 1 {
			name.Store(v[0])
		}
	case *stats.OutTrailer:
		h.mu.Lock()
		h.names = append(h.names, name.Load().(string))
		h.mu.Unlock()
	}
}

// TestCancelEndsStreamsInTheOrderTheyBegan opens streams one after the
// other on one connection, each waiting in Recv, and cancels them: the
// Tracker must end them in the order they began, as the package
// documentation says (see "Cost"), which grpc's stats handler sees as the
// order of their trailers: the Tracker writes each status as it visits
// the stream.
func TestCancelEndsStreamsInTheOrderTheyBegan(t *testing.T) {
	const duplex = "/grpc.testing.TestService/FullDuplexCall"
	const streams = 5
	tr := interceptors.NewTracker(interceptors.WithLongLived(duplex))
	causes := make(chan error, streams)
	order := &trailerOrder{}
	srv := grpc.NewServer(append(tr.ServerOptions(), grpc.StatsHandler(order))...)
	testgrpc.RegisterTestServiceServer(srv, &causeService{causes: causes})
	client := testgrpc.NewTestServiceClient(servetest.Serve(t, srv, false))
	ctx, cancel := context.WithTimeout(context.Background(), statusTestTimeout)
	defer cancel()
	var want []string
	for i := range streams {
		name := strconv.Itoa(i)
		want = append(want, name)
		if _, err := client.FullDuplexCall(metadata.AppendToOutgoingContext(ctx, orderKey, name)); err != nil {
			t.Fatalf("FullDuplexCall() = %v", err)
		}
		waitFor(t, "stream "+name+" to begin", func() bool { return tr.InFlight() == i+1 })
	}
	waitFor(t, "every handler in Recv", func() bool { return countBlockedInRecv(".(*causeService).FullDuplexCall(") == streams })
	if n := tr.CancelLongLived(nil); n != streams {
		t.Fatalf("CancelLongLived() = %d, want %d", n, streams)
	}
	for range streams {
		<-causes
	}
	waitIdle(t, tr, "every handler to return")
	order.mu.Lock()
	got := slices.Clone(order.names)
	order.mu.Unlock()
	if !slices.Equal(got, want) {
		t.Errorf("streams ended in the order %v, want %v, the order they began", got, want)
	}
}

// countBlockedInRecv counts the goroutines running fn that are blocked
// in grpc-go's wait for a message.
func countBlockedInRecv(fn string) int {
	return servetest.Goroutines("(*recvBufferReader).read", fn)
}

// holdingTrailer is a server stats.Handler that holds the first trailer
// grpc writes for a stream of method until release is closed, telling held
// when it does: the Tracker writes the status of a stream waiting in Recv
// as it cancels it, and the cancellation waits meanwhile.
type holdingTrailer struct {
	method  string
	once    sync.Once
	held    chan struct{}
	release chan struct{}
}

type holdMethodKey struct{}

func (h *holdingTrailer) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	return context.WithValue(ctx, holdMethodKey{}, info.FullMethodName)
}
func (h *holdingTrailer) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}
func (h *holdingTrailer) HandleConn(context.Context, stats.ConnStats) {}
func (h *holdingTrailer) HandleRPC(ctx context.Context, s stats.RPCStats) {
	if _, ok := s.(*stats.OutTrailer); ok && ctx.Value(holdMethodKey{}) == h.method {
		h.once.Do(func() {
			close(h.held)
			<-h.release
		})
	}
}

// unaryWaitService's UnaryCall reports its context on started and returns
// once it ends.
type unaryWaitService struct {
	causeService
	started chan<- context.Context
}

func (s *unaryWaitService) UnaryCall(ctx context.Context, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	s.started <- ctx
	<-ctx.Done()
	return nil, ctx.Err()
}

// TestCancelAllDuringAnotherCancellation calls CancelAll while another
// CancelAll is still at work, held as it ends a stream that waits in
// Recv, before or after the other calls it has marked (unary calls begun
// before and after the stream, on the same connection). When the second
// CancelAll returns, the context of every handler running must be
// cancelled, those marked by the first included, with the first's cause:
// CancelAll's doc leaves out only handlers whose context has ended.
func TestCancelAllDuringAnotherCancellation(t *testing.T) {
	errFirst, errSecond := errors.New("first"), errors.New("second")
	tr := interceptors.NewTracker()
	causes, started := make(chan error, 1), make(chan context.Context, 1)
	h := &holdingTrailer{method: "/grpc.testing.TestService/FullDuplexCall", held: make(chan struct{}), release: make(chan struct{})}
	srv := grpc.NewServer(append(tr.ServerOptions(), grpc.StatsHandler(h))...)
	testgrpc.RegisterTestServiceServer(srv, &unaryWaitService{causeService: causeService{causes: causes}, started: started})
	client := testgrpc.NewTestServiceClient(servetest.Serve(t, srv, false))
	ctx, cancel := context.WithTimeout(context.Background(), statusTestTimeout)
	defer cancel()

	unaryDone := make(chan error, 2)
	var unaryCtxs []context.Context
	unary := func() {
		go func() {
			_, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{})
			unaryDone <- err
		}()
		select {
		case hctx := <-started:
			unaryCtxs = append(unaryCtxs, hctx)
		case <-ctx.Done():
			t.Fatalf("unary handler not started after %v", statusTestTimeout)
		}
	}
	unary()
	if _, err := client.FullDuplexCall(ctx); err != nil {
		t.Fatalf("FullDuplexCall() = %v", err)
	}
	waitBlockedInRecv(t, ".(*causeService).FullDuplexCall(")
	unary()

	first := make(chan int, 1)
	go func() { first <- tr.CancelAll(errFirst) }()
	select {
	case <-h.held:
	case <-ctx.Done():
		t.Fatalf("the stream's status not written after %v", statusTestTimeout)
	}
	if n := tr.CancelAll(errSecond); n != 0 {
		t.Errorf("CancelAll() during another = %d, want 0: the other counts the calls", n)
	}
	for i, hctx := range unaryCtxs {
		if hctx.Err() == nil {
			t.Errorf("context of unary handler %d, once the second CancelAll() has returned: not cancelled", i)
		}
	}
	close(h.release)
	if n := <-first; n != 3 {
		t.Errorf("first CancelAll() = %d, want 3", n)
	}
	for i, hctx := range unaryCtxs {
		if cause := context.Cause(hctx); cause != errFirst {
			t.Errorf("context.Cause() of unary handler %d = %v, want the first cancellation's %v", i, cause, errFirst)
		}
	}
	if cause := <-causes; cause != errFirst {
		t.Errorf("context.Cause() of the stream's handler = %v, want %v", cause, errFirst)
	}
	<-unaryDone
	<-unaryDone
	waitIdle(t, tr, "every handler to return")
}

// windowService's handlers wait until their context ends or ret is
// closed, report on ended whether their context had ended, and return:
// UnaryCall a response, StreamingOutputCall nil. FullDuplexCall is
// causeService's.
type windowService struct {
	causeService
	started chan<- string
	ret     <-chan struct{}
	ended   chan<- bool
}

func (s *windowService) wait(ctx context.Context, name string) {
	s.started <- name
	select {
	case <-ctx.Done():
	case <-s.ret:
	}
	s.ended <- ctx.Err() != nil
}

func (s *windowService) UnaryCall(ctx context.Context, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	s.wait(ctx, "unary")
	return &testgrpc.SimpleResponse{}, nil
}

func (s *windowService) StreamingOutputCall(_ *testgrpc.StreamingOutputCallRequest, stream testgrpc.TestService_StreamingOutputCallServer) error {
	s.wait(stream.Context(), "long-lived")
	return nil
}

// TestCallsReturningAsTheyAreCancelled holds a CancelAll as it ends a
// stream waiting in Recv, the first it visits, while the calls begun after
// it on the connection are marked cancelled but their contexts not yet
// cancelled; their handlers return meanwhile, as if just before their
// cancellation: a unary call with a response, a long-lived stream with
// nil. The unary call must keep its response, as CancelAll's doc says of
// a handler that returns a result; the long-lived stream must end with
// the cancellation's codes.Unavailable, never codes.OK, as a long-lived
// stream that the Tracker cancelled never ends by itself.
func TestCallsReturningAsTheyAreCancelled(t *testing.T) {
	const (
		duplex = "/grpc.testing.TestService/FullDuplexCall"
		output = "/grpc.testing.TestService/StreamingOutputCall"
	)
	errCause := errors.New("maintenance")
	tr := interceptors.NewTracker(interceptors.WithLongLived(duplex, output))
	causes, started, ended := make(chan error, 1), make(chan string, 2), make(chan bool, 2)
	ret := make(chan struct{})
	h := &holdingTrailer{method: duplex, held: make(chan struct{}), release: make(chan struct{})}
	srv := grpc.NewServer(append(tr.ServerOptions(), grpc.StatsHandler(h))...)
	testgrpc.RegisterTestServiceServer(srv, &windowService{causeService: causeService{causes: causes}, started: started, ret: ret, ended: ended})
	client := testgrpc.NewTestServiceClient(servetest.Serve(t, srv, false))
	ctx, cancel := context.WithTimeout(context.Background(), statusTestTimeout)
	defer cancel()

	if _, err := client.FullDuplexCall(ctx); err != nil {
		t.Fatalf("FullDuplexCall() = %v", err)
	}
	waitBlockedInRecv(t, ".(*causeService).FullDuplexCall(")
	unaryErr := make(chan error, 1)
	go func() {
		_, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{})
		unaryErr <- err
	}()
	receiveString(t, started)
	stream, err := client.StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{})
	if err != nil {
		t.Fatalf("StreamingOutputCall() = %v", err)
	}
	receiveString(t, started)

	cancelled := make(chan int, 1)
	go func() { cancelled <- tr.CancelAll(errCause) }()
	select {
	case <-h.held:
	case <-ctx.Done():
		t.Fatalf("the stream's status not written after %v", statusTestTimeout)
	}
	close(ret)
	for range 2 {
		if <-ended {
			// The Tracker cancelled it before it returned: the window
			// was not reached.
			t.Fatalf("a handler's context was cancelled while the cancellation was held")
		}
	}
	if err := <-unaryErr; err != nil {
		t.Errorf("UnaryCall() returning a response as it was cancelled = %v, want its response", err)
	}
	_, err = stream.Recv()
	checkCancelled(t, "long-lived stream returning nil as it was cancelled", err, errCause)
	close(h.release)
	if n := <-cancelled; n != 3 {
		t.Errorf("CancelAll() = %d, want 3", n)
	}
	<-causes
	waitIdle(t, tr, "every handler to return")
}

func receiveString(t *testing.T, ch <-chan string) string {
	t.Helper()
	select {
	case s := <-ch:
		return s
	case <-time.After(statusTestTimeout):
		t.Fatalf("no handler started after %v", statusTestTimeout)
		return ""
	}
}

// checkCancelled fails unless err is the status of a call cancelled by
// the Tracker with cause: codes.Unavailable, cause's text, and drainkit's
// ErrorInfo saying the handler was cancelled.
func checkCancelled(t *testing.T, what string, err error, cause error) {
	t.Helper()
	s := status.Convert(err)
	handler := ""
	for _, d := range s.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == interceptors.ErrorInfoDomain {
			handler = info.GetMetadata()[interceptors.MetadataHandler]
		}
	}
	if s.Code() != codes.Unavailable || !strings.Contains(s.Message(), cause.Error()) || handler != interceptors.HandlerCancelled {
		t.Errorf("%s: %v (handler %q), want codes.Unavailable with %q and handler %q", what, err, handler, cause, interceptors.HandlerCancelled)
	}
}
