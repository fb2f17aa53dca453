// Package servetest serves a grpc.Server for tests, on grpc's own
// transport over bufconn or through grpc.Server.ServeHTTP on a loopback
// HTTP/2 server, and returns a client of it.
package servetest

import (
	"context"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
)

// Serve serves srv on grpc's own transport, or through ServeHTTP if
// serveHTTP is set, and returns a client of it made with opts, over
// insecure credentials. The client and the server are stopped at the end
// of the test.
func Serve(t testing.TB, srv *grpc.Server, serveHTTP bool, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	opts = append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)
	var target string
	var stop func()
	if serveHTTP {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("net.Listen() = %v", err)
		}
		var protocols http.Protocols
		protocols.SetUnencryptedHTTP2(true)
		hs := &http.Server{Protocols: &protocols, Handler: srv}
		served := make(chan error, 1)
		go func() { served <- hs.Serve(lis) }()
		target, stop = lis.Addr().String(), func() {
			hs.Close()
			<-served
			srv.Stop()
		}
	} else {
		lis := bufconn.Listen(1 << 20)
		served := make(chan error, 1)
		go func() { served <- srv.Serve(lis) }()
		target = "passthrough:///bufnet"
		opts = append(opts, grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }))
		stop = func() {
			srv.Stop()
			<-served
		}
	}
	cc, err := grpc.NewClient(target, opts...)
	if err != nil {
		stop()
		t.Fatalf("grpc.NewClient() = %v", err)
	}
	t.Cleanup(func() {
		cc.Close()
		stop()
	})
	return cc
}

// Goroutines counts the goroutines whose stack, as runtime.Stack prints
// it, holds every one of parts. Tests find with it a handler blocked where
// no event says so: in grpc-go's wait for a message
// ("(*recvBufferReader).read") or for flow control ("(*writeQuota).get").
func Goroutines(parts ...string) int {
	buf := make([]byte, 1<<20)
	n := runtime.Stack(buf, true)
	count := 0
	for _, g := range strings.Split(string(buf[:n]), "\n\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(g, p)
		}
		if all {
			count++
		}
	}
	return count
}
