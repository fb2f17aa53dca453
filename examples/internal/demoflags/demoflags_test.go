package demoflags_test

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/drainkit/drainkit/drain"
	"github.com/drainkit/drainkit/examples/internal/demoflags"
	"github.com/drainkit/drainkit/interceptors"
)

func TestParse(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
		want func(*demoflags.Config)
	}{
		{name: "defaults", want: func(*demoflags.Config) {}},
		{
			name: "every flag",
			args: []string{"-addr=0.0.0.0:8080", "-db", "/tmp/x.db", "-readiness-delay=5s", "-grace=1m", "-cancel-grace=2s", "-force-wait=0", "-stubborn", "-otel=stdout", "-upgrade-timeout=5s", "-pid-file=/run/demo.pid"},
			want: func(c *demoflags.Config) {
				*c = demoflags.Config{
					Addr: "0.0.0.0:8080", DB: "/tmp/x.db", ReadinessDelay: 5 * time.Second, Grace: time.Minute,
					CancelGrace: 2 * time.Second, Stubborn: true, Otel: demoflags.OtelStdout,
					UpgradeTimeout: 5 * time.Second, PIDFile: "/run/demo.pid",
				}
			},
		},
		{name: "free port", args: []string{"-addr", "127.0.0.1:0"}, want: func(c *demoflags.Config) { c.Addr = "127.0.0.1:0" }},
		{name: "double dashes", args: []string{"--grace=5s"}, want: func(c *demoflags.Config) { c.Grace = 5 * time.Second }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			want := demoflags.Default()
			tt.want(&want)
			got, err := demoflags.Parse(tt.args, io.Discard)
			if err != nil {
				t.Fatalf("Parse(%q) = %v", tt.args, err)
			}
			if got != want {
				t.Errorf("Parse(%q) = %+v, want %+v", tt.args, got, want)
			}
		})
	}
}

func TestParseDefaultsMatchDrain(t *testing.T) {
	c := demoflags.Default()
	srv := grpc.NewServer()
	defer srv.Stop()
	got := drain.New(srv, interceptors.NewTracker(), c.DrainOptions()...).Budget()
	want := drain.New(srv, interceptors.NewTracker()).Budget()
	if got != want {
		t.Errorf("Budget() with the default flags = %v, with drain's defaults %v; want them equal", got, want)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tt := range []struct {
		name    string
		args    []string
		wantErr string
	}{
		{name: "negative readiness delay", args: []string{"-readiness-delay=-1s"}, wantErr: "-readiness-delay -1s: negative duration"},
		{name: "negative grace", args: []string{"-grace=-1s"}, wantErr: "-grace -1s: negative duration"},
		{name: "negative cancel grace", args: []string{"-cancel-grace=-1ms"}, wantErr: "-cancel-grace -1ms: negative duration"},
		{name: "negative force wait", args: []string{"-force-wait=-2s"}, wantErr: "-force-wait -2s: negative duration"},
		{name: "malformed duration", args: []string{"-grace=soon"}, wantErr: "-grace"},
		{name: "unknown telemetry", args: []string{"-otel=jaeger"}, wantErr: `-otel "jaeger"`},
		{name: "empty address", args: []string{"-addr="}, wantErr: "-addr: empty address"},
		{name: "address without port", args: []string{"-addr=localhost"}, wantErr: `-addr "localhost"`},
		{name: "empty database", args: []string{"-db="}, wantErr: "-db: empty file name"},
		{name: "database with a query", args: []string{"-db=x.db?mode=ro"}, wantErr: "must not contain '?'"},
		{name: "unknown flag", args: []string{"-grace-period=1s"}, wantErr: "grace-period"},
		{name: "zero upgrade timeout", args: []string{"-upgrade-timeout=0s"}, wantErr: "-upgrade-timeout 0s: must be positive"},
		{name: "argument", args: []string{"serve"}, wantErr: `unexpected argument "serve"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			_, err := demoflags.Parse(tt.args, &out)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Parse(%q) = %v, want an error containing %q", tt.args, err, tt.wantErr)
			}
			if !strings.Contains(out.String(), tt.wantErr) {
				t.Errorf("Parse(%q) wrote %q, want the error %q", tt.args, out.String(), tt.wantErr)
			}
		})
	}
}

func TestParseHelp(t *testing.T) {
	var out bytes.Buffer
	_, err := demoflags.Parse([]string{"-h"}, &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Errorf("Parse(-h) = %v, want %v", err, flag.ErrHelp)
	}
	for _, name := range []string{"-addr", "-db", "-readiness-delay", "-grace", "-cancel-grace", "-force-wait", "-stubborn", "-otel", "-upgrade-timeout", "-pid-file"} {
		if !strings.Contains(out.String(), name) {
			t.Errorf("Parse(-h) usage does not mention %s:\n%s", name, out.String())
		}
	}
}

func TestStopHooks(t *testing.T) {
	for _, tt := range []struct {
		name string
		otel string
		want int
	}{
		{name: "no telemetry", otel: demoflags.OtelNone, want: 2},
		{name: "stdout telemetry", otel: demoflags.OtelStdout, want: 4},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := demoflags.Default()
			c.Otel = tt.otel
			if got := c.StopHooks(); got != tt.want {
				t.Errorf("StopHooks() with -otel=%s = %d, want %d", tt.otel, got, tt.want)
			}
		})
	}
}
