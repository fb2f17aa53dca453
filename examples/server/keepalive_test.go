package main

import (
	"testing"
	"time"

	"github.com/drainkit/drainkit/interceptors"
)

func TestKeepaliveOptions(t *testing.T) {
	for _, tt := range []struct {
		name  string
		grace time.Duration
	}{
		{name: "drain's grace period", grace: 7 * time.Second},
		{name: "no grace period", grace: 0},
		{name: "a grace period below a second, which keepalive refuses", grace: 200 * time.Millisecond},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := len(keepaliveOptions(interceptors.NewTracker(), tt.grace, time.Minute)); got != 2 {
				t.Errorf("keepaliveOptions(%v) returned %d options, want 2: the parameters and the enforcement policy", tt.grace, got)
			}
		})
	}
}
