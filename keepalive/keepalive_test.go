package keepalive_test

import (
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	grpckeepalive "google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/drainkit/drainkit/interceptors"
	"github.com/drainkit/drainkit/keepalive"
)

// defaultTestTimeout bounds every wait of these tests.
const defaultTestTimeout = 10 * time.Second

func TestParametersDefaults(t *testing.T) {
	sp, ep := keepalive.Parameters()
	wantSP := grpckeepalive.ServerParameters{
		MaxConnectionIdle:     0,
		MaxConnectionAge:      5 * time.Minute,
		MaxConnectionAgeGrace: keepalive.Infinity,
		Time:                  time.Minute,
		Timeout:               20 * time.Second,
	}
	wantEP := grpckeepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}
	if sp != wantSP {
		t.Errorf("Parameters() server parameters = %+v, want %+v", sp, wantSP)
	}
	if ep != wantEP {
		t.Errorf("Parameters() enforcement policy = %+v, want %+v", ep, wantEP)
	}
}

func TestOptions(t *testing.T) {
	tests := []struct {
		name   string
		opts   []keepalive.Option
		change func(*grpckeepalive.ServerParameters, *grpckeepalive.EnforcementPolicy)
	}{
		{"max connection age", []keepalive.Option{keepalive.WithMaxConnectionAge(time.Hour)},
			func(sp *grpckeepalive.ServerParameters, _ *grpckeepalive.EnforcementPolicy) {
				sp.MaxConnectionAge = time.Hour
			}},
		{"max connection age off", []keepalive.Option{keepalive.WithMaxConnectionAge(0)},
			func(sp *grpckeepalive.ServerParameters, _ *grpckeepalive.EnforcementPolicy) { sp.MaxConnectionAge = 0 }},
		{"grace period", []keepalive.Option{keepalive.WithGracePeriod(time.Minute)},
			func(sp *grpckeepalive.ServerParameters, _ *grpckeepalive.EnforcementPolicy) {
				sp.MaxConnectionAgeGrace = time.Minute
			}},
		{"max connection idle", []keepalive.Option{keepalive.WithMaxConnectionIdle(time.Hour)},
			func(sp *grpckeepalive.ServerParameters, _ *grpckeepalive.EnforcementPolicy) {
				sp.MaxConnectionIdle = time.Hour
			}},
		{"time", []keepalive.Option{keepalive.WithTime(30 * time.Second)},
			func(sp *grpckeepalive.ServerParameters, _ *grpckeepalive.EnforcementPolicy) {
				sp.Time = 30 * time.Second
			}},
		{"timeout", []keepalive.Option{keepalive.WithTimeout(5 * time.Second)},
			func(sp *grpckeepalive.ServerParameters, _ *grpckeepalive.EnforcementPolicy) {
				sp.Timeout = 5 * time.Second
			}},
		{"min time", []keepalive.Option{keepalive.WithMinTime(time.Second)},
			func(_ *grpckeepalive.ServerParameters, ep *grpckeepalive.EnforcementPolicy) { ep.MinTime = time.Second }},
		{"permit without stream", []keepalive.Option{keepalive.WithPermitWithoutStream(false)},
			func(_ *grpckeepalive.ServerParameters, ep *grpckeepalive.EnforcementPolicy) {
				ep.PermitWithoutStream = false
			}},
		{"last wins", []keepalive.Option{keepalive.WithGracePeriod(time.Minute), keepalive.WithGracePeriod(time.Second)},
			func(sp *grpckeepalive.ServerParameters, _ *grpckeepalive.EnforcementPolicy) {
				sp.MaxConnectionAgeGrace = time.Second
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantSP, wantEP := keepalive.Parameters()
			tt.change(&wantSP, &wantEP)
			sp, ep := keepalive.Parameters(tt.opts...)
			if sp != wantSP || ep != wantEP {
				t.Errorf("Parameters() = %+v, %+v; want %+v, %+v", sp, ep, wantSP, wantEP)
			}
		})
	}
}

