package client_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	"github.com/drainkit/drainkit/client"
	"github.com/drainkit/drainkit/examples/demopb"
	"github.com/drainkit/drainkit/interceptors"
)

// TestYoungRetirementsAreCounted serves Watch behind a Tracker that ends
// the long-lived streams of aged connections, on a server whose
// connections age within milliseconds (a misconfigured MaxConnectionAge):
// every attempt is retired young. A retirement is free only for a stream
// that lived; these must count against WithMax, so that the caller gets an
// error instead of a stream reopened without end.
func TestYoungRetirementsAreCounted(t *testing.T) {
	const maxAttempts = 3
	tr := interceptors.NewTracker(interceptors.WithLongLived(watchMethod))
	// On TCP: the Tracker finds a connection's streams by its addresses,
	// which all bufconn connections share, and the aged connection is
	// still open when its successor's stream begins.
	b := serveBackendOn(t, listenTCP(t), "aged", tr, false,
		grpc.Creds(tr.Credentials(insecure.NewCredentials())),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionAge: 5 * time.Millisecond, MaxConnectionAgeGrace: time.Minute}))
	c := demopb.NewDemoClient(dialBackends(t, []*backend{b}, client.DialOptions(resumeWatch, client.WithMax(maxAttempts))...))

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stream, err := c.Watch(ctx, &demopb.WatchRequest{})
	if err != nil {
		t.Fatalf("Watch() = %v", err)
	}
	for {
		if _, err = stream.Recv(); err != nil {
			break
		}
	}
	if !client.IsDraining(err) {
		t.Errorf("Recv() = %v, want the last retirement", err)
	}
	if n := b.svc.count(watchMethod); n > maxAttempts {
		t.Errorf("Watch ran %d times, want at most WithMax(%d)", n, maxAttempts)
	}
}
