package drain

import (
	"cmp"
	"context"
	"log/slog"
	"slices"
	"time"

	"github.com/drainkit/drainkit/interceptors"
	"github.com/drainkit/drainkit/stophook"
)

// progressInterval is the time between two progress records of a phase
// that waits: often enough for a person watching a terminal, rare enough
// not to flood a log, whatever the number of RPCs.
const progressInterval = time.Second

// phases records the phases of one drain in its report and its log: one
// record as each phase begins or is skipped, and, while a phase waits, a
// progress record every progressInterval with the time left and the RPCs
// still in flight, by method.
type phases struct {
	d   *Drainer
	ctx context.Context
	r   *Report

	stopProgress func() // stops the current phase's progress records
}

// enter ends the current phase and begins the named one, which lasts
// bound at the most (0 for a phase that does not wait).
func (p *phases) enter(phase stophook.Phase, bound time.Duration) {
	p.begin(slog.LevelInfo, phase, bound, "")
}

// untrackedAfter is how long connections must stay open after the last
// tracked RPC has ended for the drain to take them as holding RPCs that
// the Tracker does not see. grpc closes a connection with no RPC left as
// soon as its client has acknowledged GOAWAY, a round trip.
const untrackedAfter = time.Second

// untrackedCause is what the Force record says when connections outlived
// every tracked RPC by untrackedAfter or more.
const untrackedCause = "RPCs that the Tracker does not see, most likely streams: " +
	"install its StreamServerInterceptor as well as its UnaryServerInterceptor, " +
	"or both at once with grpc.NewServer(t.ServerOptions()...); " +
	"or clients that never acknowledged GOAWAY, or that stopped reading a stream: " +
	"its status waits behind the messages queued for it"

// enterForce begins the Force phase, which cuts the RPCs still in flight
// (cut of them); why, if not "", is why the waits were skipped. untracked,
// if not 0, is how long the connections have outlived the last tracked
// RPC.
func (p *phases) enterForce(cut int, why string, untracked time.Duration) {
	level := slog.LevelInfo
	if cut > 0 {
		level = slog.LevelWarn
	}
	if why == "" && cut > 0 {
		why = "RPCs outlived the waits"
	}
	var extra []slog.Attr
	if why == "" && untracked >= untrackedAfter {
		level = slog.LevelWarn
		why = "no RPC left, yet connections stayed open " + round(untracked) + " after GOAWAY and the last tracked RPC; closing them"
		extra = append(extra, slog.String("likely_cause", untrackedCause))
	}
	if why == "" {
		why = "no RPC left; closing connections that did not close after GOAWAY"
	}
	p.begin(level, stophook.Force, p.d.o.forceWait, why, extra...)
}

func (p *phases) begin(level slog.Level, phase stophook.Phase, bound time.Duration, why string, extra ...slog.Attr) {
	p.leave()
	n := p.d.t.InFlight()
	start := time.Now()
	p.r.Phases = append(p.r.Phases, PhaseReport{Phase: phase, InFlight: n, started: start})
	attrs := []slog.Attr{slog.String("phase", phase.String()), slog.Int("in_flight", n)}
	if bound > 0 {
		attrs = append(attrs, slog.String("max", round(bound)))
	}
	if why != "" {
		attrs = append(attrs, slog.String("why", why))
	}
	attrs = append(attrs, extra...)
	p.d.o.logger.LogAttrs(p.ctx, level, "drain phase", attrs...)
	if bound > 0 && p.d.o.logger.Enabled(p.ctx, slog.LevelInfo) {
		p.stopProgress = p.progress(phase, start.Add(bound))
	}
}

// skip logs that the named phase does not run, and why.
func (p *phases) skip(phase stophook.Phase, why string) {
	p.d.o.logger.LogAttrs(p.ctx, slog.LevelInfo, "drain phase skipped",
		slog.String("phase", phase.String()), slog.String("why", why))
}

// leave ends the current phase: it records its duration and stops its
// progress records.
func (p *phases) leave() {
	if p.stopProgress != nil {
		p.stopProgress()
		p.stopProgress = nil
	}
	if len(p.r.Phases) > 0 {
		ph := &p.r.Phases[len(p.r.Phases)-1]
		if ph.Duration == 0 {
			ph.Duration = time.Since(ph.started)
		}
	}
}

// progress logs the progress of the named phase, which ends by deadline,
// every progressInterval, and returns a function that stops it and waits
// for it to stop.
func (p *phases) progress(phase stophook.Phase, deadline time.Time) (stop func()) {
	done, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(progressInterval)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				left := time.Until(deadline)
				if left <= 0 {
					continue // the phase ends now; its next record says so
				}
				calls := p.d.t.Calls()
				p.d.o.logger.LogAttrs(p.ctx, slog.LevelInfo, "drain progress",
					slog.String("phase", phase.String()), slog.String("left", round(left)),
					slog.Int("in_flight", len(calls)), slog.Any("methods", byMethod(calls)))
			}
		}
	}()
	return func() {
		close(done)
		<-stopped
	}
}

// byMethod presents calls as the number of calls of each method, most
// frequent first.
func byMethod(calls []interceptors.Call) slog.Value {
	counts := map[string]int{}
	for _, c := range calls {
		counts[c.Method]++
	}
	methods := make([]string, 0, len(counts))
	for m := range counts {
		methods = append(methods, m)
	}
	slices.SortFunc(methods, func(a, b string) int {
		return cmp.Or(cmp.Compare(counts[b], counts[a]), cmp.Compare(a, b))
	})
	attrs := make([]slog.Attr, len(methods))
	for i, m := range methods {
		attrs[i] = slog.Int(m, counts[m])
	}
	return slog.GroupValue(attrs...)
}
