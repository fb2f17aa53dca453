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
	"github.com/drainkit/drainkit/keepalive"
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
			args: []string{"-addr=0.0.0.0:8080", "-db", "/tmp/x.db", "-readiness-delay=5s", "-grace=1m", "-cancel-grace=2s", "-force-wait=0", "-stubborn", "-otel=stdout", "-log=json", "-upgrade-timeout=5s", "-pid-file=/run/demo.pid", "-max-connection-age=2s", "-max-stream-age=30s", "-retire-aged-streams=false"},
			want: func(c *demoflags.Config) {
				*c = demoflags.Config{
					Addr: "0.0.0.0:8080", DB: "/tmp/x.db", ReadinessDelay: 5 * time.Second, Grace: time.Minute,
					CancelGrace: 2 * time.Second, Stubborn: true, Otel: demoflags.OtelStdout, Log: demoflags.LogJSON,
					UpgradeTimeout: 5 * time.Second, PIDFile: "/run/demo.pid",
					MaxConnectionAge: 2 * time.Second, MaxStreamAge: 30 * time.Second,
				}
			},
		},
		{name: "free port", args: []string{"-addr", "127.0.0.1:0"}, want: func(c *demoflags.Config) { c.Addr = "127.0.0.1:0" }},
		{name: "double dashes", args: []string{"--grace=5s"}, want: func(c *demoflags.Config) { c.Grace = 5 * time.Second }},
		{name: "text logs", args: []string{"-log", "text"}, want: func(c *demoflags.Config) { c.Log = demoflags.LogText }},
		{name: "bare zero", args: []string{"-readiness-delay", "0"}, want: func(c *demoflags.Config) { c.ReadinessDelay = 0 }},
		{name: "at the limit", args: []string{"-grace", "1h"}, want: func(c *demoflags.Config) { c.Grace = demoflags.MaxDuration }},
		{name: "connection age off", args: []string{"-max-connection-age=0"}, want: func(c *demoflags.Config) { c.MaxConnectionAge = 0 }},
		{name: "compound duration", args: []string{"-grace", "1m30s"}, want: func(c *demoflags.Config) { c.Grace = 90 * time.Second }},
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
		{name: "negative connection age", args: []string{"-max-connection-age=-1s"}, wantErr: "-max-connection-age -1s: negative duration"},
		{name: "negative stream age", args: []string{"-max-stream-age=-1s"}, wantErr: "-max-stream-age -1s: negative duration"},
		{name: "stream age below the minimum", args: []string{"-max-stream-age=10ms"}, wantErr: "-max-stream-age 10ms: below the minimum of 100ms"},
		{name: "stream age above the limit", args: []string{"-max-stream-age=2h"}, wantErr: "-max-stream-age 2h0m0s: above the limit of 1h"},
		{name: "connection age below a second", args: []string{"-max-connection-age=500ms"}, wantErr: "-max-connection-age 500ms: below a second, which package keepalive refuses"},
		{name: "connection age above the limit", args: []string{"-max-connection-age=2h"}, wantErr: "-max-connection-age 2h0m0s: above the limit of 1h"},
		{name: "malformed duration", args: []string{"-grace=soon"}, wantErr: `invalid value "soon" for flag -grace: not a duration, want a number and a unit, e.g. 500ms, 10s or 1m30s, at most 1h`},
		{name: "duration without a unit", args: []string{"-readiness-delay", "10"}, wantErr: `invalid value "10" for flag -readiness-delay: missing unit, want e.g. 10s`},
		{name: "fraction without a unit", args: []string{"-grace=1.5"}, wantErr: "missing unit, want e.g. 1.5s"},
		{name: "duration above the limit", args: []string{"-readiness-delay", "300000h"}, wantErr: "-readiness-delay 300000h0m0s: above the limit of 1h"},
		{name: "grace above the limit", args: []string{"-grace", "61m"}, wantErr: "-grace 1h1m0s: above the limit of 1h"},
		{name: "duration that overflows", args: []string{"-force-wait", "3000000h"}, wantErr: "not a duration"},
		{name: "unknown log format", args: []string{"-log=logfmt"}, wantErr: `-log "logfmt": want "text" or "json"`},
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

