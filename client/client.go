package client

import (
	"context"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// DialOptions returns the options that make a client ride through server
// drains: a unary and a stream interceptor, chained with
// grpc.WithChainUnaryInterceptor and grpc.WithChainStreamInterceptor so
// that they keep the interceptors given before and after them. Give them to
// grpc.NewClient or NewClient. They set no service config, so that the
// client's own (a round_robin policy, a retry policy) stays in force. It
// panics, naming the option, if an option is misused.
func DialOptions(opts ...Option) []grpc.DialOption {
	o := evaluateOptions(opts)
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(o.unary),
		grpc.WithChainStreamInterceptor(o.stream),
	}
}

// retryable reports whether an attempt that failed with outcome o may be
// made again, given what the options say of its method and whether the
// caller has received a message of the call.
func (m method) retryable(o outcome, received bool) bool {
	switch o {
	case refused:
		// No handler ran: safe for any call that has nothing to replay.
		return !received || m.resumable
	case cancelled, unavailable:
		if received {
			return m.resumable
		}
		return m.idempotent || m.resumable
	}
	return false
}

// unary is the unary client interceptor.
func (o *options) unary(ctx context.Context, fullMethod string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	o.budget.deposit()
	err := invoker(ctx, fullMethod, req, reply, cc, opts...)
	if err == nil {
		return nil
	}
	m := o.methods[fullMethod]
	// A unary call has no stream to resume: WithResumable on a unary
	// method does not make it idempotent.
	m.resumable = false
	for attempt := uint(1); attempt < o.max; attempt++ {
		out, delay := classify(err)
		if !m.retryable(out, false) {
			return err
		}
		if stop, ctxErr := o.retry(ctx, attempt, delay, err, false, false); stop {
			if ctxErr != nil {
				return ctxErr
			}
			return err
		}
		if err = invoker(ctx, fullMethod, req, reply, cc, opts...); err == nil {
			return nil
		}
	}
	return err
}

// retry is called before the given retry of a call that failed with err:
// it gives up if the wait (see pause) would outlast ctx's deadline, asks
// the retry budget for the retry, waits and calls the OnRetryCallback. It
// returns stop true if the retry must not be made: with nil when the wait
// would outlast ctx's deadline or the budget refuses the retry, with the
// status of ctx's error if ctx ended during the wait. A retry given up for
// the deadline, or because ctx ended, takes nothing from the budget. With
// call true, the new attempt is the next call of a stream that worked (see
// resume): it deposits in the budget, as a new call does, instead of
// withdrawing. With moved true (and call false), the failed attempt was
// retired by its server after it lived (see resume): the new attempt takes
// nothing.
func (o *options) retry(ctx context.Context, attempt uint, delay time.Duration, err error, call, moved bool) (stop bool, ctxErr error) {
	d, ok := o.pause(ctx, attempt, delay)
	if !ok {
		return true, nil
	}
	withdrawn := false // and sec, the second it is recorded in
	var sec int64
	switch {
	case call:
		o.budget.deposit()
	case moved:
		// A retired stream's resumption is planned by its server, at
		// most once per stream age: it draws nothing from the budget,
		// which is for failures.
	default:
		if sec, withdrawn = o.budget.withdraw(); !withdrawn {
			return true, nil
		}
	}
	if stop, ctxErr := wait(ctx, d); stop {
		if withdrawn {
			o.budget.refund(sec)
		}
		return true, ctxErr
	}
	if o.onRetry != nil {
		o.onRetry(ctx, attempt, err)
	}
	return false, nil
}

// pause returns how long to wait before the given retry, the longer of the
// backoff and delay, and false if the wait would outlast ctx's deadline.
func (o *options) pause(ctx context.Context, attempt uint, delay time.Duration) (time.Duration, bool) {
	d := max(o.backoff(ctx, attempt), delay)
	if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) <= d {
		return 0, false
	}
	return d, true
}

// wait waits for d. It returns stop true, with the status of ctx's error,
// if ctx ends first or has ended.
func wait(ctx context.Context, d time.Duration) (stop bool, err error) {
	if d <= 0 {
		if err := ctx.Err(); err != nil {
			return true, status.FromContextError(err).Err()
		}
		return false, nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return false, nil
	case <-ctx.Done():
		return true, status.FromContextError(ctx.Err()).Err()
	}
}