func TestValidation(t *testing.T) {
	tests := []struct {
		name string
		f    func()
		want string // in the panic message; "" for no panic
	}{
		{"negative max connection age", func() { keepalive.WithMaxConnectionAge(-time.Second) }, "keepalive: WithMaxConnectionAge(-1s): negative duration"},
		{"negative grace period", func() { keepalive.WithGracePeriod(-time.Second) }, "keepalive: WithGracePeriod(-1s): negative duration"},
		{"zero grace period", func() { keepalive.WithGracePeriod(0) }, "keepalive: WithGracePeriod(0): the duration must be positive"},
		{"bare number as max connection age", func() { keepalive.WithMaxConnectionAge(5) }, "keepalive: WithMaxConnectionAge(5ns): below a second, which no keepalive setting can mean; a time.Duration counts nanoseconds: write 5*time.Second or 5*time.Minute, not 5"},
		{"sub-second max connection age", func() { keepalive.WithMaxConnectionAge(999 * time.Millisecond) }, "keepalive: WithMaxConnectionAge(999ms): below a second"},
		{"bare number as grace period", func() { keepalive.WithGracePeriod(20) }, "keepalive: WithGracePeriod(20ns): below a second"},
		{"sub-second grace period", func() { keepalive.WithGracePeriod(300 * time.Millisecond) }, "keepalive: WithGracePeriod(300ms): below a second"},
		{"bare number as max connection idle", func() { keepalive.WithMaxConnectionIdle(1) }, "keepalive: WithMaxConnectionIdle(1ns): below a second"},
		{"bare number as time", func() { keepalive.WithTime(60) }, "keepalive: WithTime(60ns): below a second"},
		{"bare number as timeout", func() { keepalive.WithTimeout(20) }, "keepalive: WithTimeout(20ns): below a second"},
		{"sub-second min time", func() { keepalive.WithMinTime(10 * time.Millisecond) }, "keepalive: WithMinTime(10ms): below a second"},
		{"nil tracker", func() { keepalive.WithTracker(nil) }, "keepalive: WithTracker: nil *interceptors.Tracker"},
		{"one second everywhere", func() {
			keepalive.Parameters(keepalive.WithMaxConnectionAge(time.Second), keepalive.WithGracePeriod(time.Second),
				keepalive.WithMaxConnectionIdle(time.Second), keepalive.WithTime(time.Second), keepalive.WithTimeout(time.Second),
				keepalive.WithMinTime(time.Second))
		}, ""},
		{"negative max connection idle", func() { keepalive.WithMaxConnectionIdle(-time.Second) }, "keepalive: WithMaxConnectionIdle(-1s): negative duration"},
		{"negative time", func() { keepalive.WithTime(-time.Second) }, "keepalive: WithTime(-1s): negative duration"},
		{"zero time", func() { keepalive.WithTime(0) }, "keepalive: WithTime(0): the duration must be positive"},
		{"negative timeout", func() { keepalive.WithTimeout(-time.Second) }, "keepalive: WithTimeout(-1s): negative duration"},
		{"zero timeout", func() { keepalive.WithTimeout(0) }, "keepalive: WithTimeout(0): the duration must be positive"},
		{"negative min time", func() { keepalive.WithMinTime(-time.Second) }, "keepalive: WithMinTime(-1s): negative duration"},
		{"zero min time", func() { keepalive.WithMinTime(0) }, "keepalive: WithMinTime(0): the duration must be positive"},
		{"nil option to ServerOptions", func() { keepalive.ServerOptions(keepalive.WithTime(time.Second), nil) }, "keepalive: ServerOptions: option 1 is nil"},
		{"nil option to Parameters", func() { keepalive.Parameters(nil) }, "keepalive: Parameters: option 0 is nil"},
		{"zero max connection age", func() { keepalive.WithMaxConnectionAge(0) }, ""},
		// grpc adds up to +10% of jitter to the age: past this, the sum
		// overflows, and about half the connections are sent GOAWAY as
		// soon as they open.
		{"max connection age whose jitter overflows", func() { keepalive.WithMaxConnectionAge(keepalive.Infinity - 1) },
			"keepalive: WithMaxConnectionAge(2562047h47m16.854775806s): above 2329134h21m9.867978s, past which grpc's jitter of up to +10% overflows"},
		{"longest max connection age", func() { keepalive.WithMaxConnectionAge(keepalive.Infinity / 11 * 10) }, ""},
		{"infinite max connection age", func() { keepalive.WithMaxConnectionAge(keepalive.Infinity) }, ""},
		{"zero max connection idle", func() { keepalive.WithMaxConnectionIdle(0) }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				r := recover()
				msg, _ := r.(string)
				switch {
				case tt.want == "" && r != nil:
					t.Errorf("panic = %v, want none", r)
				case tt.want != "" && !strings.Contains(msg, tt.want):
					t.Errorf("panic = %v, want %q", r, tt.want)
				}
			}()
			tt.f()
		})
	}
}

