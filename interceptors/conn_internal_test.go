package interceptors

import (
	"bytes"
	"context"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
)

// discardConn accepts every write.
type discardConn struct{ net.Conn }

func (discardConn) Write(p []byte) (int, error) { return len(p), nil }

// TestSniffFindsMaxAgeGoAway writes, in chunks of every size, the frames
// of a connection: GOAWAYs of other kinds (a drain's, a keepalive
// policy's, debug data that begins as grpc's), a DATA frame whose payload
// holds a GOAWAY frame, then grpc's max_age GOAWAY. Only the last must be
// seen, and only once it is written whole.
func TestSniffFindsMaxAgeGoAway(t *testing.T) {
	var buf bytes.Buffer
	fr := http2.NewFramer(&buf, nil)
	fr.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 100})
	fr.WriteGoAway(1<<31-1, http2.ErrCodeNo, []byte("graceful_stop"))
	fr.WriteGoAway(1<<31-1, http2.ErrCodeEnhanceYourCalm, []byte("too_many_pings"))
	fr.WriteGoAway(1<<31-1, http2.ErrCodeNo, []byte("max_age!"))
	var inner bytes.Buffer
	http2.NewFramer(&inner, nil).WriteGoAway(1, http2.ErrCodeNo, []byte(grpcMaxAge))
	fr.WriteData(1, false, inner.Bytes())
	fr.WritePing(false, [8]byte{})
	fr.WriteGoAway(1<<31-1, http2.ErrCodeNo, []byte(grpcMaxAge))
	frames := buf.Bytes()
	for chunk := 1; chunk <= len(frames); chunk++ {
		rec := &connRecord{}
		rec.aged.Store(true)
		c := &sniffConn{Conn: discardConn{}, rec: rec}
		for i := 0; i < len(frames); i += chunk {
			end := min(i+chunk, len(frames))
			if c.done {
				t.Fatalf("chunks of %d: GOAWAY seen after %d of %d bytes, want after all", chunk, i, len(frames))
			}
			c.Write(frames[i:end])
		}
		if !c.done {
			t.Fatalf("chunks of %d: max_age GOAWAY not seen", chunk)
		}
	}
}

// BenchmarkSniffWrite measures the reading of one write, the frames grpc
// writes at once for a unary response (headers, data, trailers), with and
// without the reader.
func BenchmarkSniffWrite(b *testing.B) {
	var buf bytes.Buffer
	fr := http2.NewFramer(&buf, nil)
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: make([]byte, 14), EndHeaders: true})
	fr.WriteData(1, false, make([]byte, 5))
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: make([]byte, 24), EndHeaders: true, EndStream: true})
	p := buf.Bytes()
	for _, sniff := range []bool{false, true} {
		name := "sniff=off"
		var c net.Conn = discardConn{}
		if sniff {
			name = "sniff=on"
			c = &sniffConn{Conn: discardConn{}, rec: &connRecord{}}
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				c.Write(p)
			}
		})
	}
}

// TestCredentialsForgetClosedConnections opens connections of every kind
// to a server with Tracker.Credentials: a TCP probe that closes without a
// word (a load balancer's health check), one that sends a bogus preface,
// and a grpc client. Once the server has stopped, the Tracker must know
// no connection.
func TestCredentialsForgetClosedConnections(t *testing.T) {
	tr := NewTracker()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("net.Listen() = %v", err)
	}
	srv := grpc.NewServer(grpc.Creds(tr.Credentials(insecure.NewCredentials())))
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	for _, hello := range []string{"", "GET / HTTP/1.1\r\nHost: x\r\n\r\n"} {
		for range 5 {
			c, err := net.Dial("tcp", lis.Addr().String())
			if err != nil {
				t.Fatalf("net.Dial() = %v", err)
			}
			if hello != "" {
				c.Write([]byte(hello))
				io.Copy(io.Discard, c) // until the server closes it
			}
			c.Close()
		}
	}
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc.NewClient() = %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cc.Connect()
	for s := cc.GetState(); s != connectivity.Ready; s = cc.GetState() {
		if !cc.WaitForStateChange(ctx, s) {
			t.Fatalf("connection not ready: %v", ctx.Err())
		}
	}
	// The grpc client's connection is open, its handshake done: the
	// Tracker must know it, or the check below proves nothing.
	tr.watch.mu.RLock()
	open := len(tr.watch.conns)
	tr.watch.mu.RUnlock()
	if open == 0 {
		t.Errorf("the Tracker knows no connection while a client is connected, want at least 1")
	}
	cc.Close()
	srv.Stop()
	<-served
	tr.watch.mu.RLock()
	defer tr.watch.mu.RUnlock()
	if n := len(tr.watch.conns); n != 0 {
		t.Errorf("the Tracker knows %d connections after the server stopped, want 0: %v", n, tr.watch.conns)
	}
}
