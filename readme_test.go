package drainkit_test

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/drainkit/drainkit/drain"
	"github.com/drainkit/drainkit/interceptors"
	"github.com/drainkit/drainkit/internal/readmesnippet"
)

// serve is the first snippet of README.md, word for word: TestREADMESnippet
// fails when the two differ, and the compiler when the snippet does not
// compile.
func serve(lis net.Listener) error {
	// One record per drain phase, then the report. The drain's default
	// logger discards them.
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	t := interceptors.NewTracker(
		// Streams that never end by themselves, such as watches: a drain
		// cancels them at once instead of waiting out its grace period.
		interceptors.WithLongLived("/example.v1.Feed/Watch"),
	)
	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(t.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(t.StreamServerInterceptor()),
	)
	h := health.NewServer()
	healthpb.RegisterHealthServer(srv, h)
	// register your services on srv ...
	d := drain.New(srv, t,
		drain.WithHealth(h),
		drain.WithReadinessDelay(5*time.Second),
		drain.WithLogger(logger),
	)
	// Drains on SIGTERM or SIGINT. nil after a clean drain;
	// errors.Is(err, drain.ErrForced) when handlers had to be cut.
	return d.Serve(lis)
}

// A program serves through the README's serve until SIGTERM or SIGINT.
func Example_serve() {
	lis, err := net.Listen("tcp", "127.0.0.1:50051")
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := serve(lis); err != nil {
		fmt.Println(err)
	}
}

func TestREADMESnippet(t *testing.T) {
	readmesnippet.Check(t, "README.md", "readme_test.go", "readme_test.go", "serve")
}
