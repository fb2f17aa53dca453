package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/drainkit/drainkit/drain"
	"github.com/drainkit/drainkit/examples/demopb"
	"github.com/drainkit/drainkit/examples/internal/demoflags"
	"github.com/drainkit/drainkit/interceptors"
	"github.com/drainkit/drainkit/stophook"
)

// The exit statuses.
const (
	exitOK    = 0 // clean drain
	exitError = 1 // forced drain, or any error
	exitUsage = 2 // bad flags, or a bad DRAINKIT_DEMO_DRAIN_CPUPROFILE
)

// openTimeout bounds the opening of the store.
const openTimeout = 10 * time.Second

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	// Caught from the first line: a SIGTERM during start-up ends it in
	// order, and the drain then runs at once.
	sigs := drain.CatchSignals()
	defer sigs.Stop()
	// SIGHUP upgrades the server in place, once it serves; until then it
	// is refused, with a record, rather than fatal.
	upgrades := catchUpgrades()
	defer upgrades.stop()
	cfg, err := demoflags.ParseCommandLine(args, os.Stdout, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		return exitUsage
	}
	cfg.Notify = os.Getenv("NOTIFY_SOCKET") != ""
	logger, err := newLogger(cfg.Log, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return exitUsage
	}
	// Taken now, before an upgrade can start a successor; its file is
	// created once the server listens.
	profile := &drainProfile{path: takeDrainProfilePath()}
	defer func() {
		if err := profile.finish(); err != nil {
			logger.Error("profiling the drain", "err", err)
		}
	}()
	err = serve(cfg, logger, sigs, upgrades, profile)
	// Before the exit record: a successor may wait here for the server it
	// replaced.
	upgrades.stop()
	var usage *usageError
	switch {
	case errors.As(err, &usage):
		logger.Error("start-up failed", "err", err)
		return exitUsage
	case err == nil:
		logger.Info("exit", "code", exitOK)
		return exitOK
	case errors.Is(err, drain.ErrForced):
		logger.Warn("exit", "code", exitError, "err", err)
	default:
		logger.Error("exit", "code", exitError, "err", err)
	}
	return exitError
}

