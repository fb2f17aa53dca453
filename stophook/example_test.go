package stophook_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"

	"github.com/drainkit/drainkit/stophook"
)

// store stands for a database, or a client of another service, that the
// handlers use.
type store struct{ name string }

func (s *store) Close() error {
	fmt.Println("closed", s.name)
	return nil
}

// The hooks of a server whose handlers use a database and call other
// services over HTTP, and which serves metrics beside gRPC. They are listed
// in the order the resources were opened, and given to the drain with
// drain.WithHooks(hooks...); the drain calls them in reverse order, so the
// metrics server has stopped before the database is closed.
func Example() {
	metrics := &http.Server{Addr: "127.0.0.1:9090"}
	hooks := []stophook.Hook{
		stophook.Closer("db", &store{name: "db"}),
		stophook.HTTPTransport(http.DefaultClient),
		stophook.HTTPServer(metrics),
	}

	// What the drain does at its last phase.
	for i := len(hooks) - 1; i >= 0; i-- {
		err := hooks[i].OnStop(context.Background(), stophook.Event{Phase: stophook.Cleanup})
		fmt.Printf("%v: %v\n", hooks[i], err)
	}
	// Output:
	// stophook.HTTPServer("127.0.0.1:9090"): <nil>
	// stophook.HTTPTransport(*http.Client): <nil>
	// closed db
	// stophook.Closer("db"): <nil>
}

func ExampleCloser() {
	f, err := os.CreateTemp("", "journal")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.Remove(f.Name())

	hook := stophook.Closer("journal", f)
	for _, p := range []stophook.Phase{stophook.NotReady, stophook.Graceful, stophook.Cleanup} {
		err := hook.OnStop(context.Background(), stophook.Event{Phase: p})
		_, werr := f.WriteString("entry\n")
		fmt.Printf("%v: hook %v, file closed: %v\n", p, err, errors.Is(werr, os.ErrClosed))
	}
	// Output:
	// NotReady: hook <nil>, file closed: false
	// Graceful: hook <nil>, file closed: false
	// Cleanup: hook <nil>, file closed: true
}

func ExampleHTTPServer() {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	metrics := &http.Server{Handler: http.NotFoundHandler()}
	served := make(chan error, 1)
	go func() { served <- metrics.Serve(lis) }()

	hook := stophook.HTTPServer(metrics)
	// The events a drain sends when every RPC ends within the grace period.
	for _, p := range []stophook.Phase{stophook.NotReady, stophook.Graceful, stophook.Cleanup} {
		err := hook.OnStop(context.Background(), stophook.Event{Phase: p})
		fmt.Printf("%v: %v\n", p, err)
	}
	fmt.Println("Serve:", <-served)
	// Output:
	// NotReady: <nil>
	// Graceful: <nil>
	// Cleanup: <nil>
	// Serve: http: Server closed
}
