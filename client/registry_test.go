package client_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/drainkit/drainkit/client"
	"github.com/drainkit/drainkit/drain"
	"github.com/drainkit/drainkit/stophook"
)

// leakyConstructor makes a ClientConn with client.NewClient: its name is
// what Open's stack must name.
func leakyConstructor(t *testing.T, target string) *grpc.ClientConn {
	t.Helper()
	cc, err := client.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("client.NewClient(%q) = %v", target, err)
	}
	return cc
}

func TestOpen(t *testing.T) {
	if open := client.Open(); len(open) != 0 {
		t.Fatalf("Open() = %v before the test, want none", open)
	}
	before := time.Now()
	first := leakyConstructor(t, "passthrough:///first")
	second := leakyConstructor(t, "passthrough:///second")
	after := time.Now()

	open := client.Open()
	if len(open) != 2 || open[0].Target != "passthrough:///first" || open[1].Target != "passthrough:///second" {
		t.Fatalf("Open() = %v, want first, then second", open)
	}
	for _, c := range open {
		if c.Created.Before(before) || c.Created.After(after) {
			t.Errorf("Open() conn to %s created %v, want between %v and %v", c.Target, c.Created, before, after)
		}
		if !strings.Contains(c.Stack, "client_test.leakyConstructor") || !strings.Contains(c.Stack, "client_test.TestOpen") {
			t.Errorf("Open() conn to %s has stack\n%s\nwant leakyConstructor and TestOpen in it", c.Target, c.Stack)
		}
		if strings.Contains(c.Stack, "client.NewClient") {
			t.Errorf("Open() conn to %s has stack\n%s\nwant it to start at NewClient's caller", c.Target, c.Stack)
		}
	}

	if err := first.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	if open := client.Open(); len(open) != 1 || open[0].Target != "passthrough:///second" {
		t.Errorf("Open() after closing the first = %v, want the second only", open)
	}
	second.Close()
	if open := client.Open(); len(open) != 0 {
		t.Errorf("Open() after closing both = %v, want none", open)
	}
}

// recorder is a client.TestingT that records its errors.
type recorder struct{ errs []string }

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func TestVerifyNone(t *testing.T) {
	var r recorder
	client.VerifyNone(&r)
	if len(r.errs) != 0 {
		t.Fatalf("VerifyNone() with no conn open reported %q", r.errs)
	}
	cc := leakyConstructor(t, "passthrough:///leaked")
	client.VerifyNone(&r)
	if len(r.errs) != 1 || !strings.Contains(r.errs[0], `"passthrough:///leaked"`) || !strings.Contains(r.errs[0], "client_test.TestVerifyNone") {
		t.Errorf("VerifyNone() with a conn open reported %q, want its target and creator", r.errs)
	}
	cc.Close()
	r.errs = nil
	client.VerifyNone(&r)
	if len(r.errs) != 0 {
		t.Errorf("VerifyNone() after Close reported %q", r.errs)
	}
}

func TestStopHook(t *testing.T) {
	b := startBackend(t, "A", false)
	cc := leakyConstructor(t, "passthrough:///left-open")
	closedByApp := leakyConstructor(t, "passthrough:///closed")
	closedByApp.Close()

	d := drain.New(b.srv, b.tracker, drain.WithHooks(client.StopHook()), drain.WithLogger(slog.New(slog.DiscardHandler)))
	_, err := d.Drain(context.Background())
	if !errors.Is(err, client.ErrLeaked) {
		t.Fatalf("Drain() = %v, want an error wrapping ErrLeaked", err)
	}
	if msg := err.Error(); !strings.Contains(msg, `"passthrough:///left-open"`) || !strings.Contains(msg, "client_test.TestStopHook") || strings.Contains(msg, "passthrough:///closed") {
		t.Errorf("Drain() = %v, want the conn left open and where it was made, and not the closed one", err)
	}
	if s := cc.GetState(); s != connectivity.Shutdown {
		t.Errorf("conn left open: state %v after the drain, want %v", s, connectivity.Shutdown)
	}
	if open := client.Open(); len(open) != 0 {
		t.Errorf("Open() after the drain = %v, want none", open)
	}

	// A drain with nothing left open is clean.
	b2 := startBackend(t, "B", false)
	d2 := drain.New(b2.srv, b2.tracker, drain.WithHooks(client.StopHook()), drain.WithLogger(slog.New(slog.DiscardHandler)))
	if _, err := d2.Drain(context.Background()); err != nil {
		t.Errorf("Drain() with no conn open = %v, want nil", err)
	}
}

// TestOpenSurvivesGC checks that a ClientConn left open and unused, which
// nothing else reaches, is still listed after a garbage collection: a leak
// must stay there to be found.
func TestOpenSurvivesGC(t *testing.T) {
	leakyConstructor(t, "passthrough:///dropped") // dropped at once, never closed
	runtime.GC()
	runtime.GC()
	open := client.Open()
	if len(open) != 1 || open[0].Target != "passthrough:///dropped" {
		t.Fatalf("Open() after GC = %v, want the dropped conn", open)
	}
	// The conn is reachable from Open's registry only: close it through
	// the stop hook, as a server's drain would.
	if err := client.StopHook().OnStop(context.Background(), stophook.Event{Phase: stophook.Cleanup}); !errors.Is(err, client.ErrLeaked) {
		t.Errorf("StopHook at Cleanup = %v, want an error wrapping ErrLeaked", err)
	}
	if open := client.Open(); len(open) != 0 {
		t.Errorf("Open() after the stop hook = %v, want none", open)
	}
}
