package tracing

import (
	"context"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/drainkit/drainkit/interceptors"
)

// ServerHandler wraps h, a server's stats handler such as otelgrpc's, so
// that the RPCs a drain ended can be told from an outage. An RPC ends with
// codes.Unavailable both when a drain refuses or cancels it and when the
// server fails; otelgrpc records both alike, as server errors (span status
// Error, error.type "UNAVAILABLE"). An interceptors.Tracker marks the status
// of the RPCs a drain ends with an ErrorInfo (domain
// interceptors.ErrorInfoDomain, reason interceptors.ReasonShuttingDown), and
// for those, before h ends the RPC's span:
//
//   - the span gets the attributes drainkit.drain.ended=true and
//     drainkit.handler, "not_run" for a call refused before its handler ran
//     or "cancelled" for one whose handler was cancelled: a dashboard or a
//     query on error spans filters them out with
//     drainkit.drain.ended != true;
//   - the counter "drainkit.rpc.server.drain_ended" ({rpc}) is incremented,
//     with rpc.method, rpc.response.status_code and drainkit.handler, plus
//     the attributes of WithAttributes, through the MeterProvider of
//     WithMeterProvider (the global one by default). otelgrpc takes the
//     attributes of its rpc.server.call.duration when an RPC begins, so they
//     cannot say how it ended: subtract this counter from its error count
//     (error.type "UNAVAILABLE") to see the errors a drain did not cause.
//
// Attributes follow OpenTelemetry's rule for names outside the semantic
// conventions, which have none for a drain: a namespace of their own,
// "drainkit.". A long-lived stream that the Tracker retires for its age or
// its connection's (interceptors.WithMaxStreamAge, a keepalive renewal)
// carries the same reason, with the metadata interceptors.MetadataRetired:
// no drain ended it, and it is neither marked nor counted. Nor is a call
// whose handler relays the status of another server that drains: this
// server's Tracker replaces the relayed mark with its HANDLER_RAN (see
// package interceptors), and that server's own ServerHandler counts the
// call its drain ended.
//
// It panics if h is nil or an option is nil; WithTracerProvider has no
// effect on it (the span is the one h started).
func ServerHandler(h stats.Handler, opts ...Option) stats.Handler {
	if h == nil {
		panic("tracing: ServerHandler: nil stats.Handler")
	}
	o := evaluateOptions("ServerHandler", opts)
	ended, err := o.meter().Int64Counter(DrainEndedRPCsMetric,
		metric.WithDescription("RPCs that a drain ended: refused before their handler ran, or cancelled."),
		metric.WithUnit("{rpc}"))
	handle(err)
	return &serverHandler{Handler: h, ended: ended, attrs: o.attrs}
}

type serverHandler struct {
	stats.Handler
	ended metric.Int64Counter
	attrs []attribute.KeyValue
}

func (s *serverHandler) HandleRPC(ctx context.Context, rs stats.RPCStats) {
	if end, ok := rs.(*stats.End); ok && end.Error != nil && !end.IsClient() {
		if handler := drainEnded(end.Error); handler != "" {
			trace.SpanFromContext(ctx).SetAttributes(DrainEndedKey.Bool(true), HandlerKey.String(handler))
			// grpc gives the server's End the context of the RPC's
			// stream, which names its method: no per-RPC work in TagRPC.
			method, _ := grpc.Method(ctx)
			attrs := append(s.attrs[:len(s.attrs):len(s.attrs)],
				rpcMethod(method), semconv.RPCResponseStatusCode("UNAVAILABLE"), HandlerKey.String(handler))
			s.ended.Add(ctx, 1, metric.WithAttributeSet(attribute.NewSet(attrs...)))
		}
	}
	s.Handler.HandleRPC(ctx, rs)
}

// drainEnded returns the handler metadata of drainkit's mark on err ("not_run"
// or "cancelled"), or "" if err carries none.
func drainEnded(err error) string {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.Unavailable {
		return ""
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == interceptors.ErrorInfoDomain && info.GetReason() == interceptors.ReasonShuttingDown {
			if info.GetMetadata()[interceptors.MetadataRetired] != "" {
				return "" // retired for its age or its connection's: no drain
			}
			if h := info.GetMetadata()[interceptors.MetadataHandler]; h != "" {
				return h
			}
			return "unknown"
		}
	}
	return ""
}
