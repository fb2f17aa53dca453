package systemd_test

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"

	"github.com/drainkit/drainkit/drain"
	"github.com/drainkit/drainkit/interceptors"
	"github.com/drainkit/drainkit/systemd"
)

// Outside systemd, Listen listens on the address it is given; under
// systemd with a .socket unit, it returns the socket systemd passed, and
// the source says so.
func ExampleListen() {
	lis, src, err := systemd.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer lis.Close()
	fmt.Println(src)
	// Output: listen
}

// A server tells systemd that it serves, and drains with a Notifier among
// its hooks: registered last, it is the first to hear of each phase.
// Outside systemd, as here, it does nothing.
func ExampleNotifier() {
	t := interceptors.NewTracker()
	srv := grpc.NewServer(t.ServerOptions()...)
	var d *drain.Drainer
	n := systemd.NewNotifier(systemd.WithStopBudget(func() time.Duration { return d.Budget() }))
	d = drain.New(srv, t, drain.WithHooks(n))

	fmt.Println(n.Ready("serving"))
	_, err := d.Drain(context.Background())
	fmt.Println(err)
	// Output:
	// <nil>
	// <nil>
}