// testServer echoes on FullDuplexCall and answers EmptyCall.
type testServer struct {
	testpb.UnimplementedTestServiceServer
}

func (testServer) EmptyCall(context.Context, *testpb.Empty) (*testpb.Empty, error) {
	return &testpb.Empty{}, nil
}

func (testServer) FullDuplexCall(stream testpb.TestService_FullDuplexCallServer) error {
	for {
		if _, err := stream.Recv(); err != nil {
			return nil
		}
		if err := stream.Send(&testpb.StreamingOutputCallResponse{}); err != nil {
			return err
		}
	}
}

// countingListener counts the connections it accepts.
type countingListener struct {
	*bufconn.Listener
	accepted chan struct{} // receives once per connection
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		select {
		case l.accepted <- struct{}{}:
		default: // more connections than any test makes
		}
	}
	return c, err
}

// startServer starts a gRPC server with the keepalive settings of opts, and
// returns its listener.
func startServer(t *testing.T, opts ...keepalive.Option) *countingListener {
	t.Helper()
	srv := grpc.NewServer(keepalive.ServerOptions(opts...)...)
	testpb.RegisterTestServiceServer(srv, testServer{})
	return serveCounting(t, srv)
}

// serveCounting serves srv on a new countingListener, which it returns,
// until the test ends.
func serveCounting(t *testing.T, srv *grpc.Server) *countingListener {
	t.Helper()
	lis := &countingListener{Listener: bufconn.Listen(1 << 20), accepted: make(chan struct{}, 1024)}
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-served
	})
	return lis
}

func newClient(t *testing.T, lis *countingListener) testpb.TestServiceClient {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc.NewClient() = %v", err)
	}
	t.Cleanup(func() { cc.Close() })
	return testpb.NewTestServiceClient(cc)
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	t.Cleanup(cancel)
	return ctx
}

// callUntilAccepted makes RPCs, all of which must succeed, until the server
// has accepted n connections.
func callUntilAccepted(ctx context.Context, t *testing.T, client testpb.TestServiceClient, lis *countingListener, n int) {
	t.Helper()
	calls := 0
	for accepted := 0; accepted < n; {
		select {
		case <-lis.accepted:
			accepted++
			continue
		case <-ctx.Done():
			t.Fatalf("%d connections accepted after %d RPCs, want %d within %v", accepted, calls, n, defaultTestTimeout)
		default:
		}
		if _, err := client.EmptyCall(ctx, &testpb.Empty{}); err != nil {
			t.Fatalf("EmptyCall() #%d = %v, want nil", calls, err)
		}
		calls++
	}
}

func TestMaxConnectionAgeRenewsConnections(t *testing.T) {
	ctx := testContext(t)
	lis := startServer(t, keepalive.WithMaxConnectionAge(time.Second), keepalive.WithGracePeriod(5*time.Second))
	client := newClient(t, lis)
	// Every connection is sent GOAWAY at its age; the client opens a new
	// one, and no RPC fails.
	callUntilAccepted(ctx, t, client, lis, 3)
}

