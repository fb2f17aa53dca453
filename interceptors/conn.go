package interceptors

import (
	"net"
	"slices"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc/credentials"
)

// Credentials returns creds, wrapped so that t learns when grpc sends GOAWAY
// on a connection for its age (keepalive.ServerParameters.MaxConnectionAge)
// and then ends the long-lived streams on it at once, with codes.Unavailable
// and the ErrorInfo of a cancelled call whose MetadataRetired says
// RetiredConnectionAge. Their clients, which have the GOAWAY by then, open
// them again on a new connection (package client resumes them), perhaps to
// another server behind an L4 balancer, rather than losing them to a
// transport error when the aged connection closes at the end of
// MaxConnectionAgeGrace. The aged connection then closes as soon as its
// other RPCs are done. Give it to the server as
//
//	grpc.Creds(t.Credentials(creds))
//
// with insecure.NewCredentials() for a server without TLS. A long-lived
// stream that arrives on a connection after its GOAWAY is ended at once.
//
// How it knows: grpc-go tells nobody, through its public API, that it sent
// GOAWAY on one connection, and it draws each connection's age at random
// (MaxConnectionAge ±10%), so the Tracker cannot compute it. The connection
// returned by creds' handshake is wrapped, and the frame headers that grpc
// writes to it are read, without copying, until a GOAWAY frame whose debug
// data is grpc's "max_age"; that costs a few comparisons per write and
// nothing once the GOAWAY is seen. The streams of a connection are found by
// their addresses (peer.Peer's Addr and LocalAddr), so connections with
// the same pair of addresses, which TCP forbids but Unix sockets (all of
// whose clients are "@") and in-memory transports such as bufconn allow,
// are not told apart: the streams that begin while two or more such
// connections are open are never ended for their connection's age (test
// this over TCP loopback, not bufconn). A connection that does not know its
// addresses (a nil LocalAddr or RemoteAddr, which some tunnels return) is
// not read.
//
// Limits: grpc.Server.ServeHTTP has no credentials and no MaxConnectionAge
// of grpc's, so this does nothing there. A stream is ended only once grpc
// has sent the GOAWAY: when MaxConnectionAge is off, nothing happens. The
// GOAWAY of a drain (GracefulStop) is left to the drain, which ends
// long-lived streams itself (CancelLongLived).
func (t *Tracker) Credentials(creds credentials.TransportCredentials) credentials.TransportCredentials {
	if creds == nil {
		panic("interceptors: Tracker.Credentials: nil credentials: give insecure.NewCredentials() for a server without TLS")
	}
	t.watch.on.Store(true)
	return &ageCreds{TransportCredentials: creds, t: t}
}

// ageCreds wraps the connections of its credentials' server handshakes.
type ageCreds struct {
	credentials.TransportCredentials
	t *Tracker
}

func (c *ageCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := c.TransportCredentials.ServerHandshake(raw)
	if err != nil || conn == nil || conn.LocalAddr() == nil || conn.RemoteAddr() == nil {
		// A connection without addresses, which grpc serves, cannot be
		// matched with its streams: it is left unread.
		return conn, info, err
	}
	return c.t.watch.wrap(c.t, conn), info, nil
}

func (c *ageCreds) Clone() credentials.TransportCredentials {
	return &ageCreds{TransportCredentials: c.TransportCredentials.Clone(), t: c.t}
}

// ageWatch knows the connections wrapped by Credentials, by their
// addresses.
type ageWatch struct {
	on    atomic.Bool // Credentials has been called
	mu    sync.RWMutex
	conns map[string][]*connRecord // the live connections with these addresses
}

// A connRecord is one connection. Its long-lived streams point to it; it
// does not list them, so that streams begin and end without a lock of the
// connection's: when it ages, the Tracker's registry is searched for them.
type connRecord struct {
	key  string
	t    *Tracker
	aged atomic.Bool // grpc sent GOAWAY for its age
}

func connKey(local, remote net.Addr) string {
	return local.Network() + " " + local.String() + " " + remote.String()
}

