package drainkit_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/binarylog"
	binlogpb "google.golang.org/grpc/binarylog/grpc_binarylog_v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding/gzip"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"

	"github.com/drainkit/drainkit/interceptors"
)

// The sizes of the stress tests: small enough for CI under -race on two
// shared cores, and larger on demand, as in
// go test -race -run 'Stress' -stress.streams=3000 -stress.first=10000 .
var (
	stressStreams = flag.Int("stress.streams", 500, "finite streams each run of TestEndingStress opens (3000 in BENCHMARKS.md)")
	stressFirst   = flag.Int("stress.first", 2000, "streams TestFirstSendStress opens (10000 in BENCHMARKS.md)")
)

// stressTrailer is the trailer the stress tests' handlers set first.
const stressTrailer = "x-stress"

// stressWorkers is the number of client goroutines of the stress tests.
const stressWorkers = 8

// rpcIDKey is the metadata key with which the stress tests' clients name
// each RPC, so that the server's stats handler can be compared with them.
const rpcIDKey = "x-rpc-id"

// rpcRecord is what a stats handler saw of one RPC.
type rpcRecord struct {
	id   atomic.Value // the RPC's rpcIDKey, a string
	end  atomic.Pointer[stats.End]
	late atomic.Int32  // events reported after End
	done chan struct{} // closed at End
}

type rpcRecordKey struct{}

// recordingStats is a server stats.Handler that records, per RPC, the
// error with which it ended, and counts the events it reports after End,
// as otelgrpc would export them.
type recordingStats struct {
	mu   sync.Mutex
	rpcs map[string]*rpcRecord
}

func newRecordingStats() *recordingStats { return &recordingStats{rpcs: map[string]*rpcRecord{}} }

func (h *recordingStats) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context {
	return context.WithValue(ctx, rpcRecordKey{}, &rpcRecord{done: make(chan struct{})})
}
func (h *recordingStats) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}
func (h *recordingStats) HandleConn(context.Context, stats.ConnStats) {}
func (h *recordingStats) HandleRPC(ctx context.Context, s stats.RPCStats) {
	r := ctx.Value(rpcRecordKey{}).(*rpcRecord)
	if r.end.Load() != nil {
		r.late.Add(1)
	}
	switch s := s.(type) {
	case *stats.InHeader:
		if ids := s.Header.Get(rpcIDKey); len(ids) == 1 {
			r.id.Store(ids[0])
			h.mu.Lock()
			h.rpcs[ids[0]] = r
			h.mu.Unlock()
		}
	case *stats.End:
		r.end.Store(s)
		close(r.done)
	}
}

// record returns what the handler saw of the RPC named id, once it has
// seen its End, or nil if the RPC never reached the server. A client may
// have its status before grpc reports End.
func (h *recordingStats) record(t *testing.T, id string) *rpcRecord {
	h.mu.Lock()
	r := h.rpcs[id]
	h.mu.Unlock()
	if r != nil {
		receive(t, r.done, "the End of RPC "+id)
	}
	return r
}

// stressOutcome counts how the RPCs of a stress run ended.
type stressOutcome struct {
	ok, unavailable int
	malformed       []string // statuses neither OK nor the Tracker's
	mismatched      []string // client and stats handler disagree
	late            int      // RPCs whose stats handler saw an event after End
}

func (o *stressOutcome) String() string {
	return fmt.Sprintf("%d OK, %d UNAVAILABLE, %d malformed, %d mismatched, %d with events after End",
		o.ok, o.unavailable, len(o.malformed), len(o.mismatched), o.late)
}