func TestGracePeriodLetsStreamsFinish(t *testing.T) {
	// A grace of a few seconds: before it ends, the client must open its
	// second connection and exchange on the first stream again.
	const age, grace = time.Second, 3 * time.Second
	ctx := testContext(t)
	lis := startServer(t, keepalive.WithMaxConnectionAge(age), keepalive.WithGracePeriod(grace))
	client := newClient(t, lis)

	start := time.Now()
	stream, err := client.FullDuplexCall(ctx)
	if err != nil {
		t.Fatalf("FullDuplexCall() = %v", err)
	}
	exchange := func() error {
		if err := stream.Send(&testpb.StreamingOutputCallRequest{}); err != nil {
			return err
		}
		_, err := stream.Recv()
		return err
	}
	if err := exchange(); err != nil {
		t.Fatalf("stream exchange = %v, want nil", err)
	}
	// Once the client has opened a second connection, the first one has
	// been sent GOAWAY; its stream still works during the grace period.
	callUntilAccepted(ctx, t, client, lis, 2)
	if err := exchange(); err != nil {
		t.Fatalf("stream exchange after GOAWAY = %v, want nil", err)
	}
	// At the end of the grace period, the connection is closed (grpc
	// closes it up to a second later).
	_, err = stream.Recv()
	// grpc draws the age within 10% of the one set, and once the grace
	// period has ended waits a second for its reader before it closes the
	// connection (internal/transport/http2_server.go, v1.85.0), all of
	// which it spends here, where the client keeps the connection open.
	if elapsed, least := time.Since(start), age*9/10+grace+time.Second; elapsed < least {
		t.Errorf("stream cut after %v, want at least the age, the grace period and grpc's second, %v", elapsed, least)
	}
	if status.Code(err) != codes.Unavailable {
		t.Errorf("Recv() at the end of the grace period = %v, want code %v", err, codes.Unavailable)
	}
}

// rawConn is an HTTP/2 client connection that sends frames by hand.
type rawConn struct {
	fr *http2.Framer
}

func dialRaw(t *testing.T, lis *countingListener) *rawConn {
	t.Helper()
	conn, err := lis.Dial()
	if err != nil {
		t.Fatalf("Dial() = %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := conn.SetDeadline(time.Now().Add(defaultTestTimeout)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatalf("writing the preface: %v", err)
	}
	fr := http2.NewFramer(conn, conn)
	if err := fr.WriteSettings(); err != nil {
		t.Fatalf("WriteSettings() = %v", err)
	}
	return &rawConn{fr: fr}
}

type goAway struct {
	code  http2.ErrCode
	debug string
}

// next reads frames until a GOAWAY, which it returns, or the ack of a ping
// carrying data, for which it returns nil.
func (c *rawConn) next(t *testing.T, data *[8]byte) *goAway {
	t.Helper()
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			t.Fatalf("ReadFrame() = %v", err)
		}
		switch f := f.(type) {
		case *http2.GoAwayFrame:
			return &goAway{code: f.ErrCode, debug: string(f.DebugData())}
		case *http2.PingFrame:
			if data != nil && f.IsAck() && f.Data == *data {
				return nil
			}
		}
	}
}

func TestMaxConnectionAgeSendsGoAway(t *testing.T) {
	const age = time.Second
	lis := startServer(t, keepalive.WithMaxConnectionAge(age))
	start := time.Now()
	c := dialRaw(t, lis)
	g := c.next(t, nil)
	if elapsed := time.Since(start); elapsed < age*9/10 {
		t.Errorf("GOAWAY after %v, want at least %v", elapsed, age*9/10)
	}
	if want := (goAway{code: http2.ErrCodeNo, debug: "max_age"}); *g != want {
		t.Errorf("GOAWAY = %+v, want %+v", *g, want)
	}
}

