package client

import (
	"cmp"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
)

// maxStackDepth bounds the frames recorded of where a ClientConn was made.
const maxStackDepth = 32

// An OpenConn describes a ClientConn made by NewClient and not closed yet.
type OpenConn struct {
	Target  string    // the target given to NewClient
	Created time.Time // when NewClient returned it
	// Stack is where NewClient was called: one function a line, its
	// file and line on the next, indented, innermost first, as in a
	// goroutine's trace.
	Stack string
}

// String returns the conn's target, age and stack on several lines.
func (c OpenConn) String() string {
	return fmt.Sprintf("ClientConn to %q, open for %v, created at:\n%s", c.Target, time.Since(c.Created).Round(time.Millisecond), c.Stack)
}

// An entry is a ClientConn in the registry. It holds the conn strongly: a
// conn left open stays listed until it is closed, even one that nothing
// else reaches any more (see "Leaks" in the package documentation).
type entry struct {
	id      uint64
	cc      *grpc.ClientConn
	target  string
	created time.Time
	pcs     []uintptr
}

// registry holds the ClientConns made by NewClient. Entries are dropped when
// they are found closed: by Open, VerifyNone and StopHook, and by NewClient,
// so that closed conns never pile up.
var registry struct {
	mu      sync.Mutex
	next    uint64
	entries map[uint64]*entry
}

// NewClient is grpc.NewClient, and records the ClientConn it returns with
// where it was made, until it is closed: Open lists it, VerifyNone fails a
// test that leaves it open, and StopHook closes it when a server drains.
// It does not add DialOptions: give them in opts.
func NewClient(target string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	cc, err := grpc.NewClient(target, opts...)
	if err != nil {
		return nil, err
	}
	pcs := make([]uintptr, maxStackDepth)
	pcs = pcs[:runtime.Callers(2, pcs)]
	e := &entry{cc: cc, target: target, created: time.Now(), pcs: pcs}
	registry.mu.Lock()
	defer registry.mu.Unlock()
	if registry.entries == nil {
		registry.entries = make(map[uint64]*entry)
	}
	// GetState takes a lock of the conn's own, never this one.
	for id, old := range registry.entries {
		if old.cc.GetState() == connectivity.Shutdown {
			delete(registry.entries, id)
		}
	}
	registry.next++
	e.id = registry.next
	registry.entries[e.id] = e
	return cc, nil
}

func forget(id uint64) {
	registry.mu.Lock()
	delete(registry.entries, id)
	registry.mu.Unlock()
}

// openConns returns the ClientConns made by NewClient and not closed, oldest
// first, with their descriptions, and forgets those closed.
func openConns() ([]*grpc.ClientConn, []OpenConn) {
	registry.mu.Lock()
	entries := make([]*entry, 0, len(registry.entries))
	for _, e := range registry.entries {
		entries = append(entries, e)
	}
	registry.mu.Unlock()
	slices.SortFunc(entries, func(a, b *entry) int { return cmp.Compare(a.id, b.id) })

	var ccs []*grpc.ClientConn
	var open []OpenConn
	for _, e := range entries {
		cc := e.cc
		if cc.GetState() == connectivity.Shutdown {
			forget(e.id)
			continue
		}
		ccs = append(ccs, cc)
		open = append(open, OpenConn{Target: e.target, Created: e.created, Stack: formatStack(e.pcs)})
	}
	return ccs, open
}

// Open returns the ClientConns made by NewClient and not closed yet, oldest
// first.
func Open() []OpenConn {
	_, open := openConns()
	return open
}

func formatStack(pcs []uintptr) string {
	var b strings.Builder
	frames := runtime.CallersFrames(pcs)
	for {
		f, more := frames.Next()
		fmt.Fprintf(&b, "%s\n\t%s:%d\n", f.Function, f.File, f.Line)
		if !more {
			break
		}
	}
	return b.String()
}
