package drain_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/drainkit/drainkit/drain"
	"github.com/drainkit/drainkit/interceptors"
	"github.com/drainkit/drainkit/stophook"
)

// httpPhases returns a hook that sends the phase of every event it gets on
// the returned channel.
func httpPhases() (stophook.Hook, <-chan stophook.Phase) {
	phases := make(chan stophook.Phase, 10)
	return stophook.Func(func(_ context.Context, e stophook.Event) error {
		phases <- e.Phase
		return nil
	}), phases
}

// httpWaitPhase reads phases until p.
func httpWaitPhase(t *testing.T, phases <-chan stophook.Phase, p stophook.Phase) {
	t.Helper()
	for receive(t, phases, "event "+p.String()) != p {
	}
}

type httpResult struct {
	resp *http.Response
	body string
	err  error
}

// TestHTTPServerDrainsBesideGRPC drains an HTTP server on a port of its own
// with the gRPC server, through stophook.HTTPServer: at Graceful it refuses
// new connections, while the request in progress completes, and the drain
// waits for it.
func TestHTTPServerDrainsBesideGRPC(t *testing.T) {
	grpcStarted, grpcRelease := make(chan struct{}, 1), make(chan struct{})
	tr := interceptors.NewTracker()
	srv := serveNewServer(tr, &serveService{unary: func(ctx context.Context) error {
		grpcStarted <- struct{}{}
		select {
		case <-grpcRelease:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}}, health.NewServer())
	lis := serveListenLocal(t)
	grpcServed := serveStart(srv, lis)
	t.Cleanup(srv.Stop)

	httpStarted, httpRelease := make(chan struct{}, 1), make(chan struct{})
	httpSrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		httpStarted <- struct{}{}
		<-httpRelease
		io.WriteString(w, "done")
	})}
	hlis := serveListenLocal(t)
	httpServed := make(chan error, 1)
	go func() { httpServed <- httpSrv.Serve(hlis) }()
	t.Cleanup(func() { httpSrv.Close() })

	recorder, phases := httpPhases()
	// Hooks run in reverse order: the recorder sees Graceful once the HTTP
	// server's hook has returned, that is once its listener is closed.
	d := drain.New(srv, tr, drain.WithGracePeriod(defaultTestTimeout),
		drain.WithHooks(recorder, stophook.HTTPServer(httpSrv)))

	cc := serveDialAddr(t, lis.Addr().String())
	call := make(chan error, 1)
	go func() {
		_, err := testgrpc.NewTestServiceClient(cc).UnaryCall(context.Background(), &testgrpc.SimpleRequest{})
		call <- err
	}()
	receive(t, grpcStarted, "the gRPC handler to start")

	transport := &http.Transport{}
	t.Cleanup(transport.CloseIdleConnections)
	request := make(chan httpResult, 1)
	go func() {
		var r httpResult
		r.resp, r.err = (&http.Client{Transport: transport}).Get("http://" + hlis.Addr().String())
		if r.err == nil {
			b, err := io.ReadAll(r.resp.Body)
			r.body, r.err = string(b), err
			r.resp.Body.Close()
		}
		request <- r
	}()
	receive(t, httpStarted, "the HTTP handler to start")

	drained := make(chan error, 1)
	var report drain.Report
	go func() {
		var err error
		report, err = d.Drain(context.Background())
		drained <- err
	}()
	httpWaitPhase(t, phases, stophook.Graceful)

	if conn, err := net.DialTimeout("tcp", hlis.Addr().String(), defaultTestTimeout); err == nil {
		conn.Close()
		t.Errorf("new connection to the HTTP server after Graceful: accepted, want refused")
	}
	select {
	case r := <-request:
		t.Fatalf("HTTP request in progress ended at Graceful: %+v, want it to go on", r)
	case err := <-drained:
		t.Fatalf("Drain() = %v with the HTTP request and the gRPC call in progress, want it to wait", err)
	default:
	}

	close(httpRelease)
	r := receive(t, request, "the HTTP request")
	if r.err != nil || r.resp.StatusCode != http.StatusOK || r.body != "done" {
		t.Fatalf("HTTP request in progress at Graceful = %v, %v, %q, want 200 OK, \"done\"", r.resp, r.err, r.body)
	}
	if !r.resp.Close {
		t.Errorf("response to the HTTP request in progress at Graceful has no \"Connection: close\"")
	}
	if err := receive(t, httpServed, "http.Server.Serve to return"); !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("http.Server.Serve() = %v, want %v", err, http.ErrServerClosed)
	}

	close(grpcRelease)
	if err := receive(t, call, "the gRPC call"); err != nil {
		t.Errorf("gRPC call in progress = %v, want nil", err)
	}
	if err := receive(t, drained, "Drain to return"); err != nil {
		t.Errorf("Drain() = %v, want nil", err)
	}
	if want := []stophook.Phase{stophook.NotReady, stophook.Graceful, stophook.Cleanup}; !slices.Equal(phaseNames(report), want) || report.Forced {
		t.Errorf("Drain() report phases = %v, forced %t, want %v, not forced", phaseNames(report), report.Forced, want)
	}
	if err := receive(t, grpcServed, "grpc.Server.Serve to return"); err != nil {
		t.Errorf("grpc.Server.Serve() = %v, want nil", err)
	}
}