// check classifies the status err that the client of RPC id got, and
// compares it with what the stats handler saw.
func (o *stressOutcome) check(t *testing.T, id string, err error, sh *recordingStats) {
	got := status.Convert(err)
	switch {
	case got.Code() == codes.OK:
		o.ok++
	case got.Code() == codes.Unavailable && strings.Contains(got.Message(), "shutting down"):
		o.unavailable++
	default:
		o.malformed = append(o.malformed, fmt.Sprintf("RPC %s: %v", id, err))
	}
	r := sh.record(t, id)
	if r == nil || r.end.Load() == nil {
		o.mismatched = append(o.mismatched, fmt.Sprintf("RPC %s: client %v, no End in the stats handler", id, err))
		return
	}
	seen := status.Convert(r.end.Load().Error)
	if seen.Code() != got.Code() || seen.Message() != got.Message() {
		o.mismatched = append(o.mismatched, fmt.Sprintf("RPC %s: client %v, stats handler %v", id, err, r.end.Load().Error))
	}
	if r.late.Load() > 0 {
		o.late++
	}
}

// checkStats fails t if the stats handler saw an RPC end otherwise than
// its client did, or saw an event after an RPC's End.
func (o *stressOutcome) checkStats(t *testing.T) {
	t.Helper()
	if len(o.mismatched) > 0 {
		t.Errorf("%d RPCs ended differently for their client and for the stats handler:\n%s", len(o.mismatched), first(o.mismatched, 5))
	}
	if o.late > 0 {
		t.Errorf("the stats handler saw events after End in %d RPCs, want none", o.late)
	}
}

// first returns up to n lines of l, for an error message.
func first(l []string, n int) string {
	if len(l) > n {
		l = l[:n]
	}
	return strings.Join(l, "\n")
}

// cancelStress makes n RPCs, each by calling rpc with a context that
// carries its number for the stats handler, from stressWorkers goroutines
// (w is the worker's number) while another goroutine calls tr.CancelAll in
// a loop. Once every RPC has ended, it checks that tr is idle and returns
// the error of each RPC and the number of calls CancelAll cancelled.
func cancelStress(t *testing.T, tr *interceptors.Tracker, n int, rpc func(ctx context.Context, w int) error) ([]error, int) {
	t.Helper()
	errs := make([]error, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := range stressWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)) - 1; i < len(errs); i = int(next.Add(1)) - 1 {
				errs[i] = rpc(metadata.AppendToOutgoingContext(testContext(t), rpcIDKey, strconv.Itoa(i)), w)
			}
		}()
	}
	stop := make(chan struct{})
	cancelled := make(chan int, 1)
	go func() {
		n := 0
		for {
			select {
			case <-stop:
				cancelled <- n
				return
			default:
			}
			n += tr.CancelAll(errDrain)
			runtime.Gosched()
		}
	}()
	wg.Wait()
	close(stop)
	c := receive(t, cancelled, "the canceller to stop")
	checkIdle(t, tr)
	return errs, c
}

// outcome classifies the errors of a stress run, RPC i's being errs[i].
func outcome(t *testing.T, errs []error, sh *recordingStats) *stressOutcome {
	t.Helper()
	var o stressOutcome
	for i, err := range errs {
		o.check(t, strconv.Itoa(i), err, sh)
	}
	return &o
}

