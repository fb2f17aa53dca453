package interceptors_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/testdata"

	"github.com/drainkit/drainkit/interceptors"
)

const duplexMethod = "/grpc.testing.TestService/FullDuplexCall"

// retireService's FullDuplexCall waits in Recv, as a subscription whose
// client sends nothing, and reports its context, whether Retiring was
// closed by the time Recv returned, and what Recv returned.
type retireService struct {
	testgrpc.UnimplementedTestServiceServer
	started chan context.Context
	ended   chan retireEnd
}

type retireEnd struct {
	warned bool // Retiring's channel was closed when Recv returned
	cause  error
}

func (s *retireService) FullDuplexCall(stream testgrpc.TestService_FullDuplexCallServer) error {
	ctx := stream.Context()
	s.started <- ctx
	_, err := stream.Recv()
	warned := false
	select {
	case <-interceptors.Retiring(ctx):
		warned = true
	default:
	}
	s.ended <- retireEnd{warned: warned, cause: context.Cause(ctx)}
	return err
}

// serveRetire serves a retireService tracked by tr on a loopback TCP port,
// with opts, and returns a client of it.
func serveRetire(t *testing.T, tr *interceptors.Tracker, opts ...grpc.ServerOption) (testgrpc.TestServiceClient, *retireService) {
	t.Helper()
	return serveRetireTo(t, tr, insecure.NewCredentials(), opts...)
}

// serveRetireTo is serveRetire with the client's credentials.
func serveRetireTo(t *testing.T, tr *interceptors.Tracker, dialCreds credentials.TransportCredentials, opts ...grpc.ServerOption) (testgrpc.TestServiceClient, *retireService) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("net.Listen() = %v", err)
	}
	srv := grpc.NewServer(append(tr.ServerOptions(), opts...)...)
	svc := &retireService{started: make(chan context.Context, 1), ended: make(chan retireEnd, 1)}
	testgrpc.RegisterTestServiceServer(srv, svc)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(dialCreds))
	if err != nil {
		t.Fatalf("grpc.NewClient() = %v", err)
	}
	t.Cleanup(func() {
		cc.Close()
		srv.Stop()
		<-served
	})
	return testgrpc.NewTestServiceClient(cc), svc
}

// retiredFor returns the MetadataRetired of err's drainkit ErrorInfo, and
// whether err is codes.Unavailable with drainkit's HandlerCancelled mark.
func retiredFor(err error) (string, bool) {
	s := status.Convert(err)
	for _, d := range s.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == interceptors.ErrorInfoDomain {
			return info.GetMetadata()[interceptors.MetadataRetired],
				s.Code() == codes.Unavailable && info.GetMetadata()[interceptors.MetadataHandler] == interceptors.HandlerCancelled
		}
	}
	return "", false
}

func TestMaxStreamAgeEndsStreamWithResumableStatus(t *testing.T) {
	const age = 200 * time.Millisecond
	tr := interceptors.NewTracker(interceptors.WithLongLived(duplexMethod), interceptors.WithMaxStreamAge(age))
	c, svc := serveRetire(t, tr)
	ctx, cancel := context.WithTimeout(context.Background(), statusTestTimeout)
	defer cancel()
	start := time.Now()
	stream, err := c.FullDuplexCall(ctx)
	if err != nil {
		t.Fatalf("FullDuplexCall() = %v", err)
	}
	hctx := <-svc.started
	if interceptors.Retiring(hctx) == nil {
		t.Fatal("Retiring() = nil for a long-lived stream with a maximum age")
	}
	_, err = stream.Recv()
	lived := time.Since(start)
	why, marked := retiredFor(err)
	if !marked || why != interceptors.RetiredStreamAge {
		t.Fatalf("Recv() = %v, want codes.Unavailable marked cancelled and retired %q", err, interceptors.RetiredStreamAge)
	}
	if msg := status.Convert(err).Message(); msg != interceptors.ErrStreamAge.Error() {
		t.Errorf("message = %q, want %q", msg, interceptors.ErrStreamAge.Error())
	}
	if lived < age*9/10 {
		t.Errorf("stream lived %v, want at least %v", lived, age*9/10)
	}
	end := <-svc.ended
	if !end.warned || end.cause != interceptors.ErrStreamAge {
		t.Errorf("handler saw Retiring closed %v, cause %v; want true, %v", end.warned, end.cause, interceptors.ErrStreamAge)
	}
}