func (w *ageWatch) wrap(t *Tracker, conn net.Conn) net.Conn {
	rec := &connRecord{key: connKey(conn.LocalAddr(), conn.RemoteAddr()), t: t}
	w.mu.Lock()
	if w.conns == nil {
		w.conns = map[string][]*connRecord{}
	}
	if isTCP(conn) {
		// A TCP connection's addresses are those of no other live one: a
		// record found is that of a connection closed behind grpc's back
		// (grpc closes the unwrapped connection when its transport fails
		// to start).
		w.conns[rec.key] = []*connRecord{rec}
	} else {
		// Connections of other transports may share their addresses (all
		// those of a Unix socket do): while they do, their streams cannot
		// be told apart.
		w.conns[rec.key] = append(w.conns[rec.key], rec)
	}
	w.mu.Unlock()
	return &sniffConn{Conn: conn, w: w, rec: rec}
}

func isTCP(conn net.Conn) bool {
	_, local := conn.LocalAddr().(*net.TCPAddr)
	_, remote := conn.RemoteAddr().(*net.TCPAddr)
	return local && remote
}

// lookup returns the live connection with the addresses of key, or nil if
// there is none, or more than one.
func (w *ageWatch) lookup(key string) *connRecord {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if recs := w.conns[key]; len(recs) == 1 {
		return recs[0]
	}
	return nil
}

// forget removes rec, whose connection is closed.
func (w *ageWatch) forget(rec *connRecord) {
	w.mu.Lock()
	recs := slices.DeleteFunc(w.conns[rec.key], func(r *connRecord) bool { return r == rec })
	if len(recs) == 0 {
		delete(w.conns, rec.key)
	} else {
		w.conns[rec.key] = recs
	}
	w.mu.Unlock()
}

// age retires the long-lived streams of the connection, once. A stream
// that begins meanwhile is either found here or sees aged when it starts.
func (c *connRecord) age() {
	if c.aged.Swap(true) {
		return
	}
	var rs []*retirement
	c.t.each(func(k *call) {
		if k.ret != nil && k.ret.conn == c {
			rs = append(rs, k.ret)
		}
	})
	// Retired outside the registry's locks, which retiring takes.
	for _, r := range rs {
		r.warn(0, ErrConnectionAge)
	}
}

// HTTP/2 framing (RFC 9113, section 4.1).
const (
	frameHeaderLen = 9
	frameGoAway    = 0x7
	goAwayFixedLen = 8 // last stream ID and error code, before the debug data
)

// grpcMaxAge is the debug data of the GOAWAY that grpc-go sends when a
// connection reaches its MaxConnectionAge (v1.85.0:
// internal/transport/http2_server.go, keepalive).
const grpcMaxAge = "max_age"

// sniffConn reads the frames written to its connection, which grpc writes
// from one goroutine at a time, until it sees the GOAWAY of an aged
// connection.
type sniffConn struct {
	net.Conn
	w    *ageWatch
	rec  *connRecord
	done bool // the GOAWAY was seen, or the stream could not be read

	hdr  [frameHeaderLen]byte // the frame header being read
	nhdr int
	left int // bytes of the current frame's payload not yet written

	goAway bool // the current frame is a GOAWAY
	ga     [goAwayFixedLen + len(grpcMaxAge)]byte
	nga    int
	galen  int // the length of the GOAWAY's payload
}

func (c *sniffConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if !c.done {
		// After the write: the client has the GOAWAY before the streams
		// end, so that it opens them again on a new connection.
		c.scan(p[:n])
	}
	return n, err
}

func (c *sniffConn) Close() error {
	c.w.forget(c.rec)
	return c.Conn.Close()
}

func (c *sniffConn) scan(p []byte) {
	for len(p) > 0 && !c.done {
		if c.left == 0 && c.nhdr < frameHeaderLen {
			k := copy(c.hdr[c.nhdr:], p)
			c.nhdr += k
			p = p[k:]
			if c.nhdr < frameHeaderLen {
				return
			}
			c.left = int(c.hdr[0])<<16 | int(c.hdr[1])<<8 | int(c.hdr[2])
			c.goAway = c.hdr[3] == frameGoAway
			c.nga, c.galen = 0, c.left
			if c.left == 0 {
				c.frameDone()
			}
			continue
		}
		k := min(c.left, len(p))
		if c.goAway && c.nga < len(c.ga) {
			c.nga += copy(c.ga[c.nga:], p[:k])
		}
		c.left -= k
		p = p[k:]
		if c.left == 0 {
			c.frameDone()
		}
	}
}

// frameDone ends the frame just written.
func (c *sniffConn) frameDone() {
	c.nhdr = 0
	if !c.goAway {
		return
	}
	c.goAway = false
	if c.galen == len(c.ga) && string(c.ga[goAwayFixedLen:c.nga]) == grpcMaxAge {
		c.done = true
		go c.rec.age()
	}
}
