package drain

import (
	"log/slog"
	"time"

	"github.com/drainkit/drainkit/interceptors"
)

// A Report tells what a drain did. It logs as one structured record.
type Report struct {
	Started   time.Time
	Duration  time.Duration
	Phases    []PhaseReport // the phases that ran, in order
	Cancelled int           // handlers whose context the drain cancelled
	Forced    bool          // the server had to be stopped by force

	// Leaked lists the handlers still running when the drain gave up on
	// them, oldest first.
	Leaked []interceptors.Call
}

// A PhaseReport tells what one phase of a drain did.
type PhaseReport struct {
	Name     string // PhaseNotReady, PhaseGraceful, PhaseCancel, PhaseForce or PhaseCleanup
	Duration time.Duration
	InFlight int // RPCs whose handler was running when the phase began

	started time.Time
}

// LogValue presents the report as one group: duration, forced, cancelled,
// each phase with its duration and in-flight count, and each leaked handler
// with its method and age.
func (r Report) LogValue() slog.Value {
	phases := make([]slog.Attr, len(r.Phases))
	for i, p := range r.Phases {
		phases[i] = slog.Group(p.Name, slog.Duration("duration", p.Duration), slog.Int("in_flight", p.InFlight))
	}
	attrs := []slog.Attr{
		slog.Duration("duration", r.Duration),
		slog.Bool("forced", r.Forced),
		slog.Int("cancelled", r.Cancelled),
		{Key: "phases", Value: slog.GroupValue(phases...)},
	}
	if len(r.Leaked) > 0 {
		end := r.Started.Add(r.Duration)
		leaked := make([]slog.Attr, len(r.Leaked))
		for i, c := range r.Leaked {
			leaked[i] = slog.Group(c.Method, slog.Duration("age", end.Sub(c.Started)), slog.Bool("stream", c.Stream))
		}
		attrs = append(attrs, slog.Int("leaked", len(r.Leaked)), slog.Attr{Key: "leaked_handlers", Value: slog.GroupValue(leaked...)})
	}
	return slog.GroupValue(attrs...)
}
