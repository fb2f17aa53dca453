package client

import (
	"cmp"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
)

// maxStackDepth bounds the frames recorded of where a ClientConn was made.
const maxStackDepth = 32

// sweepPerNewClient is how many registered conns each NewClient looks at,
// dropping those found closed: above 1, so that the registry never holds
// more than a fraction more closed conns than it has seen made, whatever
// the number open.
const sweepPerNewClient = 2

// An OpenConn describes a ClientConn made by NewClient and not closed yet.
type OpenConn struct {
	Target  string    // the target given to NewClient
	Created time.Time // when NewClient returned it
	// Stack is where NewClient was called: one function a line, its
	// file and line on the next, indented, innermost first, as in a
	// goroutine's trace.
	Stack string
	// State is the conn's state when it was listed. StuckSince, for a
	// conn that is neither Ready nor Idle, is when it was first seen so
	// (see Stuck); zero otherwise.
	State      connectivity.State
	StuckSince time.Time
}

// String returns the conn's target, age and stack on several lines, and
// for a conn seen stuck, its state and since when.
func (c OpenConn) String() string {
	stuck := ""
	if !c.StuckSince.IsZero() {
		stuck = fmt.Sprintf(", %v for %v", c.State, time.Since(c.StuckSince).Round(time.Millisecond))
	}
	return fmt.Sprintf("ClientConn to %q, open for %v%s, created at:\n%s", c.Target, time.Since(c.Created).Round(time.Millisecond), stuck, c.Stack)
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

	index int // in registry.entries; guarded by registry.mu
	// badSince is when the conn was first seen neither Ready nor Idle,
	// in Unix nanoseconds, with no sighting of it Ready or Idle since; 0
	// when it was last seen Ready or Idle.
	badSince atomic.Int64
}

// registry holds the ClientConns made by NewClient, in no order. Entries
// are dropped when they are found closed: by Open, Stuck, the watchdog,
// VerifyNone and StopHook, which look at every entry, and by NewClient,
// which looks at sweepPerNewClient of them in turn. Each costs O(1) per
// conn made, whatever the number open.
var registry struct {
	mu      sync.Mutex
	next    uint64
	entries []*entry
	cursor  int // the next entry NewClient looks at
}

// NewClient is grpc.NewClient, and records the ClientConn it returns with
// where it was made, until it is closed: Open lists it, Stuck and the
// Watchdog report it when it cannot connect, VerifyNone fails a test that
// leaves it open, and StopHook closes it when a server drains. It does not
// add DialOptions: give them in opts.
func NewClient(target string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	cc, err := grpc.NewClient(target, opts...)
	if err != nil {
		return nil, err
	}
	pcs := make([]uintptr, maxStackDepth)
	pcs = pcs[:runtime.Callers(2, pcs)]
	now := time.Now()
	e := &entry{cc: cc, target: target, created: now, pcs: pcs}
	registry.mu.Lock()
	defer registry.mu.Unlock()
	registry.next++
	e.id = registry.next
	e.index = len(registry.entries)
	registry.entries = append(registry.entries, e)
	// GetState takes a lock of the conn's own, never this one.
	for range sweepPerNewClient {
		if registry.cursor >= len(registry.entries) {
			registry.cursor = 0
		}
		old := registry.entries[registry.cursor]
		if old.observe(now) == connectivity.Shutdown {
			removeLocked(old) // moves the last entry to the cursor
			continue
		}
		registry.cursor++
	}
	return cc, nil
}

// removeLocked drops e from the registry, if it is there, in O(1): the
// last entry takes its place. registry.mu must be held.
func removeLocked(e *entry) {
	es := registry.entries
	if e.index >= len(es) || es[e.index] != e {
		return
	}
	last := es[len(es)-1]
	es[e.index], last.index = last, e.index
	es[len(es)-1] = nil
	registry.entries = es[:len(es)-1]
}

func forget(e *entry) {
	registry.mu.Lock()
	removeLocked(e)
	registry.mu.Unlock()
}

// observe reads the conn's state now, and records when it was first seen
// neither Ready nor Idle.
func (e *entry) observe(now time.Time) connectivity.State {
	s := e.cc.GetState()
	switch s {
	case connectivity.Ready, connectivity.Idle:
		e.badSince.Store(0)
	case connectivity.Connecting, connectivity.TransientFailure:
		e.badSince.CompareAndSwap(0, now.UnixNano())
	}
	return s
}

// A sighting is an open conn as observed by openConns.
type sighting struct {
	e     *entry
	state connectivity.State
	since time.Time // when it was first seen neither Ready nor Idle; zero if it is
}

func (s sighting) describe() OpenConn {
	return OpenConn{Target: s.e.target, Created: s.e.created, Stack: formatStack(s.e.pcs), State: s.state, StuckSince: s.since}
}

// openConns observes every ClientConn made by NewClient, forgets those
// closed, and returns the others, oldest first.
func openConns() []sighting {
	registry.mu.Lock()
	entries := slices.Clone(registry.entries)
	registry.mu.Unlock()
	slices.SortFunc(entries, func(a, b *entry) int { return cmp.Compare(a.id, b.id) })

	now := time.Now()
	open := make([]sighting, 0, len(entries))
	for _, e := range entries {
		s := e.observe(now)
		if s == connectivity.Shutdown {
			forget(e)
			continue
		}
		var since time.Time
		if ns := e.badSince.Load(); ns != 0 {
			since = time.Unix(0, ns)
		}
		open = append(open, sighting{e: e, state: s, since: since})
	}
	return open
}

// Open returns the ClientConns made by NewClient and not closed yet, oldest
// first.
func Open() []OpenConn {
	var open []OpenConn
	for _, s := range openConns() {
		open = append(open, s.describe())
	}
	return open
}

// Stuck returns the ClientConns made by NewClient, not closed, that have
// been neither Ready nor Idle (so Connecting or TransientFailure) for at
// least after, oldest first. A conn never used (Idle) or Ready is never
// listed.
//
// The registry learns a conn's state by looking at it, with
// ClientConn.GetState, not by following it: a conn is stuck since the first
// look that found it neither Ready nor Idle, with no look since that found
// it Ready or Idle. Looks are taken by Stuck itself, Open, the Watchdog,
// and NewClient (a few conns each). So a first call of Stuck on a conn
// connecting for a minute lists it only if an earlier look saw it: call
// Stuck at intervals shorter than after, or run a Watchdog, which does.
// A conn that flaps between Ready and TransientFailure faster than the
// looks may be listed if every look finds it failing.
func Stuck(after time.Duration) []OpenConn {
	var stuck []OpenConn
	cutoff := time.Now().Add(-after)
	for _, s := range openConns() {
		if !s.since.IsZero() && !s.since.After(cutoff) {
			stuck = append(stuck, s.describe())
		}
	}
	return stuck
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
