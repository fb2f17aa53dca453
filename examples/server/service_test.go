package main

import (
	"context"
	"database/sql"
	"net"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/drainkit/drainkit/examples/demopb"
)

const defaultTestTimeout = 10 * time.Second

func openTestStore(t *testing.T, path string) *sql.DB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	db, err := openStore(ctx, path)
	if err != nil {
		t.Fatalf("openStore(%q) = %v", path, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// newClient serves svc over bufconn and returns a client of it.
func newClient(t *testing.T, svc *demoService) demopb.DemoClient {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	demopb.RegisterDemoServer(srv, svc)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	cc, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc.NewClient() = %v", err)
	}
	t.Cleanup(func() { cc.Close() })
	return demopb.NewDemoClient(cc)
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	t.Cleanup(cancel)
	return ctx
}

func TestEcho(t *testing.T) {
	c := newClient(t, &demoService{})
	got, err := c.Echo(testContext(t), wrapperspb.String("hello"))
	if err != nil || got.GetValue() != "hello" {
		t.Errorf("Echo(hello) = %v, %v; want hello, nil", got, err)
	}
}

func TestSleep(t *testing.T) {
	c := newClient(t, &demoService{})
	for _, tt := range []struct {
		name     string
		d        *durationpb.Duration
		deadline time.Duration // of the call; 0 for the test's
		want     codes.Code
	}{
		{name: "short", d: durationpb.New(10 * time.Millisecond), want: codes.OK},
		{name: "zero", d: durationpb.New(0), want: codes.OK},
		{name: "cut by the deadline", d: durationpb.New(time.Hour), deadline: 50 * time.Millisecond, want: codes.DeadlineExceeded},
		{name: "negative", d: durationpb.New(-time.Second), want: codes.InvalidArgument},
		{name: "malformed", d: &durationpb.Duration{Seconds: 1, Nanos: -1}, want: codes.InvalidArgument},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t)
			if tt.deadline > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.deadline)
				defer cancel()
			}
			_, err := c.Sleep(ctx, tt.d)
			if got := status.Code(err); got != tt.want {
				t.Errorf("Sleep(%v) = %v, want code %v", tt.d.AsDuration(), err, tt.want)
			}
		})
	}
}

// TestSleepStubborn calls the handler directly: with -stubborn it sleeps
// its whole duration whatever its context.
func TestSleepStubborn(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	const d = 50 * time.Millisecond
	for _, tt := range []struct {
		name     string
		stubborn bool
		want     codes.Code
		minTime  time.Duration
	}{
		{name: "honours its context", want: codes.Canceled},
		{name: "stubborn", stubborn: true, want: codes.OK, minTime: d},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := &demoService{stubborn: tt.stubborn}
			start := time.Now()
			_, err := s.Sleep(ctx, durationpb.New(d))
			if got := status.Code(err); got != tt.want {
				t.Errorf("Sleep(cancelled context, %v) = %v, want code %v", d, err, tt.want)
			}
			if took := time.Since(start); took < tt.minTime {
				t.Errorf("Sleep(cancelled context, %v) took %v, want at least %v", d, took, tt.minTime)
			}
		})
	}
}

func TestWatch(t *testing.T) {
	c := newClient(t, &demoService{})
	ctx, cancel := context.WithCancel(testContext(t))
	defer cancel()
	stream, err := c.Watch(ctx, &demopb.WatchRequest{})
	if err != nil {
		t.Fatalf("Watch() = %v", err)
	}
	var last time.Time
	for i := range 3 {
		ts, err := stream.Recv()
		if err != nil {
			t.Fatalf("Recv() #%d = %v", i, err)
		}
		if got := ts.AsTime(); !got.After(last) {
			t.Errorf("Recv() #%d = %v, want a time after %v", i, got, last)
		}
		last = ts.AsTime()
	}
	cancel()
	for {
		if _, err := stream.Recv(); err != nil {
			if got := status.Code(err); got != codes.Canceled {
				t.Errorf("Recv() after cancel = %v, want code %v", err, codes.Canceled)
			}
			break
		}
	}
}

func TestAppendGet(t *testing.T) {
	path := filepath.Join(t.TempDir(), "demo.db")
	c := newClient(t, &demoService{db: openTestStore(t, path)})
	ctx := testContext(t)

	ids := map[int64]string{}
	for _, v := range []string{"one", "two", ""} {
		id, err := c.Append(ctx, wrapperspb.String(v))
		if err != nil {
			t.Fatalf("Append(%q) = %v", v, err)
		}
		if _, dup := ids[id.GetValue()]; dup {
			t.Fatalf("Append(%q) = id %d, already given", v, id.GetValue())
		}
		ids[id.GetValue()] = v
	}
	for id, want := range ids {
		got, err := c.Get(ctx, wrapperspb.Int64(id))
		if err != nil || got.GetValue() != want {
			t.Errorf("Get(%d) = %v, %v; want %q, nil", id, got, err, want)
		}
	}
	if _, err := c.Get(ctx, wrapperspb.Int64(12345)); status.Code(err) != codes.NotFound {
		t.Errorf("Get(12345) = %v, want code %v", err, codes.NotFound)
	}
}

// TestStoreDurable checks that a value acknowledged by Append is read back
// by another connection to the file, once the first is closed.
func TestStoreDurable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "demo.db")
	ctx := testContext(t)
	db := openTestStore(t, path)
	id, err := (&demoService{db: db}).Append(ctx, wrapperspb.String("kept"))
	if err != nil {
		t.Fatalf("Append(kept) = %v", err)
	}
	if err := db.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}

	got, err := (&demoService{db: openTestStore(t, path)}).Get(ctx, id)
	if err != nil || got.GetValue() != "kept" {
		t.Errorf("Get(%d) after reopening = %v, %v; want kept, nil", id.GetValue(), got, err)
	}
}

func TestRunBadFlags(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
		want int
	}{
		{name: "help", args: []string{"-h"}, want: exitOK},
		{name: "negative duration", args: []string{"-grace=-1s"}, want: exitUsage},
		{name: "unknown flag", args: []string{"-nope"}, want: exitUsage},
		{name: "unknown telemetry", args: []string{"-otel=jaeger"}, want: exitUsage},
		{name: "unknown log format", args: []string{"-log=xml"}, want: exitUsage},
		{name: "duration without a unit", args: []string{"-readiness-delay", "10"}, want: exitUsage},
		{name: "duration above the limit", args: []string{"-readiness-delay", "300000h"}, want: exitUsage},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := run(tt.args); got != tt.want {
				t.Errorf("run(%q) = %d, want %d", tt.args, got, tt.want)
			}
		})
	}
}
