package demoflags

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/drainkit/drainkit/drain"
	"github.com/drainkit/drainkit/interceptors"
	"github.com/drainkit/drainkit/stophook"
)

// Name is the name of the server's command.
const Name = "drainkit-demo"

// The values of -otel.
const (
	OtelNone   = "none"   // no telemetry
	OtelStdout = "stdout" // spans and, at the end of a drain, metrics as JSON on standard output
)

// The values of -log.
const (
	LogText = "text" // one line of key=value pairs per record, for a person at a terminal
	LogJSON = "json" // one JSON object per record, for log collectors and tests
)

// Config is the server's configuration, as set by its flags.
type Config struct {
	Addr           string        // -addr: the TCP address to listen on
	DB             string        // -db: the SQLite database file
	ReadinessDelay time.Duration // -readiness-delay: drain.WithReadinessDelay
	Grace          time.Duration // -grace: drain.WithGracePeriod
	CancelGrace    time.Duration // -cancel-grace: drain.WithCancelGrace
	ForceWait      time.Duration // -force-wait: drain.WithForceWait

	// Rebalancing long-lived streams.
	MaxConnectionAge time.Duration // -max-connection-age: keepalive.WithMaxConnectionAge; 0 is off
	MaxStreamAge     time.Duration // -max-stream-age: interceptors.WithMaxStreamAge; 0 is off
	// -retire-aged-streams: end the long-lived streams of a connection
	// renewed for its age at once (interceptors.Tracker.Credentials); off,
	// grpc cuts them at the end of the grace, as without drainkit.
	RetireAgedStreams bool
	Stubborn          bool   // -stubborn: Sleep ignores its context
	Otel              string // -otel: OtelNone or OtelStdout
	Log               string // -log: LogText or LogJSON

	// In-place upgrades on SIGHUP.
	UpgradeTimeout time.Duration // -upgrade-timeout: upgrade.WithReadyTimeout
	PIDFile        string        // -pid-file: upgrade.WithPIDFile, if not empty

	// Notify is set, from the environment rather than a flag, when the
	// server runs under systemd's supervision (NOTIFY_SOCKET is set): it
	// then notifies systemd of its drain through one more stop hook.
	Notify bool
}

// Default returns the configuration of a server started without flags.
func Default() Config {
	return Config{
		Addr:        "127.0.0.1:50051",
		DB:          "demo.db",
		Grace:       15 * time.Second,
		CancelGrace: 3 * time.Second,
		ForceWait:   time.Second,

		MaxConnectionAge:  5 * time.Minute, // package keepalive's
		RetireAgedStreams: true,
		Otel:              OtelNone,
		Log:               LogText,

		UpgradeTimeout: 30 * time.Second,
	}
}

// Parse is ParseCommandLine with output as both stdout and stderr.
func Parse(args []string, output io.Writer) (Config, error) {
	return ParseCommandLine(args, output, output)
}

// ParseCommandLine parses the server's arguments, program name excluded,
// and checks them. On -h or -help it writes the usage to stdout, the answer
// asked for, and returns flag.ErrHelp. When a flag is unknown or its value
// malformed or out of range, it writes an error naming the flag to stderr,
// with a line that points to -h, and returns the error.
func ParseCommandLine(args []string, stdout, stderr io.Writer) (Config, error) {
	c := Default()
	fs := flag.NewFlagSet(Name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	// The flag package calls Usage on errors too: the usage is written
	// below, where help and errors are told apart.
	fs.Usage = func() {}
	fs.StringVar(&c.Addr, "addr", c.Addr, "TCP `address` to listen on; port 0 picks a free port (see the \"serving\" log record)")
	fs.StringVar(&c.DB, "db", c.DB, "SQLite database `file`, created if missing; its directory must exist and be writable")
	fs.Var(&durationValue{&c.ReadinessDelay}, "readiness-delay", "`duration` to keep serving after health turns NOT_SERVING, for load balancers to notice")
	fs.Var(&durationValue{&c.Grace}, "grace", "`duration` to wait, after GOAWAY, for in-flight RPCs to finish")
	fs.Var(&durationValue{&c.CancelGrace}, "cancel-grace", "`duration` to wait for handlers to return after cancelling them")
	fs.Var(&durationValue{&c.ForceWait}, "force-wait", "`duration` to wait for handlers after the forced stop before reporting them as leaked")
	fs.Var(&durationValue{&c.MaxConnectionAge}, "max-connection-age", "`duration` after which grpc renews a connection with GOAWAY (±10%); its long-lived streams then end at once, resumable; 0 is never")
	fs.Var(&durationValue{&c.MaxStreamAge}, "max-stream-age", "`duration` after which a long-lived stream (Watch, Chat) ends, resumable (±10%); 0 is never, else at least 100ms")
	fs.BoolVar(&c.RetireAgedStreams, "retire-aged-streams", c.RetireAgedStreams, "end the long-lived streams of a connection renewed for its age at once, resumable; false leaves grpc to cut them at the end of -grace")
	fs.BoolVar(&c.Stubborn, "stubborn", c.Stubborn, "make Sleep ignore its context, so that only a forced stop ends it")
	fs.StringVar(&c.Otel, "otel", c.Otel, "telemetry: \"none\", or \"stdout\" for spans and metrics as JSON on standard output")
	fs.Var(&durationValue{&c.UpgradeTimeout}, "upgrade-timeout", "`duration` to wait, on SIGHUP, for the successor to serve before giving up the upgrade")
	fs.StringVar(&c.PIDFile, "pid-file", c.PIDFile, "`file` to write the process ID to once serving, for systemd's PIDFile= (none if empty)")
	fs.StringVar(&c.Log, "log", c.Log, "log `format` on standard error: \"text\", one line of key=value pairs per record, for a terminal; or \"json\", one object per line, for log collectors")

	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		usage(fs, stdout)
		return Config{}, err
	}
	if err == nil && fs.NArg() > 0 {
		err = fmt.Errorf("unexpected argument %q: %s takes flags only", fs.Arg(0), Name)
		fmt.Fprintln(stderr, err)
	}
	if err == nil {
		if err = c.Validate(); err != nil {
			fmt.Fprintln(stderr, err)
		}
	}
	if err != nil {
		// The flag package has written its own errors.
		fmt.Fprintf(stderr, "Run %s -h for the flags.\n", Name)
		return Config{}, err
	}
	return c, nil
}

