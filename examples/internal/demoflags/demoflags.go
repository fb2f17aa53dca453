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
	"github.com/drainkit/drainkit/stophook"
)

// Name is the name of the server's command.
const Name = "drainkit-demo"

// The values of -otel.
const (
	OtelNone   = "none"   // no telemetry
	OtelStdout = "stdout" // spans and, at the end of a drain, metrics as JSON on standard output
)

// Config is the server's configuration, as set by its flags.
type Config struct {
	Addr           string        // -addr: the TCP address to listen on
	DB             string        // -db: the SQLite database file
	ReadinessDelay time.Duration // -readiness-delay: drain.WithReadinessDelay
	Grace          time.Duration // -grace: drain.WithGracePeriod
	CancelGrace    time.Duration // -cancel-grace: drain.WithCancelGrace
	ForceWait      time.Duration // -force-wait: drain.WithForceWait
	Stubborn       bool          // -stubborn: Sleep ignores its context
	Otel           string        // -otel: OtelNone or OtelStdout

	// In-place upgrades on SIGHUP.
	UpgradeTimeout time.Duration // -upgrade-timeout: upgrade.WithReadyTimeout
	PIDFile        string        // -pid-file: upgrade.WithPIDFile, if not empty
}

// Default returns the configuration of a server started without flags.
func Default() Config {
	return Config{
		Addr:        "127.0.0.1:50051",
		DB:          "demo.db",
		Grace:       20 * time.Second,
		CancelGrace: 3 * time.Second,
		ForceWait:   time.Second,
		Otel:        OtelNone,

		UpgradeTimeout: 30 * time.Second,
	}
}

// Parse parses the server's arguments, program name excluded, and checks
// them. Errors and, on -h, the usage are written to output. It returns
// flag.ErrHelp when -h or -help was given, and an error naming the flag when
// a value is malformed or out of range.
func Parse(args []string, output io.Writer) (Config, error) {
	c := Default()
	fs := flag.NewFlagSet(Name, flag.ContinueOnError)
	fs.SetOutput(output)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: %s [flags]\n\nServes drainkit.demo.v1.Demo and drains on SIGTERM or SIGINT; a second signal forces the drain.\nExits 0 after a clean drain, 1 after a forced drain or an error, 2 on bad flags.\n\nFlags:\n", Name)
		fs.PrintDefaults()
	}
	fs.StringVar(&c.Addr, "addr", c.Addr, "TCP `address` to listen on; port 0 picks a free port (see the \"serving\" log record)")
	fs.StringVar(&c.DB, "db", c.DB, "SQLite database `file`, created if missing")
	fs.DurationVar(&c.ReadinessDelay, "readiness-delay", c.ReadinessDelay, "how long to keep serving after health turns NOT_SERVING, for load balancers to notice")
	fs.DurationVar(&c.Grace, "grace", c.Grace, "how long to wait, after GOAWAY, for in-flight RPCs to finish")
	fs.DurationVar(&c.CancelGrace, "cancel-grace", c.CancelGrace, "how long to wait for handlers to return after cancelling them")
	fs.DurationVar(&c.ForceWait, "force-wait", c.ForceWait, "how long to wait for handlers after the forced stop before reporting them as leaked")
	fs.BoolVar(&c.Stubborn, "stubborn", c.Stubborn, "make Sleep ignore its context, so that only a forced stop ends it")
	fs.StringVar(&c.Otel, "otel", c.Otel, "telemetry: \"none\", or \"stdout\" for spans and metrics as JSON on standard output")
	fs.DurationVar(&c.UpgradeTimeout, "upgrade-timeout", c.UpgradeTimeout, "on SIGHUP, how long to wait for the successor to serve before giving up the upgrade")
	fs.StringVar(&c.PIDFile, "pid-file", c.PIDFile, "`file` to write the process ID to once serving, for systemd's PIDFile= (none if empty)")
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		err := fmt.Errorf("unexpected argument %q: %s takes flags only", fs.Arg(0), Name)
		fmt.Fprintln(output, err)
		return Config{}, err
	}
	if err := c.Validate(); err != nil {
		fmt.Fprintln(output, err)
		return Config{}, err
	}
	return c, nil
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
	} {
		if f.d < 0 {
			return fmt.Errorf("%s %v: negative duration", f.name, f.d)
		}
	}
	if c.UpgradeTimeout <= 0 {
		return fmt.Errorf("-upgrade-timeout %v: must be positive", c.UpgradeTimeout)
	}
	if c.Otel != OtelNone && c.Otel != OtelStdout {
		return fmt.Errorf("-otel %q: want %q or %q", c.Otel, OtelNone, OtelStdout)
	}
	return nil
}

// StopHooks returns the number of stop hooks the server registers with its
// drain: one that closes the store, one that notifies systemd (a no-op
// outside systemd), and with -otel=stdout two more, one that records the
// drain and one that flushes the telemetry. The drain's budget grows with
// it, each hook call being bounded by the hook timeout.
func (c Config) StopHooks() int {
	if c.Otel == OtelStdout {
		return 4
	}
	return 2
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