func TestRetiringIsNilWithoutRetirement(t *testing.T) {
	tests := []struct {
		name string
		opts []interceptors.Option
	}{
		{"long-lived without age", []interceptors.Option{interceptors.WithLongLived(duplexMethod)}},
		{"age but not long-lived", []interceptors.Option{interceptors.WithMaxStreamAge(time.Hour)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, svc := serveRetire(t, interceptors.NewTracker(tt.opts...))
			ctx, cancel := context.WithTimeout(context.Background(), statusTestTimeout)
			defer cancel()
			stream, err := c.FullDuplexCall(ctx)
			if err != nil {
				t.Fatalf("FullDuplexCall() = %v", err)
			}
			if ch := interceptors.Retiring(<-svc.started); ch != nil {
				t.Errorf("Retiring() = %v, want nil", ch)
			}
			stream.CloseSend()
			<-svc.ended
		})
	}
	if ch := interceptors.Retiring(context.Background()); ch != nil {
		t.Errorf("Retiring(context.Background()) = %v, want nil", ch)
	}
}

// TestConnectionAgeEndsLongLivedStreams ages a connection whose grace
// outlasts the test: with Tracker.Credentials its long-lived stream ends at
// the GOAWAY, with the retirement status; without, it is cut at the end of
// the grace with a transport error.
func TestConnectionAgeEndsLongLivedStreams(t *testing.T) {
	const maxAge = 300 * time.Millisecond
	tests := []struct {
		name    string
		creds   bool
		tls     bool
		grace   time.Duration
		retired bool // the stream ends with the retirement status
	}{
		{"drainkit", true, false, time.Minute, true},
		{"drainkit over TLS", true, true, time.Minute, true},
		{"plain keepalive", false, false, 500 * time.Millisecond, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := interceptors.NewTracker(interceptors.WithLongLived(duplexMethod))
			opts := []grpc.ServerOption{grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionAge: maxAge, MaxConnectionAgeGrace: tt.grace})}
			serverCreds, dialCreds := insecure.NewCredentials(), insecure.NewCredentials()
			if tt.tls {
				var err error
				if serverCreds, err = credentials.NewServerTLSFromFile(testdata.Path("x509/server1_cert.pem"), testdata.Path("x509/server1_key.pem")); err != nil {
					t.Fatal(err)
				}
				if dialCreds, err = credentials.NewClientTLSFromFile(testdata.Path("x509/server_ca_cert.pem"), "x.test.example.com"); err != nil {
					t.Fatal(err)
				}
			}
			if tt.creds {
				opts = append(opts, grpc.Creds(tr.Credentials(serverCreds)))
			}
			c, svc := serveRetireTo(t, tr, dialCreds, opts...)
			ctx, cancel := context.WithTimeout(context.Background(), statusTestTimeout)
			defer cancel()
			stream, err := c.FullDuplexCall(ctx)
			if err != nil {
				t.Fatalf("FullDuplexCall() = %v", err)
			}
			<-svc.started
			start := time.Now()
			_, err = stream.Recv()
			why, marked := retiredFor(err)
			if !tt.retired {
				if marked || status.Code(err) != codes.Unavailable {
					t.Fatalf("Recv() = %v, want a transport's codes.Unavailable", err)
				}
				return
			}
			if !marked || why != interceptors.RetiredConnectionAge {
				t.Fatalf("Recv() = %v, want codes.Unavailable marked cancelled and retired %q", err, interceptors.RetiredConnectionAge)
			}
			// The GOAWAY comes after maxAge±10% from the connection's
			// start; the grace would end a minute later.
			if waited := time.Since(start); waited > statusTestTimeout/2 {
				t.Errorf("stream ended %v after it started, want it at the GOAWAY, about %v", waited, maxAge)
			}
			end := <-svc.ended
			if !end.warned || end.cause != interceptors.ErrConnectionAge {
				t.Errorf("handler saw Retiring closed %v, cause %v; want true, %v", end.warned, end.cause, interceptors.ErrConnectionAge)
			}
		})
	}
}

func TestAgeOptionsValidation(t *testing.T) {
	tests := []struct {
		name string
		f    func()
		want string
	}{
		{"negative stream age", func() { interceptors.WithMaxStreamAge(-time.Second) }, "interceptors: WithMaxStreamAge(-1s): negative duration"},
		{"nanosecond stream age", func() { interceptors.WithMaxStreamAge(5) }, "interceptors: WithMaxStreamAge(5ns): below MinStreamAge (100ms)"},
		{"millisecond stream age", func() { interceptors.WithMaxStreamAge(time.Millisecond) }, "interceptors: WithMaxStreamAge(1ms): below MinStreamAge (100ms)"},
		{"minimum stream age", func() { interceptors.WithMaxStreamAge(interceptors.MinStreamAge) }, ""},
		{"nil credentials", func() { interceptors.NewTracker().Credentials(nil) }, "interceptors: Tracker.Credentials: nil credentials"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				msg, _ := recover().(string)
				if tt.want == "" {
					if msg != "" {
						t.Errorf("panic = %q, want none", msg)
					}
					return
				}
				if !strings.Contains(msg, tt.want) {
					t.Errorf("panic = %q, want %q", msg, tt.want)
				}
			}()
			tt.f()
		})
	}
}
