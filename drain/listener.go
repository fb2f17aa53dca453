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
type drainListener struct {
	net.Listener

	closeOnce      sync.Once
	closed         chan struct{} // closed by Close
	closeInnerOnce sync.Once
	innerErr       error // the error of closing the wrapped listener

	// acceptMu is held while the listener's own Accept runs, so that
	// stopAccepting can wait for one it has interrupted.
	acceptMu sync.Mutex

	mu       sync.Mutex
	stopping bool      // guarded by mu
	last     time.Time // when Accept last returned a connection; guarded by mu
}

func newDrainListener(lis net.Listener) *drainListener {
	return &drainListener{Listener: lis, closed: make(chan struct{})}
}

// Accept returns the next connection, until stopAccepting is called: then
// it waits for Close and returns net.ErrClosed.
func (l *drainListener) Accept() (net.Conn, error) {
	for {
		if l.isStopping() {
			<-l.closed
			return nil, net.ErrClosed
		}
		l.acceptMu.Lock()
		if l.isStopping() {
			l.acceptMu.Unlock()
			continue
		}
		c, err := l.Listener.Accept()
		if err == nil {
			l.mu.Lock()
			l.last = time.Now()
			l.mu.Unlock()
		}
		l.acceptMu.Unlock()
		if err != nil {
			if l.isStopping() {
				continue // interrupted by stopAccepting
			}
			return nil, err
		}
		return c, nil
	}
}

func (l *drainListener) isStopping() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stopping
}

// stopAccepting makes Accept stop taking connections: it closes the
// wrapped listener, which ends an Accept in progress, waits for that Accept
// to return, and returns when grpc will surely have taken up the connection
// accepted last.
func (l *drainListener) stopAccepting() time.Time {
	l.mu.Lock()
	l.stopping = true
	l.mu.Unlock()
	l.closeInner()
	l.acceptMu.Lock()
	//lint:ignore SA2001 waits for the interrupted Accept to return
	l.acceptMu.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last.Add(acceptSettle)
}

func (l *drainListener) closeInner() error {
	l.closeInnerOnce.Do(func() { l.innerErr = l.Listener.Close() })
	return l.innerErr
}

// Close closes the listener, and ends an Accept that waits.
func (l *drainListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.closeInner()
}
