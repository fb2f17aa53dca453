package drain

import (
	"net"
	"sync"
	"time"
)

// acceptSettle is how long the drain lets grpc take up the connections it
// accepted last before it begins to stop. grpc-go's Serve hands each
// accepted connection to a goroutine of its own, which closes the
// connection, unread, if the server has begun to stop by the time it runs:
// a connection accepted a moment before GracefulStop is reset instead of
// drained, and under socket activation it is lost instead of waiting in
// the backlog for the next process. Goroutines run within microseconds on
// any machine that serves, so a pause of this length after the last accept
// lets every one of them begin its handshake, which GracefulStop then
// waits for and drains.
const acceptSettle = 100 * time.Millisecond

// A drainListener is the listener Serve gives grpc. When the drain begins
// to stop the server, it stops accepting: it closes the listener it wraps,
// as GracefulStop would a moment later, and Accept then waits, without
// taking connections, until grpc closes it. Under socket activation, where
// systemd holds the socket too, connections arriving from then on wait in
// its backlog for the next process rather than being accepted only to be
// reset.
//
// The wrapped listener's Accept runs on a goroutine of the drainListener's
// own, so that grpc's Accept returns as soon as grpc closes the listener,
// whatever the wrapped Accept does: a listener that reads a preamble from
// each connection inside Accept (the PROXY protocol) may wait on a client
// that sends nothing, and closing the listener does not end that wait.
// grpc's GracefulStop and Stop wait for its Accept to return before they
// touch a connection, so no wait of the drain depends on the wrapped
// Accept. A connection that the wrapped Accept returns while the drain
// stops accepting (as its listener closes) is still given to grpc, which
// drains it with the others: under socket activation no other process
// would take it. The drain waits, for at most acceptSettle for all its
// listeners together, for the wrapped Accept to end (settle), so that the
// settling covers that connection too; one returned later still, after
// Close, is closed.
type drainListener struct {
	net.Listener

	closeOnce      sync.Once
	closed         chan struct{} // closed by Close
	closeInnerOnce sync.Once

	startOnce sync.Once
	accepted  chan acceptResult // from the accepting goroutine to Accept
	failed    chan struct{}     // closed when the wrapped Accept has failed for good
	failure   error             // set before failed is closed

	loopDone chan struct{} // closed when the accepting goroutine returns

	mu       sync.Mutex
	stopping bool      // guarded by mu
	last     time.Time // when the wrapped Accept last returned a connection; guarded by mu
}

type acceptResult struct {
	c   net.Conn
	err error // a temporary error, which grpc retries
}

func newDrainListener(lis net.Listener) *drainListener {
	return &drainListener{
		Listener: lis,
		closed:   make(chan struct{}),
		accepted: make(chan acceptResult),
		failed:   make(chan struct{}),
		loopDone: make(chan struct{}),
	}
}

// Accept returns the next connection, until Close, or until the wrapped
// Accept fails once stopAccepting has closed it: then it waits for Close
// and returns net.ErrClosed.
func (l *drainListener) Accept() (net.Conn, error) {
	l.startOnce.Do(func() { go l.acceptLoop() })
	select {
	case r := <-l.accepted:
		return r.c, r.err
	case <-l.failed:
		if l.isStopping() {
			// The error of a listener that stopAccepting closed.
			break
		}
		return nil, l.failure
	case <-l.closed:
		return nil, net.ErrClosed
	}
	<-l.closed
	return nil, net.ErrClosed
}

// acceptLoop calls the wrapped Accept and hands what it returns to Accept,
// until it fails for good (stopAccepting closes it) or Close.
func (l *drainListener) acceptLoop() {
	defer close(l.loopDone)
	for {
		c, err := l.Listener.Accept()
		if err == nil {
			l.mu.Lock()
			l.last = time.Now()
			l.mu.Unlock()
		} else if !isTemporary(err) {
			l.failure = err
			close(l.failed)
			return
		}
		select {
		case l.accepted <- acceptResult{c: c, err: err}:
		case <-l.closed:
			if c != nil {
				c.Close()
			}
			return
		}
	}
}

// isTemporary reports whether grpc's Serve retries after err, as it does
// after an error whose Temporary method returns true.
func isTemporary(err error) bool {
	t, ok := err.(interface{ Temporary() bool })
	return ok && t.Temporary()
}

func (l *drainListener) isStopping() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stopping
}

// stopAccepting makes Accept stop taking connections: it closes the
// wrapped listener, which ends a wrapped Accept waiting on the socket.
func (l *drainListener) stopAccepting() {
	l.mu.Lock()
	l.stopping = true
	l.mu.Unlock()
	l.closeInner()
	l.startOnce.Do(func() { close(l.loopDone) }) // Serve never called Accept
}

// settle waits, once stopAccepting has been called, until at the latest
// for the wrapped Accept to end, and returns when grpc will surely have
// taken up the connection accepted last. A wrapped Accept or Close that
// does not end is left to end on its own: no wait of the drain depends on
// it past until.
func (l *drainListener) settle(until time.Time) time.Time {
	t := time.NewTimer(time.Until(until))
	select {
	case <-l.loopDone:
	case <-t.C:
	}
	t.Stop()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last.Add(acceptSettle)
}

// closeInner closes the wrapped listener, once, on a goroutine of its
// own: a wrapper's Close may wait on its own work (a preamble being read),
// and grpc calls Close under its server's lock, which Stop needs too.
func (l *drainListener) closeInner() {
	l.closeInnerOnce.Do(func() { go l.Listener.Close() })
}

// Close closes the listener, and ends an Accept that waits. It returns
// nil at once; the wrapped listener's Close runs on its own.
func (l *drainListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	l.closeInner()
	return nil
}