// -h is a request: the usage goes to standard output, and nothing to
// standard error.
func TestParseCommandLineHelp(t *testing.T) {
	for _, arg := range []string{"-h", "-help", "--help"} {
		t.Run(arg, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			_, err := demoflags.ParseCommandLine([]string{arg}, &stdout, &stderr)
			if !errors.Is(err, flag.ErrHelp) {
				t.Errorf("ParseCommandLine(%s) = %v, want %v", arg, err, flag.ErrHelp)
			}
			if stderr.Len() > 0 {
				t.Errorf("ParseCommandLine(%s) wrote %q to stderr, want nothing", arg, stderr.String())
			}
			for _, want := range []string{
				"-addr", "-db", "-readiness-delay", "-grace", "-cancel-grace", "-force-wait", "-stubborn", "-otel",
				"-upgrade-timeout duration", "-pid-file file", `-log format`, `(default "text")`, "at most 1h", "-grace duration",
			} {
				if !strings.Contains(stdout.String(), want) {
					t.Errorf("ParseCommandLine(%s) usage does not mention %q:\n%s", arg, want, stdout.String())
				}
			}
		})
	}
}

// A bad flag is an error on standard error, with a pointer to -h, and
// nothing on standard output.
func TestParseCommandLineError(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
	}{
		{name: "unknown flag", args: []string{"-nope"}},
		{name: "malformed value", args: []string{"-grace=10"}},
		{name: "invalid value", args: []string{"-otel=jaeger"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			_, err := demoflags.ParseCommandLine(tt.args, &stdout, &stderr)
			if err == nil {
				t.Fatalf("ParseCommandLine(%q) = nil error, want one", tt.args)
			}
			if stdout.Len() > 0 {
				t.Errorf("ParseCommandLine(%q) wrote %q to stdout, want nothing", tt.args, stdout.String())
			}
			if want := err.Error() + "\nRun drainkit-demo -h for the flags.\n"; !strings.HasSuffix(stderr.String(), want) {
				t.Errorf("ParseCommandLine(%q) wrote %q to stderr, want it to end with %q", tt.args, stderr.String(), want)
			}
		})
	}
}

func TestValidateLimit(t *testing.T) {
	c := demoflags.Default()
	c.ForceWait = demoflags.MaxDuration + time.Nanosecond
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "-force-wait 1h0m0.000000001s: above the limit of 1h") {
		t.Errorf("Validate() with -force-wait just above the limit = %v, want an error naming the flag and the limit", err)
	}
}

func TestStopHooks(t *testing.T) {
	for _, tt := range []struct {
		name   string
		otel   string
		notify bool
		want   int
	}{
		{name: "no telemetry", otel: demoflags.OtelNone, want: 1},
		{name: "stdout telemetry", otel: demoflags.OtelStdout, want: 3},
		{name: "under systemd", otel: demoflags.OtelNone, notify: true, want: 2},
		{name: "under systemd with stdout telemetry", otel: demoflags.OtelStdout, notify: true, want: 4},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := demoflags.Default()
			c.Otel, c.Notify = tt.otel, tt.notify
			if got := c.StopHooks(); got != tt.want {
				t.Errorf("StopHooks() with -otel=%s, Notify %t = %d, want %d", tt.otel, tt.notify, got, tt.want)
			}
		})
	}
}

func TestDefaultConnectionAgeIsKeepalives(t *testing.T) {
	sp, _ := keepalive.Parameters()
	if got := demoflags.Default().MaxConnectionAge; got != sp.MaxConnectionAge {
		t.Errorf("Default().MaxConnectionAge = %v, want package keepalive's %v", got, sp.MaxConnectionAge)
	}
}
