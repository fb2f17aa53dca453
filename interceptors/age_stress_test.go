package interceptors_test

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/stats"

	"github.com/drainkit/drainkit/interceptors"
)

// waitService's FullDuplexCall waits in Recv, as a subscription whose
// client sends nothing.
type waitService struct {
	testgrpc.UnimplementedTestServiceServer
}

func (waitService) FullDuplexCall(stream testgrpc.TestService_FullDuplexCallServer) error {
	_, err := stream.Recv()
	return err
}

// retiredEnds is a stats handler that counts the RPCs that ended with a
// retirement's status, as stats handlers (otelgrpc) report them.
type retiredEnds struct {
	streamAge, connAge, other atomic.Int64
}

func (h *retiredEnds) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (h *retiredEnds) HandleRPC(_ context.Context, s stats.RPCStats) {
	end, ok := s.(*stats.End)
	if !ok {
		return
	}
	switch why, _ := retiredFor(end.Error); why {
	case interceptors.RetiredStreamAge:
		h.streamAge.Add(1)
	case interceptors.RetiredConnectionAge:
		h.connAge.Add(1)
	default:
		h.other.Add(1)
	}
}
func (h *retiredEnds) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (h *retiredEnds) HandleConn(context.Context, stats.ConnStats)                       {}

// TestRetirementUnderChurn holds long-lived streams on several connections
// that age, each stream with its own age, reopening every stream as soon
// as it is retired; a stats handler watches (run it with
// GRPC_BINARY_LOG_FILTER='*' too). Every attempt must end retired, for its
// age or its connection's, and the stats handler must report for each
// what the client got.
func TestRetirementUnderChurn(t *testing.T) {
	const (
		conns   = 4
		streams = 10 // per connection
		churn   = 1500 * time.Millisecond
	)
	tr := interceptors.NewTracker(interceptors.WithLongLived(duplexMethod), interceptors.WithMaxStreamAge(150*time.Millisecond))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("net.Listen() = %v", err)
	}
	sh := &retiredEnds{}
	srv := grpc.NewServer(append(tr.ServerOptions(),
		grpc.Creds(tr.Credentials(insecure.NewCredentials())),
		grpc.StatsHandler(sh),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionAge: 200 * time.Millisecond, MaxConnectionAgeGrace: time.Minute}))...)
	testgrpc.RegisterTestServiceServer(srv, waitService{})
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()

	var streamAge, connAge atomic.Int64
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(context.Background(), statusTestTimeout)
	defer cancel()
	stop := time.Now().Add(churn)
	for range conns {
		cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatalf("grpc.NewClient() = %v", err)
		}
		defer cc.Close()
		c := testgrpc.NewTestServiceClient(cc)
		for range streams {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(stop) {
					stream, err := c.FullDuplexCall(ctx)
					if err != nil {
						t.Errorf("FullDuplexCall() = %v", err)
						return
					}
					_, err = stream.Recv()
					switch why, marked := retiredFor(err); {
					case marked && why == interceptors.RetiredStreamAge:
						streamAge.Add(1)
					case marked && why == interceptors.RetiredConnectionAge:
						connAge.Add(1)
					default:
						t.Errorf("Recv() = %v, want a retirement's status", err)
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	srv.GracefulStop()
	<-served
	t.Logf("retired for their age: %d, for their connection's: %d", streamAge.Load(), connAge.Load())
	if streamAge.Load() == 0 || connAge.Load() == 0 {
		t.Errorf("retired %d streams for their age and %d for their connection's, want both", streamAge.Load(), connAge.Load())
	}
	if got, want := sh.streamAge.Load(), streamAge.Load(); got != want {
		t.Errorf("stats handler saw %d retired for their age, the clients %d", got, want)
	}
	if got, want := sh.connAge.Load(), connAge.Load(); got != want {
		t.Errorf("stats handler saw %d retired for their connection's age, the clients %d", got, want)
	}
	if n := sh.other.Load(); n != 0 {
		t.Errorf("stats handler saw %d RPCs end otherwise", n)
	}
}
