package interceptors

import (
	"fmt"
	"strings"
	"time"
)

// An Option configures a Tracker. Options are evaluated once, by NewTracker.
type Option interface {
	apply(*options)
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

// defaultLongLived lists the methods that are long-lived by default: grpc's
// health Watch, and its reflection streams, which clients such as grpcurl's
// shell and GUI tools keep open between requests.
var defaultLongLived = []string{
	"/grpc.health.v1.Health/Watch",
	"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
	"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
}

type options struct {
	defaultTimeout time.Duration            // 0: none
	maxTimeout     time.Duration            // 0: no cap
	streamTimeout  time.Duration            // 0: none
	methodTimeout  map[string]time.Duration // overrides the others for one method
	longLived      map[string]struct{}
	maxStreamAge   time.Duration // 0: none
}

// WithDefaultTimeout gives every unary call that arrives without a deadline
// one of d from the moment its handler starts. The default is 0: no deadline
// is injected. It panics if d is negative.
func WithDefaultTimeout(d time.Duration) Option {
	mustNotBeNegative("WithDefaultTimeout", d)
	return optionFunc(func(o *options) { o.defaultTimeout = d })
}

// WithMaxTimeout caps the deadline of every unary call at d from the moment
// its handler starts, the deadline sent by the client included; a call that
// arrives without a deadline, and gets none from WithDefaultTimeout, gets d.
// The default is 0: no cap. It panics if d is negative; NewTracker panics if
// d is below the default timeout.
func WithMaxTimeout(d time.Duration) Option {
	mustNotBeNegative("WithMaxTimeout", d)
	return optionFunc(func(o *options) { o.maxTimeout = d })
}

// WithMethodTimeout makes d both the default and the cap of the deadline of
// fullMethod ("/package.Service/Method"), unary or streaming, long-lived or
// not; it overrides WithDefaultTimeout, WithMaxTimeout and WithStreamTimeout
// for that method. A d of 0 exempts the method from every injected deadline.
// It panics if fullMethod is not a full method name or d is negative.
func WithMethodTimeout(fullMethod string, d time.Duration) Option {
	mustBeFullMethod("WithMethodTimeout", fullMethod)
	mustNotBeNegative(fmt.Sprintf("WithMethodTimeout(%q)", fullMethod), d)
	return optionFunc(func(o *options) { o.methodTimeout[fullMethod] = d })
}

// WithStreamTimeout gives every stream that is not long-lived a deadline of d
// from the moment its handler starts, and caps the client's deadline at that.
// The default is 0: streams get no injected deadline. It panics if d is
// negative.
func WithStreamTimeout(d time.Duration) Option {
	mustNotBeNegative("WithStreamTimeout", d)
	return optionFunc(func(o *options) { o.streamTimeout = d })
}

// WithLongLived marks streaming methods that never end by themselves, such as
// watches and subscriptions. Long-lived streams get no stream timeout, are
// cancelled first by a drain (see Tracker.CancelLongLived) and can be refused
// on their own (see Tracker.RejectLongLived). grpc's health Watch
// ("/grpc.health.v1.Health/Watch") and reflection streams
// ("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo" and its
// v1alpha twin) are long-lived by default. It panics if a name is not a full
// method name.
func WithLongLived(fullMethods ...string) Option {
	for _, m := range fullMethods {
		mustBeFullMethod("WithLongLived", m)
	}
	return optionFunc(func(o *options) {
		for _, m := range fullMethods {
			o.longLived[m] = struct{}{}
		}
	})
}

func evaluateOptions(opts []Option) *options {
	o := &options{
		methodTimeout: map[string]time.Duration{},
		longLived:     map[string]struct{}{},
	}
	for _, m := range defaultLongLived {
		o.longLived[m] = struct{}{}
	}
	for i, opt := range opts {
		if opt == nil {
			panic(fmt.Sprintf("interceptors: NewTracker: option %d is nil", i))
		}
		opt.apply(o)
	}
	if o.maxTimeout > 0 && o.defaultTimeout > o.maxTimeout {
		panic(fmt.Sprintf("interceptors: WithDefaultTimeout(%v) is above WithMaxTimeout(%v)", o.defaultTimeout, o.maxTimeout))
	}
	return o
}

// timeouts returns the default and the cap of the deadline of a call to
// method; 0 means none.
func (o *options) timeouts(method string, stream, longLived bool) (def, max time.Duration) {
	if d, ok := o.methodTimeout[method]; ok {
		return d, d
	}
	if !stream {
		if o.defaultTimeout == 0 {
			return o.maxTimeout, o.maxTimeout
		}
		return o.defaultTimeout, o.maxTimeout
	}
	if longLived {
		return 0, 0
	}
	return o.streamTimeout, o.streamTimeout
}

func mustNotBeNegative(option string, d time.Duration) {
	if d < 0 {
		panic(fmt.Sprintf("interceptors: %s(%v): negative duration", option, d))
	}
}

func mustBeFullMethod(option, m string) {
	if m == "" {
		panic(fmt.Sprintf("interceptors: %s: empty method name", option))
	}
	if !strings.HasPrefix(m, "/") || strings.Count(m, "/") != 2 || strings.HasPrefix(m, "//") || strings.HasSuffix(m, "/") {
		panic(fmt.Sprintf("interceptors: %s(%q): not a full method name of the form \"/package.Service/Method\"", option, m))
	}
}