// usage writes the usage of fs to w.
func usage(fs *flag.FlagSet, w io.Writer) {
	fmt.Fprintf(w, `Usage: %s [flags]

Serves drainkit.demo.v1.Demo and drains on SIGTERM or SIGINT; a second signal forces the drain.
Exits 0 after a clean drain, 1 after a forced drain or an error, 2 on bad flags.
Durations take a unit (500ms, 10s, 1m30s) and are at most %s.

Flags:
`, Name, short(MaxDuration))
	fs.SetOutput(w)
	fs.PrintDefaults()
}

// Validate returns an error naming the first flag whose value is not
// acceptable, or nil.
func (c Config) Validate() error {
	if c.Addr == "" {
		return errors.New("-addr: empty address")
	}
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return fmt.Errorf("-addr %q: %v", c.Addr, err)
	}
	if c.DB == "" {
		return errors.New("-db: empty file name")
	}
	if strings.Contains(c.DB, "?") {
		return fmt.Errorf("-db %q: the file name must not contain '?'", c.DB)
	}
	for _, f := range []struct {
		name string
		d    time.Duration
	}{
		{"-readiness-delay", c.ReadinessDelay},
		{"-grace", c.Grace},
		{"-cancel-grace", c.CancelGrace},
		{"-force-wait", c.ForceWait},
		{"-max-connection-age", c.MaxConnectionAge},
		{"-max-stream-age", c.MaxStreamAge},
	} {
		if f.d < 0 {
			return fmt.Errorf("%s %v: negative duration", f.name, f.d)
		}
		if f.d > MaxDuration {
			return fmt.Errorf("%s %v: above the limit of %s", f.name, f.d, short(MaxDuration))
		}
	}
	if c.MaxStreamAge > 0 && c.MaxStreamAge < interceptors.MinStreamAge {
		return fmt.Errorf("-max-stream-age %v: below the minimum of %v", c.MaxStreamAge, interceptors.MinStreamAge)
	}
	if c.MaxConnectionAge > 0 && c.MaxConnectionAge < time.Second {
		return fmt.Errorf("-max-connection-age %v: below a second, which package keepalive refuses", c.MaxConnectionAge)
	}
	if c.UpgradeTimeout <= 0 {
		return fmt.Errorf("-upgrade-timeout %v: must be positive", c.UpgradeTimeout)
	}
	if c.UpgradeTimeout > MaxDuration {
		return fmt.Errorf("-upgrade-timeout %v: above the limit of %s", c.UpgradeTimeout, short(MaxDuration))
	}
	if c.Otel != OtelNone && c.Otel != OtelStdout {
		return fmt.Errorf("-otel %q: want %q or %q", c.Otel, OtelNone, OtelStdout)
	}
	if c.Log != LogText && c.Log != LogJSON {
		return fmt.Errorf("-log %q: want %q or %q", c.Log, LogText, LogJSON)
	}
	return nil
}

// StopHooks returns the number of stop hooks the server registers with its
// drain: one that closes the store, with Notify one that notifies systemd,
// and with -otel=stdout two more, one that records the drain and one that
// flushes the telemetry. The drain's budget grows with it, each hook call
// being bounded by the hook timeout.
func (c Config) StopHooks() int {
	n := 1
	if c.Notify {
		n++
	}
	if c.Otel == OtelStdout {
		n += 2
	}
	return n
}

// DrainOptions returns the options of the server's drain that its flags
// set, followed by drain.WithHooks(hooks...) when hooks are given.
func (c Config) DrainOptions(hooks ...stophook.Hook) []drain.Option {
	opts := []drain.Option{
		drain.WithReadinessDelay(c.ReadinessDelay),
		drain.WithGracePeriod(c.Grace),
		drain.WithCancelGrace(c.CancelGrace),
		drain.WithForceWait(c.ForceWait),
	}
	if len(hooks) > 0 {
		opts = append(opts, drain.WithHooks(hooks...))
	}
	return opts
}