// TestEndingStress makes finite server streams (three messages, then the
// handler returns nil) from several clients while another goroutine calls
// CancelAll in a loop, on both transports, with and without compression.
// Every RPC must end, for its client, with codes.OK or the Tracker's
// codes.Unavailable, never a malformed response; the stats handler must
// see, per RPC, the status the client got, and no event after End. Run
// with GRPC_BINARY_LOG_FILTER='*' by TestEndingStressBinaryLog.
func TestEndingStress(t *testing.T) {
	var sink *countingSink
	if os.Getenv("GRPC_BINARY_LOG_FILTER") != "" {
		sink = &countingSink{}
		binarylog.SetSink(sink)
	}
	for _, tp := range transports {
		for _, compressed := range []bool{false, true} {
			name := tp.name
			if compressed {
				name += "-gzip"
			}
			t.Run(name, func(t *testing.T) {
				tr := interceptors.NewTracker()
				sh := newRecordingStats()
				srv := grpc.NewServer(append(tr.ServerOptions(), grpc.StatsHandler(sh))...)
				testgrpc.RegisterTestServiceServer(srv, &streamService{output: func(stream testgrpc.TestService_StreamingOutputCallServer) error {
					// A trailer, so that the stream's trailer map exists
					// while the stream may be ended.
					stream.SetTrailer(metadata.Pairs(stressTrailer, "1"))
					for range 3 {
						if err := stream.Send(&testgrpc.StreamingOutputCallResponse{Payload: &testgrpc.Payload{Body: []byte("payload")}}); err != nil {
							return err
						}
					}
					return nil
				}})
				var dial []grpc.DialOption
				if compressed {
					dial = append(dial, grpc.WithDefaultCallOptions(grpc.UseCompressor(gzip.Name)))
				}
				cc := tp.serve(t, srv, dial...)
				client := testgrpc.NewTestServiceClient(cc)

				var lost atomic.Int64 // RPCs that ended OK without the trailer
				errs, n := cancelStress(t, tr, *stressStreams, func(ctx context.Context, _ int) error {
					stream, err := client.StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{})
					if err != nil {
						return err
					}
					err = recvAll(stream.Recv).err
					// A stream ended while grpc's generated handler reads
					// the request may not have run the handler: only those
					// that end OK surely did.
					if err == nil && len(stream.Trailer().Get(stressTrailer)) != 1 {
						lost.Add(1)
					}
					return err
				})
				o := outcome(t, errs, sh)
				t.Logf("%d streams, %d cancellations: %v", len(errs), n, o)
				if len(o.malformed) > 0 {
					t.Errorf("%d RPCs ended neither OK nor with the Tracker's status:\n%s", len(o.malformed), first(o.malformed, 5))
				}
				o.checkStats(t)
				if n := lost.Load(); n > 0 {
					t.Errorf("%d RPCs ended OK without the trailer their handler set", n)
				}
				if o.unavailable == 0 {
					t.Errorf("no stream was ended by CancelAll: the stress tried nothing")
				}
			})
		}
	}
	if sink != nil {
		if n := sink.trailers.Load(); n == 0 {
			t.Errorf("binary log saw no server trailer, want one per RPC")
		}
	}
}

// TestEndingWaitingStress opens bidi streams whose handler, once it has
// the client's first message, waits in Recv until CancelAll, called in a
// loop, ends its stream: every stream is ended by the Tracker's own write
// of its status, and its handler returns at once, as grpc reads the
// stream's maps for the binary log. Every client must get the Tracker's
// codes.Unavailable, with the trailer set before, and the stats handler
// see the same.
func TestEndingWaitingStress(t *testing.T) {
	for _, tp := range transports {
		t.Run(tp.name, func(t *testing.T) {
			tr := interceptors.NewTracker()
			sh := newRecordingStats()
			srv := grpc.NewServer(append(tr.ServerOptions(), grpc.StatsHandler(sh))...)
			testgrpc.RegisterTestServiceServer(srv, &streamService{duplex: func(stream testgrpc.TestService_FullDuplexCallServer) error {
				stream.SetTrailer(metadata.Pairs(stressTrailer, "1"))
				if _, err := stream.Recv(); err != nil {
					return err
				}
				_, err := stream.Recv()
				return err
			}})
			cc := tp.serve(t, srv)
			client := testgrpc.NewTestServiceClient(cc)
			var lost atomic.Int64 // RPCs ended by CancelAll without the trailer
			errs, _ := cancelStress(t, tr, *stressStreams, func(ctx context.Context, _ int) error {
				stream, err := client.FullDuplexCall(ctx)
				if err != nil {
					return err
				}
				// io.EOF if the stream has ended already: Recv then
				// returns its status.
				if err := stream.Send(&testgrpc.StreamingOutputCallRequest{}); err != nil && err != io.EOF {
					return err
				}
				_, err = stream.Recv()
				if len(stream.Trailer().Get(stressTrailer)) != 1 {
					lost.Add(1)
				}
				return err
			})
			o := outcome(t, errs, sh)
			t.Logf("%d streams: %v", len(errs), o)
			if o.unavailable != len(errs) {
				t.Errorf("%d of %d streams ended with the Tracker's status, want all:\n%s", o.unavailable, len(errs), first(o.malformed, 5))
			}
			o.checkStats(t)
			// A bidi handler runs at once, and sets its trailer first.
			if n := lost.Load(); n > 0 {
				t.Errorf("%d RPCs lost the trailer their handler set first", n)
			}
		})
	}
}

