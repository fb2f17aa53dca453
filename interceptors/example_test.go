package interceptors_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"time"

	grpcmw "github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/drainkit/drainkit/interceptors"
)

// This example installs a Tracker with the interceptors of
// go-grpc-middleware, in the recommended order.
//
// The Tracker comes first, so that it refuses calls before any other work
// and sees the status each call really ends with. It tracks every call,
// health and reflection included: a health Watch is a long-lived stream that
// must be cancelled when the server drains, or it would hold the drain until
// its grace period ends.
//
// Other interceptors may leave out the calls that tell nothing, such as the
// health checks a load balancer makes every few seconds: here selector keeps
// them out of the logs. Recovery comes last, next to the handlers, so that a
// panic reaches the logs as a codes.Internal error.
func Example() {
	tracker := interceptors.NewTracker(
		interceptors.WithDefaultTimeout(30*time.Second),
		interceptors.WithMaxTimeout(time.Minute),
	)

	// notProbe matches every call but health checks and reflection.
	notProbe := selector.MatchFunc(func(_ context.Context, c grpcmw.CallMeta) bool {
		m := c.FullMethod()
		return !strings.HasPrefix(m, "/grpc.health.v1.Health/") && !strings.HasPrefix(m, "/grpc.reflection.")
	})
	logger, logOpt := exampleLogger(), logging.WithLogOnEvents(logging.FinishCall)
	panicToStatus := recovery.WithRecoveryHandler(func(p any) error {
		return status.Errorf(codes.Internal, "panic: %v", p)
	})

	// The Tracker's options first: its interceptors are then the outermost.
	srv := grpc.NewServer(append(tracker.ServerOptions(),
		grpc.ChainUnaryInterceptor(
			selector.UnaryServerInterceptor(logging.UnaryServerInterceptor(logger, logOpt), notProbe),
			recovery.UnaryServerInterceptor(panicToStatus),
		),
		grpc.ChainStreamInterceptor(
			selector.StreamServerInterceptor(logging.StreamServerInterceptor(logger, logOpt), notProbe),
			recovery.StreamServerInterceptor(panicToStatus),
		),
	)...)
	testgrpc.RegisterTestServiceServer(srv, &exampleService{})
	healthgrpc.RegisterHealthServer(srv, health.NewServer())
	reflection.Register(srv)
	cc, stop := serveExample(srv)
	defer stop()

	ctx := context.Background()
	client := testgrpc.NewTestServiceClient(cc)
	if _, err := healthgrpc.NewHealthClient(cc).Check(ctx, &healthgrpc.HealthCheckRequest{}); err != nil {
		fmt.Println("Check:", err)
	}
	if _, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{}); err != nil {
		fmt.Println("UnaryCall:", err)
	}
	_, err := client.EmptyCall(ctx, &testgrpc.Empty{})
	fmt.Println("EmptyCall:", status.Code(err))
	fmt.Println("in flight:", tracker.InFlight())
	// Output:
	// finished call grpc.testing.TestService/UnaryCall OK
	// finished call grpc.testing.TestService/EmptyCall Internal
	// EmptyCall: Internal
	// in flight: 0
}

// This example drains a server by hand: it refuses new calls, cancels the
// running ones and waits for their handlers to return. The drain package
// does this, and more, for a real server.
func ExampleTracker_CancelAll() {
	tracker := interceptors.NewTracker()
	started := make(chan struct{}, 1)
	srv := grpc.NewServer(tracker.ServerOptions()...)
	testgrpc.RegisterTestServiceServer(srv, &exampleService{started: started})
	cc, stop := serveExample(srv)
	defer stop()
	client := testgrpc.NewTestServiceClient(cc)

	// A call that runs until it is cancelled.
	done := make(chan error, 1)
	go func() {
		_, err := client.UnaryCall(context.Background(), &testgrpc.SimpleRequest{})
		done <- err
	}()
	<-started
	fmt.Println("in flight:", tracker.InFlight())

	tracker.Reject(nil)
	_, err := client.EmptyCall(context.Background(), &testgrpc.Empty{})
	fmt.Println("new call:", status.Code(err))

	fmt.Println("cancelled:", tracker.CancelAll(nil))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	fmt.Println("wait:", tracker.Wait(ctx))
	err = <-done
	fmt.Println("running call:", status.Code(err))
	fmt.Println(status.Convert(err).Message())
	// Output:
	// in flight: 1
	// new call: Unavailable
	// cancelled: 1
	// wait: <nil>
	// running call: Unavailable
	// drainkit: server is shutting down
}

// This example lists the calls whose handler is running, with the deadline
// the Tracker gave them.
func ExampleTracker_Calls() {
	tracker := interceptors.NewTracker(
		interceptors.WithDefaultTimeout(30*time.Second),
		interceptors.WithMethodTimeout("/grpc.testing.TestService/UnaryCall", 5*time.Second),
	)
	started := make(chan struct{}, 1)
	srv := grpc.NewServer(tracker.ServerOptions()...)
	testgrpc.RegisterTestServiceServer(srv, &exampleService{started: started})
	cc, stop := serveExample(srv)
	defer stop()

	done := make(chan error, 1)
	go func() {
		_, err := testgrpc.NewTestServiceClient(cc).UnaryCall(context.Background(), &testgrpc.SimpleRequest{})
		done <- err
	}()
	<-started
	for _, c := range tracker.Calls() {
		fmt.Printf("%s stream=%v injected=%v timeout=%v\n", c.Method, c.Stream, c.Injected, c.Deadline.Sub(c.Started))
	}
	tracker.CancelAll(nil)
	<-done
	// Output:
	// /grpc.testing.TestService/UnaryCall stream=false injected=true timeout=5s
}

// exampleService answers UnaryCall at once, or, if started is set, reports
// on started and waits for the call's context to end. EmptyCall panics.
type exampleService struct {
	testgrpc.UnimplementedTestServiceServer
	started chan struct{}
}

func (s *exampleService) UnaryCall(ctx context.Context, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	if s.started == nil {
		return &testgrpc.SimpleResponse{}, nil
	}
	s.started <- struct{}{}
	<-ctx.Done()
	return nil, ctx.Err()
}

func (s *exampleService) EmptyCall(context.Context, *testgrpc.Empty) (*testgrpc.Empty, error) {
	panic("bug")
}

// exampleLogger prints the message, the method and the code of each log
// entry, the fields that do not change from one run to the next.
func exampleLogger() logging.Logger {
	return logging.LoggerFunc(func(_ context.Context, _ logging.Level, msg string, fields ...any) {
		f := map[string]any{}
		for i := 0; i+1 < len(fields); i += 2 {
			f[fmt.Sprint(fields[i])] = fields[i+1]
		}
		fmt.Printf("%s %v/%v %v\n", msg, f["grpc.service"], f["grpc.method"], f["grpc.code"])
	})
}

// serveExample serves srv over bufconn and returns a client connection to
// it, and a function that closes both.
func serveExample(srv *grpc.Server) (*grpc.ClientConn, func()) {
	lis := bufconn.Listen(1 << 20)
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.Serve(lis)
	}()
	cc, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		panic(err)
	}
	return cc, func() {
		cc.Close()
		srv.Stop()
		<-served
	}
}
