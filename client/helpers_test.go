package client_test

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/drainkit/drainkit/examples/demopb"
	"github.com/drainkit/drainkit/interceptors"
)

const (
	// defaultTestTimeout bounds every wait for something that must happen.
	defaultTestTimeout = 10 * time.Second
	// tick is the time between two messages of the test Watch.
	tick = 10 * time.Millisecond
)

const (
	echoMethod   = demopb.Demo_Echo_FullMethodName
	sleepMethod  = demopb.Demo_Sleep_FullMethodName
	appendMethod = demopb.Demo_Append_FullMethodName
	watchMethod  = demopb.Demo_Watch_FullMethodName
	chatMethod   = demopb.Demo_Chat_FullMethodName
)

// service is the Demo service of a test backend. It counts the handlers
// that ran, by method, and keeps the values appended.
type service struct {
	demopb.UnimplementedDemoServer
	name string

	// hold makes Sleep wait for its context, whatever its duration, and
	// Watch send nothing; started receives the method of each held call.
	hold    bool
	started chan string
	// failAfter, if above 0, makes Watch fail with codes.Unavailable
	// "database unreachable" after that many messages; watchStarts gets
	// the time each Watch handler starts.
	failAfter   int
	watchStarts chan time.Time

	mu      sync.Mutex
	runs    map[string]int // guarded by mu
	appends []string       // guarded by mu
	nextID  atomic.Int64
}

func (s *service) ran(method string) {
	s.mu.Lock()
	s.runs[method]++
	s.mu.Unlock()
}

// count returns how many handlers of method ran.
func (s *service) count(method string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.runs[method]
}

func (s *service) appended() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.appends...)
}

func (s *service) holding(ctx context.Context, method string) error {
	s.started <- method
	<-ctx.Done()
	return status.FromContextError(ctx.Err()).Err()
}

func (s *service) Echo(_ context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	s.ran(echoMethod)
	return wrapperspb.String(in.GetValue()), nil
}

func (s *service) Sleep(ctx context.Context, in *durationpb.Duration) (*emptypb.Empty, error) {
	s.ran(sleepMethod)
	if s.hold {
		return nil, s.holding(ctx, sleepMethod)
	}
	t := time.NewTimer(in.AsDuration())
	defer t.Stop()
	select {
	case <-t.C:
		return &emptypb.Empty{}, nil
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

func (s *service) Append(_ context.Context, in *wrapperspb.StringValue) (*wrapperspb.Int64Value, error) {
	s.ran(appendMethod)
	s.mu.Lock()
	s.appends = append(s.appends, in.GetValue())
	s.mu.Unlock()
	return wrapperspb.Int64(s.nextID.Add(1)), nil
}

// Watch sends ticks tick apart: from the start of the call, or those after
// in.After, as the demo's Watch does with its own interval.
func (s *service) Watch(in *demopb.WatchRequest, stream grpc.ServerStreamingServer[timestamppb.Timestamp]) error {
	s.ran(watchMethod)
	if s.watchStarts != nil {
		s.watchStarts <- time.Now()
	}
	ctx := stream.Context()
	if s.hold {
		return s.holding(ctx, watchMethod)
	}
	next := time.Now().Add(tick)
	if in.GetAfter() != nil {
		next = in.GetAfter().AsTime().Add(tick)
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	for sent := 0; ; next = next.Add(tick) {
		if s.failAfter > 0 && sent == s.failAfter {
			return status.Error(codes.Unavailable, "database unreachable")
		}
		sent++
		if wait := time.Until(next); wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return status.FromContextError(ctx.Err()).Err()
			case <-timer.C:
			}
		}
		if err := stream.Send(timestamppb.New(next)); err != nil {
			return err
		}
	}
}

func (s *service) Chat(stream grpc.BidiStreamingServer[wrapperspb.StringValue, wrapperspb.StringValue]) error {
	s.ran(chatMethod)
	if s.hold {
		return s.holding(stream.Context(), chatMethod)
	}
	for {
		in, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := stream.Send(in); err != nil {
			return err
		}
	}
}

// A backend is a grpc.Server with a Tracker, serving a service over bufconn
// or, where the test needs connections with addresses of their own, TCP.
type backend struct {
	name    string
	srv     *grpc.Server
	tracker *interceptors.Tracker
	lis     dialListener
	svc     *service
}

// A dialListener is a listener that its clients dial through.
type dialListener interface {
	net.Listener
	DialContext(ctx context.Context) (net.Conn, error)
}

// tcpListener listens on loopback.
type tcpListener struct{ net.Listener }

func listenTCP(t *testing.T) tcpListener {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("net.Listen() = %v", err)
	}
	return tcpListener{lis}
}

