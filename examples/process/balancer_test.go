//go:build unix

package process_test

import (
	"io"
	"maps"
	"net"
	"slices"
	"sync"
	"testing"
	"time"
)

// dialBackendTimeout bounds the balancer's connection to a backend.
const dialBackendTimeout = 2 * time.Second

// A balancer is a TCP load balancer in the manner of a Kubernetes Service:
// it sends each new connection to the next of its backends in turn and
// proxies the bytes both ways. A backend that is terminating stays in its
// set for the propagation delay, as a terminating pod stays in a Service's
// endpoints until every node has heard of it. A connection it cannot take
// to a backend is closed.
type balancer struct {
	lis   net.Listener
	delay time.Duration // the propagation delay

	mu       sync.Mutex
	backends []string          // guarded by mu
	next     int               // guarded by mu
	conns    map[string]int    // connections proxied to each backend; guarded by mu
	refused  map[string]int    // connections a backend refused; guarded by mu
	ended    map[string]int    // proxied connections to each backend since closed; guarded by mu
	open     map[net.Conn]bool // guarded by mu
	timers   []*time.Timer     // guarded by mu
	closed   bool              // guarded by mu
	wg       sync.WaitGroup    // the goroutines of the balancer
}

// newBalancer starts a balancer on 127.0.0.1 in front of backends, closed
// at the end of the test.
func newBalancer(t *testing.T, delay time.Duration, backends ...string) *balancer {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &balancer{
		lis:      lis,
		delay:    delay,
		backends: slices.Clone(backends),
		conns:    make(map[string]int),
		refused:  make(map[string]int),
		ended:    make(map[string]int),
		open:     make(map[net.Conn]bool),
	}
	b.wg.Add(1)
	go b.serve()
	t.Cleanup(b.close)
	return b
}

// addr returns the balancer's address.
func (b *balancer) addr() string { return b.lis.Addr().String() }

// add adds a backend.
func (b *balancer) add(backend string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.backends = append(b.backends, backend)
}

// terminating tells the balancer that backend is shutting down: it is
// removed from the set once the propagation delay has passed.
func (b *balancer) terminating(backend string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	b.timers = append(b.timers, time.AfterFunc(b.delay, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		b.backends = slices.DeleteFunc(b.backends, func(s string) bool { return s == backend })
	}))
}

// stats returns the connections proxied to each backend and those each
// backend refused.
func (b *balancer) stats() (conns, refused map[string]int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return maps.Clone(b.conns), maps.Clone(b.refused)
}

// live returns the proxied connections open to each backend.
func (b *balancer) live() map[string]int {
	b.mu.Lock()
	defer b.mu.Unlock()
	live := make(map[string]int, len(b.conns))
	for backend, n := range b.conns {
		live[backend] = n - b.ended[backend]
	}
	return live
}

func (b *balancer) serve() {
	defer b.wg.Done()
	for {
		c, err := b.lis.Accept()
		if err != nil {
			return // closed
		}
		b.mu.Lock()
		if b.closed || len(b.backends) == 0 {
			b.mu.Unlock()
			c.Close()
			continue
		}
		backend := b.backends[b.next%len(b.backends)]
		b.next++
		b.open[c] = true
		b.wg.Add(1)
		b.mu.Unlock()
		go b.proxy(c, backend)
	}
}

// proxy connects c to backend, or closes c if backend cannot be reached.
func (b *balancer) proxy(c net.Conn, backend string) {
	defer b.wg.Done()
	defer b.forget(c)
	bc, err := net.DialTimeout("tcp", backend, dialBackendTimeout)
	b.mu.Lock()
	if err != nil {
		b.refused[backend]++
		b.mu.Unlock()
		return
	}
	if b.closed {
		b.mu.Unlock()
		bc.Close()
		return
	}
	b.conns[backend]++
	b.open[bc] = true
	b.mu.Unlock()
	defer b.forget(bc)
	defer func() {
		b.mu.Lock()
		b.ended[backend]++
		b.mu.Unlock()
	}()

	// When either side ends, both are closed, which ends the other copy.
	done := make(chan struct{}, 2)
	copyAndClose := func(dst, src net.Conn) {
		io.Copy(dst, src)
		dst.Close()
		src.Close()
		done <- struct{}{}
	}
	go copyAndClose(bc, c)
	go copyAndClose(c, bc)
	<-done
	<-done
}

// forget closes c and drops it from the open connections.
func (b *balancer) forget(c net.Conn) {
	c.Close()
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.open, c)
}

// close stops the balancer, closes its connections and waits for its
// goroutines.
func (b *balancer) close() {
	b.mu.Lock()
	b.closed = true
	for _, t := range b.timers {
		t.Stop()
	}
	for c := range b.open {
		c.Close()
	}
	b.mu.Unlock()
	b.lis.Close()
	b.wg.Wait()
}