func TestPingPolicy(t *testing.T) {
	tests := []struct {
		name     string
		opts     []keepalive.Option
		interval time.Duration // between pings
		pings    int
		wantCut  bool
	}{
		{
			// Scaled down: a grpc-go client pings every 10s at most often,
			// twice the default MinTime. Four pings too early would be
			// cut (grpc forgives one after it writes).
			name:     "within policy, without RPCs",
			opts:     []keepalive.Option{keepalive.WithMinTime(time.Second)},
			interval: 1100 * time.Millisecond,
			pings:    5,
		},
		{
			name:    "too often for the default policy",
			pings:   10,
			wantCut: true,
		},
		{
			name:     "without RPCs when not permitted",
			opts:     []keepalive.Option{keepalive.WithMinTime(time.Second), keepalive.WithPermitWithoutStream(false)},
			interval: 1100 * time.Millisecond,
			pings:    5,
			wantCut:  true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lis := startServer(t, tt.opts...)
			c := dialRaw(t, lis)
			var tick <-chan time.Time
			if tt.interval > 0 {
				ticker := time.NewTicker(tt.interval)
				defer ticker.Stop()
				tick = ticker.C
			}
			var got *goAway
			for i := range tt.pings {
				if i > 0 && tick != nil {
					<-tick
				}
				data := [8]byte{byte(i)}
				if err := c.fr.WritePing(false, data); err != nil {
					// The server closed the connection after a GOAWAY
					// that followed its last ack: read it.
					got = c.next(t, nil)
					break
				}
				if got = c.next(t, &data); got != nil {
					break
				}
			}
			switch {
			case !tt.wantCut && got != nil:
				t.Errorf("after %d pings every %v: GOAWAY %+v, want none", tt.pings, tt.interval, *got)
			case tt.wantCut && got == nil:
				t.Errorf("after %d pings every %v: no GOAWAY, want one for too many pings", tt.pings, tt.interval)
			case tt.wantCut && (*got != goAway{code: http2.ErrCodeEnhanceYourCalm, debug: "too_many_pings"}):
				t.Errorf("GOAWAY = %+v, want ENHANCE_YOUR_CALM too_many_pings", *got)
			}
		})
	}
}

func TestWithTracker(t *testing.T) {
	const health = "/grpc.health.v1.Health/Watch" // long-lived by default
	tests := []struct {
		name string
		opts []interceptors.Option
		want time.Duration
	}{
		{"no bound", nil, keepalive.Infinity},
		{"unary calls only bounded", []interceptors.Option{interceptors.WithMaxTimeout(30 * time.Second)}, keepalive.Infinity},
		{"streams only bounded", []interceptors.Option{interceptors.WithStreamTimeout(time.Minute)}, keepalive.Infinity},
		{"both bounded", []interceptors.Option{interceptors.WithMaxTimeout(30 * time.Second), interceptors.WithStreamTimeout(time.Minute)}, time.Minute + time.Second},
		{"a default timeout is no bound", []interceptors.Option{interceptors.WithDefaultTimeout(30 * time.Second), interceptors.WithStreamTimeout(time.Minute)}, keepalive.Infinity},
		{"a longer method", []interceptors.Option{interceptors.WithMaxTimeout(30 * time.Second), interceptors.WithStreamTimeout(time.Minute),
			interceptors.WithMethodTimeout("/pkg.Svc/Export", 10*time.Minute)}, 10*time.Minute + time.Second},
		{"an exempted method", []interceptors.Option{interceptors.WithMaxTimeout(30 * time.Second), interceptors.WithStreamTimeout(time.Minute),
			interceptors.WithMethodTimeout("/pkg.Svc/Export", 0)}, keepalive.Infinity},
		{"an exempted long-lived method", []interceptors.Option{interceptors.WithMaxTimeout(30 * time.Second), interceptors.WithStreamTimeout(time.Minute),
			interceptors.WithMethodTimeout(health, 0)}, time.Minute + time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sp, _ := keepalive.Parameters(keepalive.WithTracker(interceptors.NewTracker(tt.opts...)))
			if sp.MaxConnectionAgeGrace != tt.want {
				t.Errorf("Parameters(WithTracker) grace = %v, want %v", sp.MaxConnectionAgeGrace, tt.want)
			}
		})
	}
	// The last option wins, as for the other settings.
	tr := interceptors.NewTracker(interceptors.WithMaxTimeout(time.Second), interceptors.WithStreamTimeout(time.Second))
	if sp, _ := keepalive.Parameters(keepalive.WithTracker(tr), keepalive.WithGracePeriod(time.Hour)); sp.MaxConnectionAgeGrace != time.Hour {
		t.Errorf("Parameters(WithTracker, WithGracePeriod(1h)) grace = %v, want 1h", sp.MaxConnectionAgeGrace)
	}
	if sp, _ := keepalive.Parameters(keepalive.WithGracePeriod(time.Hour), keepalive.WithTracker(tr)); sp.MaxConnectionAgeGrace != 2*time.Second {
		t.Errorf("Parameters(WithGracePeriod(1h), WithTracker) grace = %v, want 2s", sp.MaxConnectionAgeGrace)
	}
}

