package interceptors

import (
	"bytes"
	"net"
	"testing"

	"golang.org/x/net/http2"
)

// discardConn accepts every write.
type discardConn struct{ net.Conn }

func (discardConn) Write(p []byte) (int, error) { return len(p), nil }

// TestSniffFindsMaxAgeGoAway writes, in chunks of every size, the frames
// of a connection: a GOAWAY of another kind, a DATA frame whose payload
// holds a GOAWAY frame, then grpc's max_age GOAWAY. Only the last must be
// seen, and only once it is written whole.
func TestSniffFindsMaxAgeGoAway(t *testing.T) {
	var buf bytes.Buffer
	fr := http2.NewFramer(&buf, nil)
	fr.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 100})
	fr.WriteGoAway(1<<31-1, http2.ErrCodeNo, []byte("graceful_stop"))
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
