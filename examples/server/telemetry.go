package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc"

	"github.com/drainkit/drainkit/examples/internal/demoflags"
	"github.com/drainkit/drainkit/stophook"
	"github.com/drainkit/drainkit/tracing"
)

// telemetry is what -otel adds to the server.
type telemetry struct {
	serverOptions []grpc.ServerOption
	recordHooks   []stophook.Hook // record the drain; run first
	flushHooks    []stophook.Hook // write out the telemetry; run last
}

// newTelemetry sets up the telemetry named by -otel. With "stdout", spans
// are written to out as they end, one JSON object each, and the metrics are
// written to out as one JSON object at the end of the drain.
func newTelemetry(mode string, out io.Writer) (*telemetry, error) {
	switch mode {
	case demoflags.OtelNone:
		return &telemetry{}, nil
	case demoflags.OtelStdout:
	default:
		return nil, fmt.Errorf("-otel %q: unknown", mode)
	}

	res := resource.NewSchemaless(attribute.String("service.name", demoflags.Name))
	exporter, err := stdouttrace.New(stdouttrace.WithWriter(out))
	if err != nil {
		return nil, err
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exporter), sdktrace.WithResource(res))
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader), sdkmetric.WithResource(res))

	flush := stophook.Func(func(ctx context.Context, e stophook.Event) error {
		if e.Phase != stophook.Cleanup {
			return nil
		}
		// The spans first: shutting the tracer provider down writes those
		// still buffered, and nothing after them.
		errs := []error{tp.Shutdown(ctx)}
		var rm metricdata.ResourceMetrics
		if err := reader.Collect(ctx, &rm); err != nil {
			errs = append(errs, err)
		} else {
			errs = append(errs, json.NewEncoder(out).Encode(rm))
		}
		errs = append(errs, mp.Shutdown(ctx))
		return errors.Join(errs...)
	})
	return &telemetry{
		serverOptions: []grpc.ServerOption{grpc.StatsHandler(tracing.ServerHandler(otelgrpc.NewServerHandler(
			otelgrpc.WithTracerProvider(tp),
			otelgrpc.WithMeterProvider(mp),
			otelgrpc.WithPropagators(propagation.TraceContext{}),
		), tracing.WithMeterProvider(mp)))},
		recordHooks: []stophook.Hook{tracing.Hook(tracing.WithTracerProvider(tp), tracing.WithMeterProvider(mp))},
		flushHooks:  []stophook.Hook{flush},
	}, nil
}
