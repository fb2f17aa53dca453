package client_test

import (
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/drainkit/drainkit/client"
	"github.com/drainkit/drainkit/examples/demopb"
	"github.com/drainkit/drainkit/internal/readmesnippet"
)

// dialDemo is the snippet of README.md's Clients section, word for word:
// TestREADMEClientSnippet fails when the two differ, and the compiler when
// the snippet does not compile.
func dialDemo(target string, creds credentials.TransportCredentials) (*grpc.ClientConn, error) {
	opts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(creds),
	}, client.DialOptions(
		// Echo may run twice: retried even when a drain cut it.
		client.WithIdempotent(demopb.Demo_Echo_FullMethodName),
		// Watch goes on on another server, after the last tick received.
		client.WithResume(demopb.Demo_Watch_FullMethodName, func(_ *demopb.WatchRequest, last *timestamppb.Timestamp) *demopb.WatchRequest {
			return &demopb.WatchRequest{After: last}
		}),
	)...)
	return client.NewClient(target, opts...)
}

func TestREADMEClientSnippet(t *testing.T) {
	readmesnippet.Check(t, "../README.md", "readme_test.go", "client/readme_test.go", "dialDemo")

	// And the conn it makes is in the registry until closed.
	cc, err := dialDemo("passthrough:///demo", insecure.NewCredentials())
	if err != nil {
		t.Fatalf("dialDemo() = %v", err)
	}
	if open := client.Open(); len(open) != 1 || open[0].Target != "passthrough:///demo" {
		t.Errorf("Open() = %v, want the conn of dialDemo", open)
	}
	cc.Close()
}