// serve runs the server until it is drained, and returns the drain's error.
// A signal caught by sigs during start-up ends it: serve returns nil. It
// starts profile once it listens.
func serve(cfg demoflags.Config, logger *slog.Logger, sigs *drain.Signals, upgrades *upgrades, profile *drainProfile) error {
	// The port first: when it is taken, nothing else is done or created.
	lis, source, err := upgrades.listen(cfg)
	if err != nil {
		return err
	}
	defer lis.Close() // for the paths that return before Serve
	if err := profile.start(sigs.Context()); err != nil {
		return err
	}

	logger.Info("starting", "db", cfg.DB)
	db, err := openStoreUnless(sigs.Context(), cfg.DB)
	if cause := context.Cause(sigs.Context()); cause != nil {
		logger.Info("start-up interrupted", "cause", cause.Error())
		return nil
	}
	if err != nil {
		return err
	}
	// The drain closes db once no handler runs; closing it again is a
	// no-op, for the paths that return before a drain.
	defer db.Close()

	tracker := interceptors.NewTracker(
		interceptors.WithLongLived(demopb.Demo_Watch_FullMethodName, demopb.Demo_Chat_FullMethodName),
		interceptors.WithMaxStreamAge(cfg.MaxStreamAge),
	)
	tel, err := newTelemetry(cfg.Otel, os.Stdout)
	if err != nil {
		return err
	}

	onPanic := recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		logger.ErrorContext(ctx, "handler panicked", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
		return status.Error(codes.Internal, "internal error")
	})
	// The Tracker's options come first: chains keep the order of their
	// options, so the Tracker is the outermost interceptor and sees every
	// call, even one that recovery ends.
	opts := append(tracker.ServerOptions(),
		grpc.ChainUnaryInterceptor(recovery.UnaryServerInterceptor(onPanic)),
		grpc.ChainStreamInterceptor(recovery.StreamServerInterceptor(onPanic)),
	)
	opts = append(opts, keepaliveOptions(tracker, cfg.Grace, cfg.MaxConnectionAge)...)
	if cfg.RetireAgedStreams {
		// The Tracker reads what grpc writes on each connection, to end
		// its long-lived streams as soon as grpc renews it for its age.
		opts = append(opts, grpc.Creds(tracker.Credentials(insecure.NewCredentials())))
	}
	opts = append(opts, tel.serverOptions...)
	srv := grpc.NewServer(opts...)

	demopb.RegisterDemoServer(srv, &demoService{db: db, stubborn: cfg.Stubborn})
	h := health.NewServer()
	h.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	h.SetServingStatus(demopb.Demo_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, h)
	reflection.Register(srv)

	// Hooks run in reverse order of registration: the drain's span is
	// recorded first, the store closed next, the telemetry flushed last.
	var hooks []stophook.Hook
	hooks = append(hooks, tel.flushHooks...)
	hooks = append(hooks, stophook.Closer("sqlite", db))
	hooks = append(hooks, tel.recordHooks...)
	var d *drain.Drainer
	notifier := newNotifier(&d, logger)
	if cfg.Notify {
		// Under systemd: registered last, so that systemd hears of each
		// phase first. The hook also stops the Upgrader as the drain
		// begins.
		hooks = append(hooks, upgrades.hook(notifier))
	} else {
		// Elsewhere the notifier has no one to tell, and its hook would
		// only add its timeout to the budget: the Upgrader is stopped at
		// the first signal instead, as the drain begins. (A drain begun
		// by an upgrade follows its success, which closed the Upgrader's
		// copies of the socket.)
		stop := context.AfterFunc(sigs.Context(), upgrades.u.Stop)
		defer stop()
	}
	if len(hooks) != cfg.StopHooks() {
		return fmt.Errorf("%d stop hooks, but demoflags.Config.StopHooks says %d", len(hooks), cfg.StopHooks())
	}
	d = drain.New(srv, tracker, append(cfg.DrainOptions(hooks...),
		drain.WithHealth(h),
		drain.WithLogger(logger),
		drain.WithSignals(sigs),
	)...)

	upgrades.start(d, notifier, logger)
	// "serving" is logged at the first Accept: by then Serve handles
	// SIGTERM and SIGINT, so whoever reads the record may signal at once.
	return d.Serve(&announcingListener{Listener: lis, announce: func() error {
		if err := upgrades.ready(notifier, logger, lis.Addr(), source); err != nil {
			return err
		}
		logger.Info("serving",
			"addr", lis.Addr().String(),
			"listener", string(source),
			"pid", os.Getpid(),
			"db", cfg.DB,
			"stubborn", cfg.Stubborn,
			"otel", cfg.Otel,
			"drain_budget", d.Budget().String(),
		)
		return nil
	}})
}

// openStoreUnless opens the store at path within openTimeout, unless stop
// ends first: then it returns at once, and the store, if it opens after
// all, is closed. SQLite's wait for a lock held by another process does
// not heed a context, hence the goroutine.
func openStoreUnless(stop context.Context, path string) (*sql.DB, error) {
	ctx, cancel := context.WithTimeout(stop, openTimeout)
	type opened struct {
		db  *sql.DB
		err error
	}
	result := make(chan opened, 1)
	go func() {
		defer cancel()
		db, err := openStore(ctx, path)
		result <- opened{db, err}
	}()
	select {
	case r := <-result:
		return r.db, r.err
	case <-stop.Done():
		go func() {
			if r := <-result; r.db != nil {
				r.db.Close()
			}
		}()
		return nil, context.Cause(stop)
	}
}

// announcingListener calls announce before its first Accept. If announce
// fails, Accept returns its error, and Serve with it: the server does not
// serve.
type announcingListener struct {
	net.Listener
	once     sync.Once
	err      error
	announce func() error
}

func (l *announcingListener) Accept() (net.Conn, error) {
	l.once.Do(func() { l.err = l.announce() })
	if l.err != nil {
		return nil, l.err
	}
	return l.Listener.Accept()
}
