package main

import (
	"testing"
	"time"

	"github.com/drainkit/drainkit/interceptors"
	"github.com/drainkit/drainkit/keepalive"
)

func TestKeepaliveOptions(t *testing.T) {
	for _, tt := range []struct {
		name  string
		grace time.Duration
		// wantGrace is the grace of aged connections: -grace, or the
		// Tracker's, which bounds no call of the demo.
		wantGrace time.Duration
	}{
		{name: "drain's grace period", grace: 7 * time.Second, wantGrace: 7 * time.Second},
		{name: "no grace period", grace: 0, wantGrace: keepalive.Infinity},
		{name: "a grace period below a second, which keepalive refuses", grace: 200 * time.Millisecond, wantGrace: keepalive.Infinity},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tracker := interceptors.NewTracker()
			if got := len(keepaliveOptions(tracker, tt.grace, time.Minute)); got != 2 {
				t.Errorf("keepaliveOptions(%v) returned %d options, want 2: the parameters and the enforcement policy", tt.grace, got)
			}
			sp, _ := keepalive.Parameters(keepaliveSettings(tracker, tt.grace, time.Minute)...)
			if sp.MaxConnectionAge != time.Minute || sp.MaxConnectionAgeGrace != tt.wantGrace {
				t.Errorf("keepaliveOptions(%v, maxAge 1m): MaxConnectionAge %v, grace %v; want 1m0s and %v", tt.grace, sp.MaxConnectionAge, sp.MaxConnectionAgeGrace, tt.wantGrace)
			}
		})
	}
}