// countingSink is a binary log sink that counts the server trailers it is
// given, to prove that binary logging ran.
type countingSink struct{ trailers atomic.Int64 }

func (s *countingSink) Write(e *binlogpb.GrpcLogEntry) error {
	if e.GetType() == binlogpb.GrpcLogEntry_EVENT_TYPE_SERVER_TRAILER {
		s.trailers.Add(1)
	}
	return nil
}
func (s *countingSink) Close() error { return nil }

// TestEndingStressBinaryLog runs TestEndingStress in a process of its own
// with binary logging on for every method (grpc-go reads
// GRPC_BINARY_LOG_FILTER once, as it starts): grpc reads a stream's
// header and trailer maps for the binary log, and the Tracker must never
// write them at the same time. Under -race, a race fails the child, and
// so this test.
func TestEndingStressBinaryLog(t *testing.T) {
	if os.Getenv("GRPC_BINARY_LOG_FILTER") != "" {
		t.Skip("already running with binary logging")
	}
	// Without compression, which binary logging does not see.
	cmd := exec.Command(os.Args[0], "-test.run=^(TestEndingStress|TestEndingWaitingStress)$/^(listener|ServeHTTP)$", "-test.count=1", "-test.v",
		"-stress.streams="+strconv.Itoa(*stressStreams))
	cmd.Env = append(os.Environ(), "GRPC_BINARY_LOG_FILTER=*")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestEndingStress") || !strings.Contains(string(out), "--- PASS: TestEndingWaitingStress") {
		t.Fatalf("TestEndingStress with GRPC_BINARY_LOG_FILTER='*' = %v:\n%s", err, out)
	}
	if strings.Contains(string(out), "DATA RACE") {
		t.Fatalf("TestEndingStress with GRPC_BINARY_LOG_FILTER='*' raced:\n%s", out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, " streams") {
			t.Log(strings.TrimSpace(line))
		}
	}
}

// TestFirstSendStress cancels, on the server's own transport, streams
// whose handler sends its first message at once: the Tracker's write of
// the status races the handler's first SendMsg, which sends the stream's
// headers. The client must never see a message before headers (a
// protocol error, or a compressed message without an encoding: both
// codes.Internal) or any status but codes.OK and the Tracker's.
func TestFirstSendStress(t *testing.T) {
	tr := interceptors.NewTracker()
	sh := newRecordingStats()
	srv := grpc.NewServer(append(tr.ServerOptions(), grpc.StatsHandler(sh))...)
	testgrpc.RegisterTestServiceServer(srv, &streamService{output: func(stream testgrpc.TestService_StreamingOutputCallServer) error {
		return stream.Send(&testgrpc.StreamingOutputCallResponse{Payload: &testgrpc.Payload{Body: []byte("payload")}})
	}})
	cc := serveBufconn(t, srv)
	client := testgrpc.NewTestServiceClient(cc)
	errs, _ := cancelStress(t, tr, *stressFirst, func(ctx context.Context, w int) error {
		// Half the workers ask for compressed responses: a message sent
		// ahead of its headers then reads as compressed without an
		// encoding.
		var opts []grpc.CallOption
		if w%2 == 1 {
			opts = append(opts, grpc.UseCompressor(gzip.Name))
		}
		stream, err := client.StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{}, opts...)
		if err != nil {
			return err
		}
		return recvAll(stream.Recv).err
	})
	o := outcome(t, errs, sh)
	t.Logf("%d streams: %v", len(errs), o)
	if len(o.malformed) > 0 {
		t.Errorf("%d RPCs ended neither OK nor with the Tracker's status:\n%s", len(o.malformed), first(o.malformed, 5))
	}
	o.checkStats(t)
	if o.unavailable == 0 {
		t.Errorf("no stream was ended by CancelAll: the stress tried nothing")
	}
}