// httpCallDuration is how long the unary handler of
// TestServeHTTPDrainVersusGracefulStop works, ignoring its context:
// long enough for the test to begin the drain, or GracefulStop, while it
// runs, on a loaded machine.
const httpCallDuration = 2 * time.Second

// TestServeHTTPDrainVersusGracefulStop serves gRPC through ServeHTTP on an
// http.Server that also answers plain HTTP on the same port, over
// unencrypted HTTP/2, and stops it while a unary call is running and a
// health Watch is open. GracefulStop closes the ServeHTTP transports at
// once and cuts the call; Drain lets it finish, ends the Watch with
// codes.Unavailable, and shuts the HTTP server down with
// stophook.HTTPServer.
func TestServeHTTPDrainVersusGracefulStop(t *testing.T) {
	for _, tc := range []struct {
		name       string
		useDrain   bool
		wantCallOK bool
	}{
		{name: "GracefulStop", useDrain: false, wantCallOK: false},
		{name: "Drain", useDrain: true, wantCallOK: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			started := make(chan struct{}, 1)
			tr := interceptors.NewTracker()
			hs := health.NewServer()
			grpcSrv := serveNewServer(tr, &serveService{unary: func(context.Context) error {
				started <- struct{}{}
				time.Sleep(httpCallDuration) // work that ignores the context
				return nil
			}}, hs)
			t.Cleanup(grpcSrv.Stop)

			var protocols http.Protocols
			protocols.SetHTTP1(true)
			protocols.SetUnencryptedHTTP2(true)
			httpSrv := &http.Server{
				Protocols: &protocols,
				Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
						grpcSrv.ServeHTTP(w, r)
						return
					}
					io.WriteString(w, "plain HTTP")
				}),
			}
			lis := serveListenLocal(t)
			httpServed := make(chan error, 1)
			go func() { httpServed <- httpSrv.Serve(lis) }()
			t.Cleanup(func() { httpSrv.Close() })

			cc := serveDialAddr(t, lis.Addr().String())
			serveWaitReady(t, cc)
			watchCtx, cancelWatch := context.WithCancel(context.Background())
			t.Cleanup(cancelWatch)
			watch, err := healthpb.NewHealthClient(cc).Watch(watchCtx, &healthpb.HealthCheckRequest{})
			if err != nil {
				t.Fatalf("Watch() = %v", err)
			}
			if m, err := watch.Recv(); err != nil || m.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				t.Fatalf("Watch().Recv() = %v, %v, want SERVING", m, err)
			}
			watchEnd := make(chan error, 1)
			go func() {
				for {
					if _, err := watch.Recv(); err != nil {
						watchEnd <- err
						return
					}
				}
			}()
			call := make(chan error, 1)
			go func() {
				_, err := testgrpc.NewTestServiceClient(cc).UnaryCall(context.Background(), &testgrpc.SimpleRequest{})
				call <- err
			}()
			receive(t, started, "the unary handler to start")

			if !tc.useDrain {
				grpcSrv.GracefulStop()
				err := receive(t, call, "the unary call")
				t.Logf("unary call in progress at GracefulStop: %v", err)
				if (err == nil) != tc.wantCallOK {
					t.Errorf("unary call in progress at GracefulStop = %v, want success %t", err, tc.wantCallOK)
				}
				return
			}

			d := drain.New(grpcSrv, tr, drain.WithGracePeriod(defaultTestTimeout),
				drain.WithHealth(hs), drain.WithHooks(stophook.HTTPServer(httpSrv)))
			r, err := d.Drain(context.Background())
			if err != nil || r.Forced {
				t.Errorf("Drain() = forced %t, %v, want a clean drain", r.Forced, err)
			}
			// With no readiness delay, NotReady already ends the Watch,
			// which may or may not have returned when Graceful begins.
			if len(r.Phases) < 2 || r.Phases[0].Phase != stophook.NotReady || r.Phases[0].InFlight < 2 ||
				r.Phases[1].Phase != stophook.Graceful || r.Phases[1].InFlight < 1 {
				t.Errorf("Drain() phases = %+v, want NotReady beginning with the call and Watch in flight, then Graceful with the call", r.Phases)
			}
			if err := receive(t, call, "the unary call"); (err == nil) != tc.wantCallOK {
				t.Errorf("unary call in progress at Drain = %v, want success %t", err, tc.wantCallOK)
			}
			err = receive(t, watchEnd, "the end of Watch")
			if status.Code(err) != codes.Unavailable || !strings.Contains(status.Convert(err).Message(), "shutting down") {
				t.Errorf("Watch at Drain ended with %v, want code %v and \"shutting down\"", err, codes.Unavailable)
			}
			if err := receive(t, httpServed, "http.Server.Serve to return"); !errors.Is(err, http.ErrServerClosed) {
				t.Errorf("http.Server.Serve() = %v, want %v", err, http.ErrServerClosed)
			}
		})
	}
}
