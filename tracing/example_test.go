package tracing_test

import (
	"context"
	"fmt"
	"net"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/test/bufconn"

	"github.com/drainkit/drainkit/interceptors"
	"github.com/drainkit/drainkit/stophook"
	"github.com/drainkit/drainkit/tracing"
)

// A drain gives the hook one event per phase it goes through. Here the events
// of a drain that had to cancel and then force its handlers are given by hand.
func ExampleHook() {
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	defer tp.Shutdown(context.Background())

	// In a server: drain.New(srv, tracker, drain.WithHooks(hook)).
	hook := tracing.Hook(tracing.WithTracerProvider(tp))

	started := time.Now()
	for _, phase := range []stophook.Phase{stophook.NotReady, stophook.Graceful, stophook.Cancel, stophook.Force, stophook.Cleanup} {
		e := stophook.Event{Phase: phase, Started: started, InFlight: 1}
		if phase == stophook.Cleanup {
			e.Leaked = []interceptors.Call{{Method: "/grpc.testing.TestService/FullDuplexCall", Started: started, Stream: true}}
		}
		if err := hook.OnStop(context.Background(), e); err != nil {
			fmt.Println(err)
			return
		}
	}

	for _, s := range spans.Ended() {
		if s.Name() != tracing.DrainSpanName {
			fmt.Println("  " + s.Name())
			continue
		}
		fmt.Println(s.Name(), s.Status().Code)
		for _, e := range s.Events() {
			fmt.Println("  event", e.Name)
		}
	}
	// Output:
	//   drain.NotReady
	//   drain.Graceful
	//   drain.Cancel
	//   drain.Force
	//   drain.Cleanup
	// drainkit.drain Error
	//   event drain.grace_timeout
	//   event drain.forced
	//   event drain.leaked_handler
}

// A server traced by otelgrpc, whose running handlers are counted by method.
func ExampleServerOption() {
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	defer tp.Shutdown(context.Background())
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	defer mp.Shutdown(context.Background())

	tracker := interceptors.NewTracker()
	srv := grpc.NewServer(append(tracker.ServerOptions(),
		tracing.ServerOption(otelgrpc.WithTracerProvider(tp), otelgrpc.WithMeterProvider(mp)),
	)...)
	healthgrpc.RegisterHealthServer(srv, health.NewServer())
	reg, err := tracing.InFlightCounter(tracker, tracing.WithMeterProvider(mp))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer reg.Unregister()

	lis := bufconn.Listen(1 << 20)
	go srv.Serve(lis)
	cc, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Println(err)
		return
	}
	if _, err := healthgrpc.NewHealthClient(cc).Check(context.Background(), &healthgrpc.HealthCheckRequest{}); err != nil {
		fmt.Println(err)
		return
	}
	cc.Close()
	srv.GracefulStop() // waits for the handlers and the end of their spans

	for _, s := range spans.Ended() {
		fmt.Println(s.Name())
	}
	// Output:
	// grpc.health.v1.Health/Check
}