// slowService answers UnaryCall after its work, of the length the test
// sets, and EmptyCall at once.
type slowService struct {
	testpb.UnimplementedTestServiceServer
	work time.Duration
}

func (slowService) EmptyCall(context.Context, *testpb.Empty) (*testpb.Empty, error) {
	return &testpb.Empty{}, nil
}

func (s slowService) UnaryCall(ctx context.Context, _ *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	timer := time.NewTimer(s.work)
	defer timer.Stop()
	select {
	case <-timer.C: // the work: not synchronisation
		return &testpb.SimpleResponse{}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// TestRenewalSparesCallsTheTrackerBounds renews a connection while a call
// that outlives the connection's age plus a second is in flight on it: with
// the grace of WithTracker, the call finishes.
func TestRenewalSparesCallsTheTrackerBounds(t *testing.T) {
	const age, work = time.Second, 2500 * time.Millisecond
	ctx := testContext(t)
	tracker := interceptors.NewTracker(interceptors.WithMaxTimeout(3*time.Second), interceptors.WithStreamTimeout(3*time.Second))
	kopts := []keepalive.Option{keepalive.WithMaxConnectionAge(age), keepalive.WithTracker(tracker)}
	// The grace is finite, the Tracker's bound and a second, not the
	// default Infinity, under which any call would finish.
	if sp, _ := keepalive.Parameters(kopts...); sp.MaxConnectionAgeGrace != 4*time.Second {
		t.Fatalf("Parameters(WithTracker) grace = %v, want 4s", sp.MaxConnectionAgeGrace)
	}
	srv := grpc.NewServer(append(keepalive.ServerOptions(kopts...), tracker.ServerOptions()...)...)
	testpb.RegisterTestServiceServer(srv, slowService{work: work})
	lis := serveCounting(t, srv)
	client := newClient(t, lis)
	if _, err := client.EmptyCall(ctx, &testpb.Empty{}); err != nil {
		t.Fatalf("EmptyCall() = %v", err)
	}
	<-lis.accepted
	start := time.Now()
	done := make(chan error, 1)
	go func() {
		_, err := client.UnaryCall(ctx, &testpb.SimpleRequest{})
		done <- err
	}()
	// The connection reaches its age during the call: the client opens a
	// second one.
	callUntilAccepted(ctx, t, client, lis, 1)
	select {
	case err := <-done:
		t.Fatalf("UnaryCall() returned %v after %v, before the renewal; want it to outlive the age", err, time.Since(start))
	default:
	}
	if err := <-done; err != nil {
		t.Errorf("UnaryCall() of %v across a renewal at %v = %v, want nil", work, age, err)
	}
}
