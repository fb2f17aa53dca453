package upgrade_test

import (
	"context"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"

	"google.golang.org/grpc"

	"github.com/drainkit/drainkit/drain"
	"github.com/drainkit/drainkit/interceptors"
	"github.com/drainkit/drainkit/upgrade"
)

// A server that upgrades in place on SIGHUP: the listener comes from the
// parent in an upgrade, from systemd, or from listening; Ready is called
// once the server accepts; on SIGHUP, a successful upgrade drains this
// process, whose Serve then returns, and a failed one is logged. SIGTERM
// stops the Upgrader, and Serve drains. Under systemd, the hand-over to
// the successor is told to systemd before the drain (see
// examples/server/upgrade.go). (Not run: it starts processes.)
func Example() {
	u, err := upgrade.New(upgrade.WithReadyTimeout(30 * time.Second))
	if err != nil {
		log.Print(err)
		return
	}
	defer u.Stop()
	lis, src, err := u.Listen("tcp", "127.0.0.1:50051")
	if err != nil {
		log.Print(err)
		return
	}
	log.Printf("listener from %s", src)

	t := interceptors.NewTracker()
	srv := grpc.NewServer(t.ServerOptions()...)
	d := drain.New(srv, t)

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGHUP, syscall.SIGTERM)
	go func() {
		for sig := range signals {
			if sig != syscall.SIGHUP {
				u.Stop()
				continue
			}
			if err := u.Upgrade(); err != nil {
				log.Printf("upgrade failed, serving on: %v", err)
				continue
			}
			d.Drain(context.Background())
		}
	}()
	// In a real server, once it accepts connections (see examples/server).
	// A successor that cannot write its PID file must not serve: its
	// parent serves on.
	if err := u.Ready(); err != nil {
		log.Print(err)
		return
	}
	if err := d.Serve(lis); err != nil {
		log.Print(err)
	}
	// A successor exits after the process it replaced, which may still
	// drain (see the package documentation).
	ctx, cancel := context.WithTimeout(context.Background(), d.Budget())
	defer cancel()
	if err := u.WaitForParent(ctx); err != nil {
		log.Print(err)
	}
}
