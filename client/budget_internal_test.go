package client

import (
	"testing"
	"time"
)

// TestRetryBudgetWindow spends a budget's reserve, then moves its clock on:
// one second later the retries spent are still in the window, and once
// the window has passed they are forgotten, though the slot they were
// counted in is the current second's again, and the reserve is whole.
func TestRetryBudgetWindow(t *testing.T) {
	const reserve = 10 // newRetryBudget(0, 1) over 10s
	b := newRetryBudget(0, 1)
	spend := func() int {
		n := 0
		for range 2 * reserve {
			if _, ok := b.withdraw(); ok {
				n++
			}
		}
		return n
	}
	if n := spend(); n != reserve {
		t.Fatalf("withdraw() allowed %d retries of a fresh budget, want %d", n, reserve)
	}
	b.start = b.start.Add(-time.Second)
	if n := spend(); n != 0 {
		t.Errorf("withdraw() allowed %d retries a second after the reserve was spent, want 0", n)
	}
	// Second budgetSlots reuses the slot of second 0, where the reserve
	// was spent.
	b.start = b.start.Add(-(budgetWindow - time.Second))
	if n := spend(); n != reserve {
		t.Errorf("withdraw() allowed %d retries once the window had passed, want %d", n, reserve)
	}
}
