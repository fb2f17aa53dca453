package drainkit_test

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"net"
	"os"
	"regexp"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/drainkit/drainkit/drain"
	"github.com/drainkit/drainkit/interceptors"
	"github.com/drainkit/drainkit/internal/readmesnippet"
	"github.com/drainkit/drainkit/stophook"
)

// serve is the first snippet of README.md, word for word: TestREADMESnippet
// fails when the two differ, and the compiler when the snippet does not
// compile.
func serve(lis net.Listener, db *sql.DB) error {
	// One record per drain phase, then the report. The drain's default
	// logger discards them.
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	t := interceptors.NewTracker(
		// Streams that never end by themselves, such as watches: a drain
		// cancels them at once instead of waiting out its grace period.
		interceptors.WithLongLived("/example.v1.Feed/Watch"),
	)
	// Everything the Tracker needs. Add your own interceptors after it:
	// append(t.ServerOptions(), grpc.ChainUnaryInterceptor(...), ...).
	srv := grpc.NewServer(t.ServerOptions()...)
	h := health.NewServer()
	healthpb.RegisterHealthServer(srv, h)
	// register your services on srv ...
	d := drain.New(srv, t,
		drain.WithHealth(h),
		drain.WithReadinessDelay(5*time.Second),
		// Closes db at the end of the drain, once no handler uses it.
		drain.WithHooks(stophook.Closer("db", db)),
		drain.WithLogger(logger),
	)
	// The worst case of the drain must fit the time between SIGTERM and
	// SIGKILL: 30s by default in Kubernetes (terminationGracePeriodSeconds).
	if err := d.CheckBudget(30 * time.Second); err != nil {
		return err
	}
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
	// With a driver imported, such as modernc.org/sqlite.
	db, err := sql.Open("sqlite", "app.db")
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := serve(lis, db); err != nil {
		fmt.Println(err)
	}
}

func TestREADMESnippet(t *testing.T) {
	readmesnippet.Check(t, "README.md", "readme_test.go", "readme_test.go", "serve")
}

// TestREADMEBudget checks the budget that the README gives for serve's
// drain, and that it fits the limit serve checks, with a second to spare.
func TestREADMEBudget(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("`d.Budget\\(\\)`, the drain's worst case, is here (\\S+?):").FindSubmatch(readme)
	if m == nil {
		t.Fatal("README.md gives no budget for serve's drain")
	}
	// serve's drain, as far as its budget goes.
	tr := interceptors.NewTracker()
	srv := grpc.NewServer(tr.ServerOptions()...)
	defer srv.Stop()
	hook := stophook.Func(func(context.Context, stophook.Event) error { return nil })
	d := drain.New(srv, tr, drain.WithReadinessDelay(5*time.Second), drain.WithHooks(hook))
	if got := d.Budget().String(); got != string(m[1]) {
		t.Errorf("Budget() = %s; the README says %s", got, m[1])
	}
	if err := d.CheckBudget(30*time.Second - time.Second); err != nil {
		t.Errorf("CheckBudget(29s) = %v, want nil: the README's set-up must fit 30s with a margin", err)
	}
}
