// Package tracing records gRPC servers and their drains with OpenTelemetry:
// a span per RPC, a span per drain with a child span per phase, and metrics.
//
// It is the one package of drainkit that imports OpenTelemetry. It offers
// four pieces, each optional:
//
//   - ServerOption installs otelgrpc's stats handler on a grpc.Server: a span
//     and a duration measurement per RPC, wrapped by ServerHandler.
//   - ServerHandler wraps a server's stats handler, otelgrpc's or another:
//     it marks the spans of the RPCs a drain ended (drainkit.drain.ended)
//     and counts them, so that a drain does not read as an outage.
//   - Hook returns a stophook.Hook to give a drain, which records it as the
//     span "drainkit.drain" with the children "drain.NotReady",
//     "drain.Graceful", "drain.Cancel", "drain.Force" and "drain.Cleanup",
//     for the phases the drain goes through, and span events for the grace
//     timeout, the forced stop and each leaked handler.
//   - InFlightCounter reports, from an interceptors.Tracker, how many handlers
//     run now, by method.
//
// Spans and metrics go to the providers given by WithTracerProvider and
// WithMeterProvider, by default the global ones of go.opentelemetry.io/otel.
//
// The metrics of Hook, all with the attributes given by WithAttributes:
//
//	drainkit.drain.duration         histogram, s   time from a drain's start to its end, by drainkit.forced
//	drainkit.drain.cancelled_rpcs   counter        handlers whose context a drain cancelled
//	drainkit.drain.forced_stops     counter        drains that stopped their server by force
//	drainkit.drain.leaked_handlers  counter        handlers still running when a drain ended
//
// that of InFlightCounter:
//
//	drainkit.rpc.in_flight          updowncounter  handlers running now, by rpc.method
//
// and that of ServerHandler (and ServerOption):
//
//	drainkit.rpc.server.drain_ended counter        RPCs a drain refused or cancelled, by rpc.method and drainkit.handler
//
// rpc.method has the form "package.Service/Method" that otelgrpc gives it, so
// that these metrics and span events join otelgrpc's.
package tracing
