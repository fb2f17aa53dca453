package drain_test

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"

	"github.com/drainkit/drainkit/drain"
	"github.com/drainkit/drainkit/interceptors"
	"github.com/drainkit/drainkit/stophook"
)

// A deployment checks the worst case of its drain against the time its
// orchestrator gives it before SIGKILL.
func ExampleDrainer_CheckBudget() {
	t := interceptors.NewTracker()
	srv := grpc.NewServer(t.ServerOptions()...)
	nop := stophook.Func(func(context.Context, stophook.Event) error { return nil })
	d := drain.New(srv, t, drain.WithReadinessDelay(5*time.Second), drain.WithHooks(nop))

	fmt.Println(d.Budget())
	fmt.Println(d.CheckBudget(30 * time.Second)) // Kubernetes' default terminationGracePeriodSeconds
	fmt.Println(d.CheckBudget(10 * time.Second)) // docker stop's default timeout
	// Output:
	// 26s
	// <nil>
	// drain: worst case 26s plus a margin of 1s (BudgetMargin) exceeds the limit of 10s: readiness delay 5s + grace period 15s + cancel grace 3s + force wait 1s + hooks 2s; the grace period (WithGracePeriod) takes it past the limit
}

// A program that handles its own signals calls Drain; the drain ends when
// no RPC is left, here at once.
func ExampleDrainer_Drain() {
	t := interceptors.NewTracker()
	srv := grpc.NewServer(t.ServerOptions()...)
	d := drain.New(srv, t)

	report, err := d.Drain(context.Background())
	for _, p := range report.Phases {
		fmt.Println(p.Phase, p.InFlight)
	}
	fmt.Println(report.Forced, err)
	// Output:
	// NotReady 0
	// Graceful 0
	// Cleanup 0
	// false <nil>
}
