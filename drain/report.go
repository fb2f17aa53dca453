package drain

import (
	"log/slog"
	"time"

	"github.com/drainkit/drainkit/interceptors"
	"github.com/drainkit/drainkit/stophook"
)

// A Report tells what a drain did. It logs as one structured record.
type Report struct {
	Started   time.Time
	Duration  time.Duration
	Phases    []PhaseReport // the phases that ran, in order
	Cancelled int           // handlers whose context the drain cancelled
	Forced    bool          // the forced stop cut RPCs, or handlers outlived it

	// Skipped says why the drain skipped its remaining waits (a second
	// signal, or the end of the context given to Drain); "" if it did not.
	Skipped string

	// Leaked lists the handlers still running when the drain gave up on
	// them, oldest first.
	Leaked []interceptors.Call

	// NotCalled lists the hook calls the drain did not make, each a
	// *HookError wrapping ErrHookNotCalled, in the order they were due:
	// the hook could no longer handle its event in time (with every wait
	// zero, hooks see Cleanup alone), or was still busy with an earlier
	// one. They are not errors of the drain: a hook that outlived its
	// time was reported as such when it did.
	NotCalled []error
}

// A PhaseReport tells what one phase of a drain did.
type PhaseReport struct {
	Phase    stophook.Phase // NotReady, Graceful, Cancel, Force or Cleanup
	Duration time.Duration
	InFlight int // RPCs whose handler was running when the phase began

	started time.Time
}

// round renders d for people: milliseconds with at most three decimals.
func round(d time.Duration) string { return d.Round(time.Microsecond).String() }

// LogValue presents the report as one group: duration, forced, cancelled,
// each phase with its duration and in-flight count, and each leaked handler
// with its method and age.
func (r Report) LogValue() slog.Value {
	phases := make([]slog.Attr, len(r.Phases))
	for i, p := range r.Phases {
		phases[i] = slog.Group(p.Phase.String(), slog.String("duration", round(p.Duration)), slog.Int("in_flight", p.InFlight))
	}
	attrs := []slog.Attr{
		slog.String("duration", round(r.Duration)),
		slog.Bool("forced", r.Forced),
		slog.Int("cancelled", r.Cancelled),
		{Key: "phases", Value: slog.GroupValue(phases...)},
	}
	if r.Skipped != "" {
		attrs = append(attrs, slog.String("skipped", r.Skipped))
	}
	if len(r.Leaked) > 0 {
		end := r.Started.Add(r.Duration)
		leaked := make([]string, len(r.Leaked))
		for i, c := range r.Leaked {
			leaked[i] = c.Method + " (age " + round(end.Sub(c.Started)) + ")"
		}
		attrs = append(attrs, slog.Int("leaked", len(r.Leaked)), slog.Any("leaked_handlers", leaked))
	}
	if len(r.NotCalled) > 0 {
		missed := make([]string, len(r.NotCalled))
		for i, err := range r.NotCalled {
			missed[i] = err.Error()
		}
		attrs = append(attrs, slog.Any("hooks_not_called", missed))
	}
	return slog.GroupValue(attrs...)
}
