package client

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/drainkit/drainkit/stophook"
)

// ErrLeaked is wrapped by the error of StopHook when it had ClientConns to
// close.
var ErrLeaked = errors.New("client: ClientConns still open when the server stopped")

// TestingT is the part of *testing.T, *testing.B and *testing.F that
// VerifyNone uses.
type TestingT interface {
	Helper()
	Errorf(format string, args ...any)
}

// VerifyNone fails t, listing where each was made, if ClientConns made by
// NewClient are still open. Call it at the end of a test, or register it
// first with t.Cleanup, so that it runs after the cleanups that close the
// test's conns. As goleak, it sees the conns of every test running: do not
// use it in tests that run in parallel with others that make conns.
func VerifyNone(t TestingT) {
	t.Helper()
	if open := Open(); len(open) > 0 {
		t.Errorf("client: %d ClientConn(s) made by NewClient still open:\n%s", len(open), describe(open))
	}
}

// StopHook returns a stophook.Hook that, at Cleanup, closes the ClientConns
// made by NewClient that are still open, and returns an error wrapping
// ErrLeaked that says where each was made; it ignores the other phases and
// returns nil when none is open. Register it before the hooks of the
// resources that use clients, such as stophook.ClientConn of the conns the
// application closes itself: hooks run in reverse order, so it then runs
// after them and sees only the conns that nothing closed.
func StopHook() stophook.Hook { return stopHook{} }

type stopHook struct{}

func (stopHook) String() string { return "client.StopHook" }

func (stopHook) OnStop(ctx context.Context, e stophook.Event) error {
	if e.Phase != stophook.Cleanup {
		return nil
	}
	var ccs []*grpc.ClientConn
	var open []OpenConn
	for _, s := range openConns() {
		ccs = append(ccs, s.e.cc)
		open = append(open, s.describe())
	}
	if len(open) == 0 {
		return nil
	}
	leaked := fmt.Errorf("%w: closed %d:\n%s", ErrLeaked, len(open), describe(open))
	// Close runs in a goroutine of its own, so that a Close that blocks
	// cannot hold the hook past its context; it is left to finish then.
	closed := make(chan error, 1)
	go func() {
		var errs []error
		for i, cc := range ccs {
			// Close fails only on a conn closed meanwhile, with
			// codes.Canceled: that is the state wanted.
			if err := cc.Close(); err != nil && status.Code(err) != codes.Canceled {
				errs = append(errs, fmt.Errorf("client: closing ClientConn to %q: %w", open[i].Target, err))
			}
		}
		closed <- errors.Join(errs...)
	}()
	select {
	case err := <-closed:
		return errors.Join(leaked, err)
	case <-ctx.Done():
		return errors.Join(leaked, fmt.Errorf("client: closing ClientConns: %w", ctx.Err()))
	}
}

func describe(open []OpenConn) string {
	var b strings.Builder
	for _, c := range open {
		b.WriteString(c.String())
	}
	return b.String()
}
