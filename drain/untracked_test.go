package drain_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/drainkit/drainkit/drain"
	"github.com/drainkit/drainkit/interceptors"
)

// logRecords parses the records of a JSON log.
func logRecords(t *testing.T, logs string) []map[string]any {
	t.Helper()
	var records []map[string]any
	for line := range strings.Lines(logs) {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		records = append(records, rec)
	}
	return records
}

// TestDrainWarnsOfUntrackedStreams drains a server with a Watch-like stream
// open, a long-lived one for the Tracker. Installed with ServerOptions, the
// Tracker sees the stream and the drain ends it at once, and the log has no
// WARN. With only the unary interceptor installed (the easiest mistake),
// the stream is invisible: the drain finds no RPC left, waits out the grace
// period for a connection that never closes and cuts it, and must say so at
// WARN, naming the missing interceptor and ServerOptions.
func TestDrainWarnsOfUntrackedStreams(t *testing.T) {
	const grace = 2 * time.Second // above the drain's 1s threshold, with a margin
	for _, tt := range []struct {
		name     string
		opts     func(*interceptors.Tracker) []grpc.ServerOption
		wantWarn bool
	}{
		{
			name: "ServerOptions",
			opts: func(tr *interceptors.Tracker) []grpc.ServerOption { return tr.ServerOptions() },
		},
		{
			name: "unary interceptor only",
			opts: func(tr *interceptors.Tracker) []grpc.ServerOption {
				return []grpc.ServerOption{grpc.ChainUnaryInterceptor(tr.UnaryServerInterceptor())}
			},
			wantWarn: true,
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			svc := newService(false)
			tr := interceptors.NewTracker(interceptors.WithLongLived(streamMethod))
			srv := grpc.NewServer(tt.opts(tr)...)
			testgrpc.RegisterTestServiceServer(srv, svc)
			stream := startStream(t, serveBuf(t, srv), svc)

			var logs bytes.Buffer
			d := drain.New(srv, tr, drain.WithGracePeriod(grace),
				drain.WithCancelGrace(defaultTestShortTimeout), drain.WithForceWait(defaultTestShortTimeout),
				drain.WithLogger(slog.New(slog.NewJSONHandler(&logs, nil))))
			r, err := d.Drain(context.Background())
			if err != nil || r.Forced {
				t.Errorf("Drain() = forced %t, %v; want not forced: no tracked RPC was cut", r.Forced, err)
			}
			if err := receive(t, stream, "the end of the stream"); status.Code(err) != codes.Unavailable {
				t.Errorf("stream Recv() = %v, want code Unavailable", err)
			}

			var warnings []map[string]any
			for _, rec := range logRecords(t, logs.String()) {
				if rec["level"] == "WARN" {
					warnings = append(warnings, rec)
				}
			}
			if !tt.wantWarn {
				if len(warnings) != 0 {
					t.Errorf("WARN records %v, want none:\n%s", warnings, logs.String())
				}
				return
			}
			if len(warnings) != 1 {
				t.Fatalf("%d WARN records, want 1, the Force phase's:\n%s", len(warnings), logs.String())
			}
			w := warnings[0]
			if w["msg"] != "drain phase" || w["phase"] != "Force" {
				t.Errorf("WARN record %v, want the Force phase's", w)
			}
			cause, _ := w["likely_cause"].(string)
			for _, name := range []string{"StreamServerInterceptor", "ServerOptions"} {
				if !strings.Contains(cause, name) {
					t.Errorf("WARN record likely_cause = %q, want it to name %s", cause, name)
				}
			}
		})
	}
}

// TestDrainNoUntrackedWarning checks the drains that close connections with
// no RPC left and must not blame the interceptors: the waits skipped on an
// idle server, and a zero grace period, where grpc has had no time to close
// the connections itself.
func TestDrainNoUntrackedWarning(t *testing.T) {
	for _, tt := range []struct {
		name string
		ctx  func() context.Context
		opts []drain.Option
	}{
		{name: "zero grace period", ctx: context.Background, opts: []drain.Option{drain.WithGracePeriod(0)}},
		{name: "waits skipped", ctx: func() context.Context {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTestServer(t, newService(false))
			cc := ts.dial(t)
			if _, err := healthpb.NewHealthClient(cc).Check(context.Background(), &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true)); err != nil {
				t.Fatalf("Check() = %v", err)
			}
			var logs bytes.Buffer
			d := drain.New(ts.srv, ts.tracker, append(tt.opts, drain.WithLogger(slog.New(slog.NewJSONHandler(&logs, nil))))...)
			if _, err := d.Drain(tt.ctx()); err != nil {
				t.Fatalf("Drain() = %v", err)
			}
			if strings.Contains(logs.String(), "likely_cause") || strings.Contains(logs.String(), `"WARN"`) {
				t.Errorf("the drain blames untracked RPCs:\n%s", logs.String())
			}
		})
	}
}
