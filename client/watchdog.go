package client

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"time"
)

// The defaults of Watchdog.
const (
	// DefaultWatchdogInterval is the time between two looks of a Watchdog
	// at every conn, when its Interval is 0.
	DefaultWatchdogInterval = 5 * time.Second
	// DefaultStuckAfter is how long a conn must have been neither Ready
	// nor Idle to be reported, when a Watchdog's After is 0.
	DefaultStuckAfter = 15 * time.Second
)

// A Watchdog reports the ClientConns made by NewClient that stay stuck,
// neither Ready nor Idle (so Connecting or TransientFailure), for After or
// more: a target that does not resolve, a server that accepts connections
// and never speaks HTTP/2, credentials that never work. It looks at every
// conn every Interval, with ClientConn.GetState (see Stuck), from the one
// goroutine that runs Run, however many conns there are.
//
//	go client.Watchdog{Logger: logger}.Run(ctx)
type Watchdog struct {
	// Logger receives one record at slog.LevelWarn per conn and episode
	// of being stuck, with the conn's target, state, how long it has been
	// stuck and where it was made. Required.
	Logger *slog.Logger
	// Interval is the time between two looks at every conn. The default
	// value (0) is DefaultWatchdogInterval.
	Interval time.Duration
	// After is how long a conn must have been seen stuck to be reported.
	// The default value (0) is DefaultStuckAfter.
	After time.Duration
}

// Run looks at every conn at once, then every Interval, until ctx ends,
// and logs each conn found stuck for After or more, once: a conn is logged
// again only if it was seen Ready or Idle meanwhile and then stuck again
// for After. It panics if Logger is nil or Interval or After is negative.
func (w Watchdog) Run(ctx context.Context) {
	if w.Logger == nil {
		panic("client: Watchdog.Run: nil Logger")
	}
	if w.Interval < 0 || w.After < 0 {
		panic(fmt.Sprintf("client: Watchdog.Run: negative Interval %v or After %v", w.Interval, w.After))
	}
	interval := cmp.Or(w.Interval, DefaultWatchdogInterval)
	after := cmp.Or(w.After, DefaultStuckAfter)
	// reported holds, for each conn reported and still stuck, the
	// episode it was reported for: when it was first seen stuck.
	reported := map[uint64]time.Time{}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		now := time.Now()
		stuck := map[uint64]time.Time{}
		for _, s := range openConns() {
			if s.since.IsZero() {
				continue
			}
			if since, ok := reported[s.e.id]; ok && since.Equal(s.since) {
				stuck[s.e.id] = since
				continue
			}
			if d := now.Sub(s.since); d >= after {
				w.Logger.LogAttrs(ctx, slog.LevelWarn, "client: ClientConn stuck",
					slog.String("target", s.e.target),
					slog.String("state", s.state.String()),
					slog.Duration("stuck_for", d.Round(time.Millisecond)),
					slog.Time("created", s.e.created),
					slog.String("created_at", formatStack(s.e.pcs)))
				stuck[s.e.id] = s.since
			}
		}
		reported = stuck
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
