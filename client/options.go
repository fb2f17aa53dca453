package client

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/retry"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// The defaults of the options.
const (
	// DefaultMax is the number of attempts of a call, the first included,
	// when WithMax is not given.
	DefaultMax = 5
	// DefaultBackoffScalar, DefaultBackoffJitter and DefaultBackoffMax make
	// the backoff used when WithBackoff is not given:
	// retry.BackoffExponentialWithJitterBounded(DefaultBackoffScalar,
	// DefaultBackoffJitter, DefaultBackoffMax), that is 20ms, 40ms, 80ms and
	// so on, each ±20%, at most 1s.
	DefaultBackoffScalar = 20 * time.Millisecond
	DefaultBackoffJitter = 0.2
	DefaultBackoffMax    = time.Second

	// ResumeReset is how long an attempt of a stream must have stayed open
	// for its failure to restart the count of the stream's attempts, and
	// with it the backoff: a stream that fails sooner after each
	// resumption is reopened less and less often, its backoff growing to
	// its maximum, and WithMax ends it; one that stayed up this long, with
	// messages or quiet, and was not refused, worked, and its next
	// failure, such as the next drain, is met with a short wait again. It
	// is DefaultBackoffMax.
	ResumeReset = DefaultBackoffMax
)

// An Option configures the interceptors of DialOptions. Options are
// evaluated once, by DialOptions.
type Option interface {
	apply(*options)
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

// A BackoffFunc returns how long to wait before the given retry of a call:
// attempt is 1 before the first retry, 2 before the second, and so on. It
// has the shape of go-grpc-middleware's retry.BackoffFunc, whose functions
// (retry.BackoffExponentialWithJitter and the others) can be given to
// WithBackoff as they are.
type BackoffFunc = func(ctx context.Context, attempt uint) time.Duration

// An OnRetryCallback is called before each retry of a call, after the wait,
// with the error of the attempt that failed; attempt is 1 for the first
// retry.
type OnRetryCallback = func(ctx context.Context, attempt uint, err error)

// method is what the options say of one method.
type method struct {
	idempotent bool
	resumable  bool
	// rewrite returns the request of a resumed stream from the request
	// of the attempt that ended and the last message received; nil keeps
	// the request.
	rewrite func(req, last any) (any, error)
}

type options struct {
	max     uint
	backoff BackoffFunc
	onRetry OnRetryCallback // nil: none
	methods map[string]method

	retryPercent      float64
	retryMinPerSecond int
	budget            *retryBudget // made from the two above by evaluateOptions
}

// WithMax sets the number of attempts of a call, the first included: 1
// turns retries off. For a server stream it bounds every attempt together,
// its creation and its resumptions alike; the count of a resumable stream
// restarts only after an attempt that stayed open for ResumeReset fails
// (see "Streams" in the package documentation). The default is DefaultMax.
// It panics if n is 0.
//
// As go-grpc-middleware's retry.WithMax, n counts attempts, not retries.
func WithMax(n uint) Option {
	if n == 0 {
		panic("client: WithMax(0): a call makes at least one attempt")
	}
	return optionFunc(func(o *options) { o.max = n })
}

// WithBackoff sets how long to wait before each retry. The wait is the
// longer of f's and the delay of the google.rpc.RetryInfo a draining server
// sent, if any, at most MaxRetryDelay; a retry that could not begin before the call's deadline is not
// made, and the call fails with the error of its last attempt. The default
// is retry.BackoffExponentialWithJitterBounded(DefaultBackoffScalar,
// DefaultBackoffJitter, DefaultBackoffMax). It panics if f is nil.
func WithBackoff(f BackoffFunc) Option {
	if f == nil {
		panic("client: WithBackoff(nil)")
	}
	return optionFunc(func(o *options) { o.backoff = f })
}

// WithOnRetryCallback sets a function called before each retry, for logs or
// metrics. The default is none. It panics if f is nil.
func WithOnRetryCallback(f OnRetryCallback) Option {
	if f == nil {
		panic("client: WithOnRetryCallback(nil)")
	}
	return optionFunc(func(o *options) { o.onRetry = f })
}

// WithIdempotent marks methods ("/package.Service/Method") that may run
// twice with the same effect as once: they are retried also when a drain
// cancelled them after their handler ran, and on any other
// codes.Unavailable, such as a failed connection's. Unary calls and server
// streams that have received no message yet are retried; a server stream
// that has is resumed only if it is resumable. The default is none. It
// panics if a name is not a full method name.
func WithIdempotent(fullMethods ...string) Option {
	mustNameMethods("WithIdempotent", fullMethods)
	for _, m := range fullMethods {
		mustBeFullMethod("WithIdempotent", m)
	}
	return optionFunc(func(o *options) {
		for _, m := range fullMethods {
			mo := o.methods[m]
			mo.idempotent = true
			o.methods[m] = mo
		}
	})
}

// WithResumable marks server-streaming methods ("/package.Service/Method")
// whose stream may be opened again, with the same request, when it ends
// with a drain's codes.Unavailable or its connection fails: the caller goes
// on receiving on the same grpc.ClientStream. Give WithResume as well so
// that the new stream starts where the last one stopped. Client and bidi
// streams are never resumed, whatever the options: what they sent is gone.
// The default is none. It panics if a name is not a full method name.
func WithResumable(fullMethods ...string) Option {
	mustNameMethods("WithResumable", fullMethods)
	for _, m := range fullMethods {
		mustBeFullMethod("WithResumable", m)
	}
	return optionFunc(func(o *options) {
		for _, m := range fullMethods {
			mo := o.methods[m]
			mo.resumable = true
			o.methods[m] = mo
		}
	})
}

// WithResume marks fullMethod resumable, as WithResumable does, and sets how
// the request of a resumed stream is made: next is given the request of the
// stream that ended (the caller's at first, then next's own) and the last
// message received, and returns the request to send: a cursor, a "since",
// so that a server that supports it sends nothing twice and misses nothing.
// next must not modify its arguments: they may be the caller's, and the
// caller must not modify a message it received before its next RecvMsg
// either, as next may be given it. Before any message has been received,
// the stream is reopened with its request as it is, and next is not called.
//
// Req and Resp are the request and response types of the method, pointers
// to the generated messages, such as *pb.WatchRequest. It panics if
// fullMethod is not a full method name, next is nil, Req or Resp is not a
// pointer type, or, when the method's service is registered with the
// protobuf registry (its generated code is linked in), if Req and Resp are
// not the method's input and output, or the method is not a server stream.
func WithResume[Req, Resp any](fullMethod string, next func(req Req, last Resp) Req) Option {
	option := fmt.Sprintf("WithResume(%q)", fullMethod)
	mustBeFullMethod("WithResume", fullMethod)
	if next == nil {
		panic("client: " + option + ": nil function")
	}
	mustMatchMethod[Req, Resp](option, fullMethod)
	rewrite := func(req, last any) (any, error) {
		r, ok := req.(Req)
		if !ok {
			var want Req
			return nil, status.Errorf(codes.Internal, "client: %s: the request is a %T, want %T", option, req, want)
		}
		l, ok := last.(Resp)
		if !ok {
			var want Resp
			return nil, status.Errorf(codes.Internal, "client: %s: the last message received is a %T, want %T", option, last, want)
		}
		return next(r, l), nil
	}
	return optionFunc(func(o *options) {
		mo := o.methods[fullMethod]
		mo.resumable, mo.rewrite = true, rewrite
		o.methods[fullMethod] = mo
	})
}

func evaluateOptions(opts []Option) *options {
	o := &options{
		max:     DefaultMax,
		backoff: retry.BackoffExponentialWithJitterBounded(DefaultBackoffScalar, DefaultBackoffJitter, DefaultBackoffMax),
		methods: map[string]method{},

		retryPercent:      DefaultRetryPercent,
		retryMinPerSecond: DefaultRetryMinPerSecond,
	}
	for i, opt := range opts {
		if opt == nil {
			panic(fmt.Sprintf("client: DialOptions: option %d is nil", i))
		}
		opt.apply(o)
	}
	o.budget = newRetryBudget(o.retryPercent, o.retryMinPerSecond)
	return o
}

func mustNameMethods(option string, fullMethods []string) {
	if len(fullMethods) == 0 {
		panic(fmt.Sprintf("client: %s(): no method named", option))
	}
}

// mustMatchMethod panics unless Req and Resp are pointer types and, when
// the protobuf registry knows fullMethod, its input and output messages of
// a server-streaming method.
func mustMatchMethod[Req, Resp any](option, fullMethod string) {
	reqType, respType := reflect.TypeFor[Req](), reflect.TypeFor[Resp]()
	for _, t := range []reflect.Type{reqType, respType} {
		if t.Kind() != reflect.Pointer {
			panic(fmt.Sprintf("client: %s: %v is not a pointer type: give the generated message's pointer, such as *%v", option, t, t))
		}
	}
	service, name, _ := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(service))
	if err != nil {
		return // not linked in: checked when a stream resumes
	}
	sd, ok := d.(protoreflect.ServiceDescriptor)
	if !ok {
		return
	}
	md := sd.Methods().ByName(protoreflect.Name(name))
	if md == nil {
		panic(fmt.Sprintf("client: %s: service %s has no method %s", option, service, name))
	}
	if md.IsStreamingClient() || !md.IsStreamingServer() {
		panic(fmt.Sprintf("client: %s: not a server-streaming method: only server streams are resumed", option))
	}
	var req Req
	var resp Resp
	if m, ok := any(req).(proto.Message); ok && m.ProtoReflect().Descriptor().FullName() != md.Input().FullName() {
		panic(fmt.Sprintf("client: %s: the request type %v is not the method's input %s", option, reqType, md.Input().FullName()))
	}
	if m, ok := any(resp).(proto.Message); ok && m.ProtoReflect().Descriptor().FullName() != md.Output().FullName() {
		panic(fmt.Sprintf("client: %s: the response type %v is not the method's output %s", option, respType, md.Output().FullName()))
	}
}

func mustBeFullMethod(option, m string) {
	if m == "" {
		panic(fmt.Sprintf("client: %s: empty method name", option))
	}
	if !strings.HasPrefix(m, "/") || strings.Count(m, "/") != 2 || strings.HasPrefix(m, "//") || strings.HasSuffix(m, "/") {
		panic(fmt.Sprintf("client: %s(%q): not a full method name of the form \"/package.Service/Method\"", option, m))
	}
}