// TestTrailersOfEndedStreams sets a trailer before the Tracker ends a
// bidi stream and another once the handler's Recv has failed, and shows
// what reaches the client, on both transports. A handler busy elsewhere
// when the stream is cancelled, whose Recv then fails at once, writes the
// status itself when it returns: both trailers arrive. A handler waiting
// in Recv can only be freed by the status, written by the Tracker: the
// trailer set before arrives, the one set after is lost.
func TestTrailersOfEndedStreams(t *testing.T) {
	for _, waiting := range []bool{false, true} {
		for _, tp := range transports {
			name := "busy/" + tp.name
			if waiting {
				name = "waiting/" + tp.name
			}
			t.Run(name, func(t *testing.T) {
				tr := interceptors.NewTracker()
				recvd := make(chan struct{}, 1)
				proceed := make(chan struct{})
				recvs := make(chan int, 2)
				// countRecvs comes first, outside the Tracker's wrapper.
				srv := grpc.NewServer(append([]grpc.ServerOption{grpc.ChainStreamInterceptor(countRecvs(recvs))}, tr.ServerOptions()...)...)
				testgrpc.RegisterTestServiceServer(srv, &streamService{duplex: func(stream testgrpc.TestService_FullDuplexCallServer) error {
					if _, err := stream.Recv(); err != nil {
						return err
					}
					stream.SetTrailer(metadata.Pairs("x-before", "1"))
					recvd <- struct{}{}
					if !waiting {
						<-stream.Context().Done() // busy elsewhere, until cancelled
					}
					_, err := stream.Recv()
					if err == nil || err == io.EOF {
						return errors.New("Recv() succeeded after the stream was cancelled")
					}
					stream.SetTrailer(metadata.Pairs("x-after", "1"))
					close(proceed)
					return err
				}})
				cc := tp.serve(t, srv)
				stream := openDuplex(t, cc, recvd)
				for waiting && receive(t, recvs, "the handler's second Recv") < 2 {
				}
				if n := tr.CancelAll(errDrain); n != 1 {
					t.Errorf("CancelAll() = %d, want 1", n)
				}
				_, err := stream.Recv()
				checkShuttingDown(t, "client Recv() after CancelAll", err, errDrain)
				receive(t, proceed, "the handler to set its last trailer")
				checkIdle(t, tr)
				md := stream.Trailer()
				if got := md.Get("x-before"); len(got) != 1 {
					t.Errorf("trailer x-before = %q, want it delivered: %v", got, md)
				}
				gotAfter := len(md.Get("x-after")) == 1
				if wantAfter := !waiting; gotAfter != wantAfter {
					t.Errorf("trailer x-after delivered: %t, want %t (trailer %v)", gotAfter, wantAfter, md)
				}
			})
		}
	}
}

// countRecvs returns a stream interceptor, to be put before the Tracker's,
// that sends on recvs how many times the handler has called RecvMsg, as
// the call reaches it: the Tracker's wrapper calls it, so once it has sent
// 2, the handler is in its second RecvMsg, counted in by the Tracker.
func countRecvs(recvs chan<- int) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		return handler(srv, &recvCounter{ServerStream: ss, recvs: recvs})
	}
}

type recvCounter struct {
	grpc.ServerStream
	recvs chan<- int
	n     int
}

func (s *recvCounter) RecvMsg(m any) error {
	s.n++
	select {
	case s.recvs <- s.n:
	default:
	}
	return s.ServerStream.RecvMsg(m)
}
