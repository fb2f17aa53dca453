package client_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/retry"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/drainkit/drainkit/client"
	"github.com/drainkit/drainkit/examples/demopb"
	"github.com/drainkit/drainkit/interceptors"
)

// TestComposition chains the client as the package documentation says:
// otelgrpc's stats handler, go-grpc-middleware's logging before
// DialOptions, its retry (for ResourceExhausted only) after. The server
// refuses the first attempt as a draining server does, and answers the
// second with ResourceExhausted: drainkit retries the first, the inner
// retry the second, and the third succeeds.
func TestComposition(t *testing.T) {
	var attempts atomic.Int64
	a := startBackend(t, "A", false, grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		switch attempts.Add(1) {
		case 1:
			return nil, shuttingDown(t, interceptors.HandlerNotRun, 0)
		case 2:
			return nil, status.Error(codes.ResourceExhausted, "quota")
		}
		return handler(ctx, req)
	}))

	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	t.Cleanup(func() { tp.Shutdown(context.Background()) })

	var mu sync.Mutex
	var logged []string
	logger := logging.LoggerFunc(func(_ context.Context, _ logging.Level, msg string, fields ...any) {
		mu.Lock()
		defer mu.Unlock()
		logged = append(logged, fmt.Sprint(msg, fields))
	})
	var drainkitRetries, innerRetries atomic.Int64

	opts := []grpc.DialOption{
		grpc.WithStatsHandler(otelgrpc.NewClientHandler(otelgrpc.WithTracerProvider(tp))),
		grpc.WithChainUnaryInterceptor(logging.UnaryClientInterceptor(logger, logging.WithLogOnEvents(logging.FinishCall))),
	}
	opts = append(opts, client.DialOptions(
		// go-grpc-middleware's backoff functions fit WithBackoff as they are.
		client.WithBackoff(retry.BackoffExponentialWithJitter(time.Millisecond, 0.1)),
		client.WithOnRetryCallback(func(context.Context, uint, error) { drainkitRetries.Add(1) }),
	)...)
	opts = append(opts, grpc.WithChainUnaryInterceptor(retry.UnaryClientInterceptor(
		retry.WithMax(3),
		retry.WithCodes(codes.ResourceExhausted),
		retry.WithOnRetryCallback(func(context.Context, uint, error) { innerRetries.Add(1) }),
	)))
	c := demopb.NewDemoClient(dialBackends(t, []*backend{a}, opts...))

	ctx, parent := tp.Tracer("test").Start(context.Background(), "caller")
	_, err := c.Echo(ctx, wrapperspb.String("x"), grpc.WaitForReady(true))
	parent.End()
	if err != nil {
		t.Fatalf("Echo() = %v, want success on the third attempt", err)
	}
	if n := attempts.Load(); n != 3 {
		t.Errorf("attempts = %d, want 3", n)
	}
	if d, i := drainkitRetries.Load(), innerRetries.Load(); d != 1 || i != 1 {
		t.Errorf("retries by drainkit, by go-grpc-middleware = %d, %d, want 1, 1", d, i)
	}

	mu.Lock()
	if len(logged) != 1 {
		t.Errorf("logging recorded %q, want one record, of the call's end", logged)
	}
	mu.Unlock()

	var attemptSpans []sdktrace.ReadOnlySpan
	for _, s := range spans.Ended() {
		if s.SpanKind() == trace.SpanKindClient {
			attemptSpans = append(attemptSpans, s)
		}
	}
	if len(attemptSpans) != 3 {
		t.Fatalf("%d client spans, want one per attempt, 3", len(attemptSpans))
	}
	for _, s := range attemptSpans {
		if s.Parent().SpanID() != parent.SpanContext().SpanID() {
			t.Errorf("span %s has parent %v, want the caller's span %v", s.Name(), s.Parent().SpanID(), parent.SpanContext().SpanID())
		}
	}
}