func (l tcpListener) DialContext(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "tcp", l.Addr().String())
}

// startBackend starts a backend named name, stopped at the end of the test.
// hold is service.hold; opts are added after the Tracker's.
func startBackend(t *testing.T, name string, hold bool, opts ...grpc.ServerOption) *backend {
	t.Helper()
	return serveBackend(t, name, interceptors.NewTracker(interceptors.WithLongLived(watchMethod, chatMethod)), hold, opts...)
}

// serveBackend starts a backend named name with the Tracker tr, stopped at
// the end of the test. hold is service.hold; opts are added after tr's.
func serveBackend(t *testing.T, name string, tr *interceptors.Tracker, hold bool, opts ...grpc.ServerOption) *backend {
	t.Helper()
	return serveBackendOn(t, bufconn.Listen(1<<20), name, tr, hold, opts...)
}

// serveBackendOn is serveBackend on lis, which it closes.
func serveBackendOn(t *testing.T, lis dialListener, name string, tr *interceptors.Tracker, hold bool, opts ...grpc.ServerOption) *backend {
	t.Helper()
	b := &backend{
		name:    name,
		tracker: tr,
		lis:     lis,
		svc:     &service{name: name, hold: hold, started: make(chan string, 16), runs: map[string]int{}},
		// The test's interceptors come first, outside the Tracker: a
		// refusal they make stands for one made before any handler ran,
		// which the Tracker would unmark if a handler returned it.
		srv: grpc.NewServer(append(opts, tr.ServerOptions()...)...),
	}
	demopb.RegisterDemoServer(b.srv, b.svc)
	served := make(chan error, 1)
	go func() { served <- b.srv.Serve(b.lis) }()
	t.Cleanup(func() {
		b.srv.Stop()
		<-served
	})
	return b
}

// dialBackends returns a ClientConn that balances round-robin over the
// backends, with opts (the options under test) after the test's own. It is
// closed at the end of the test.
func dialBackends(t *testing.T, backends []*backend, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	var addrs []resolver.Address
	for _, b := range backends {
		addrs = append(addrs, resolver.Address{Addr: b.name})
	}
	r := manual.NewBuilderWithScheme("backends")
	r.InitialState(resolver.State{Addresses: addrs})
	return dialListeners(t, r, backends, opts...)
}

// dialListeners returns a ClientConn to the backends named by r's
// addresses, balanced round-robin, with opts (the options under test)
// after the test's own; it is closed at the end of the test.
func dialListeners(t *testing.T, r *manual.Resolver, backends []*backend, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	byAddr := map[string]*backend{}
	for _, b := range backends {
		byAddr[b.name] = b
	}
	cc, err := grpc.NewClient(r.Scheme()+":///test", append([]grpc.DialOption{
		grpc.WithResolvers(r),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig": [{"round_robin": {}}]}`),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			b, ok := byAddr[addr]
			if !ok {
				return nil, errors.New("no backend " + addr)
			}
			return b.lis.DialContext(ctx)
		}),
	}, opts...)...)
	if err != nil {
		t.Fatalf("grpc.NewClient() = %v", err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// waitAllServe calls Echo until every backend has answered one, so that
// round_robin alternates between them all.
func waitAllServe(t *testing.T, c demopb.DemoClient, backends ...*backend) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	for {
		all := true
		for _, b := range backends {
			all = all && b.svc.count(echoMethod) > 0
		}
		if all {
			return
		}
		if _, err := c.Echo(ctx, wrapperspb.String("ready?"), grpc.WaitForReady(true)); err != nil {
			t.Fatalf("Echo() = %v while waiting for every backend to serve", err)
		}
	}
}

// receive returns the next value of c, or fails the test after
// defaultTestTimeout.
func receive[T any](t *testing.T, c <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(defaultTestTimeout):
		t.Fatalf("no %s after %v", what, defaultTestTimeout)
		panic("unreachable")
	}
}
