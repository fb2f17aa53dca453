package client_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/drainkit/drainkit/client"
	"github.com/drainkit/drainkit/examples/demopb"
	"github.com/drainkit/drainkit/interceptors"
)

// This example dials the demo server with the options its callers need:
// Echo may run twice, Watch resumes after the last tick received.
func ExampleDialOptions() {
	opts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig": [{"round_robin": {}}]}`),
	}, client.DialOptions(
		client.WithIdempotent(demopb.Demo_Echo_FullMethodName),
		client.WithResume(demopb.Demo_Watch_FullMethodName, func(_ *demopb.WatchRequest, last *timestamppb.Timestamp) *demopb.WatchRequest {
			return &demopb.WatchRequest{After: last}
		}),
	)...)
	cc, err := client.NewClient("dns:///demo.example:50051", opts...)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer cc.Close()
	// A Watch of demopb.NewDemoClient(cc) now rides through the drains of
	// the servers behind demo.example, with no tick lost or repeated.
}

// A call refused by a draining server carries the mark IsDraining reads.
func ExampleIsDraining() {
	t := interceptors.NewTracker()
	srv := grpc.NewServer(t.ServerOptions()...)
	demopb.RegisterDemoServer(srv, demopb.UnimplementedDemoServer{})
	lis := bufconn.Listen(1 << 20)
	go srv.Serve(lis)
	defer srv.Stop()
	cc, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer cc.Close()

	t.Reject(nil) // as a drain does
	_, err = demopb.NewDemoClient(cc).Echo(context.Background(), wrapperspb.String("hello"))
	fmt.Println(status.Code(err), client.IsDraining(err))
	// Output:
	// Unavailable true
}

// Open lists the ClientConns that NewClient made and that are still open.
func ExampleOpen() {
	cc, err := client.NewClient("passthrough:///example", grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, c := range client.Open() {
		fmt.Println("open:", c.Target)
	}
	cc.Close()
	fmt.Println("open after Close:", len(client.Open()))
	// Output:
	// open: passthrough:///example
	// open after Close: 0
}

// A Watchdog logs at WARN, once per episode, each ClientConn made by
// client.NewClient that stays stuck connecting, with where it was made. It
// runs until its context ends, on one goroutine for every conn.
func ExampleWatchdog() {
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	go client.Watchdog{Logger: logger}.Run(ctx) // looks every 5s, reports conns stuck 15s or more

	// The program's work, with conns made by client.NewClient.
}
