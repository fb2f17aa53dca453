package tracing

import (
	"fmt"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// An Option configures Hook or InFlightCounter. Options are evaluated once, by
// the function they are given to.
type Option interface {
	apply(*options)
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

type options struct {
	tracerProvider trace.TracerProvider
	meterProvider  metric.MeterProvider
	attrs          []attribute.KeyValue
}

// WithTracerProvider makes spans with tp. The default is the global provider,
// otel.GetTracerProvider(), as it is when Hook is called: until
// otel.SetTracerProvider is called, it forwards spans to the provider set
// then. It panics if tp is nil.
func WithTracerProvider(tp trace.TracerProvider) Option {
	if tp == nil {
		panic("tracing: WithTracerProvider: nil TracerProvider")
	}
	return optionFunc(func(o *options) { o.tracerProvider = tp })
}

// WithMeterProvider records metrics with mp. The default is the global
// provider, otel.GetMeterProvider(), as it is when Hook or InFlightCounter is
// called: until otel.SetMeterProvider is called, it forwards measurements to
// the provider set then. It panics if mp is nil.
func WithMeterProvider(mp metric.MeterProvider) Option {
	if mp == nil {
		panic("tracing: WithMeterProvider: nil MeterProvider")
	}
	return optionFunc(func(o *options) { o.meterProvider = mp })
}

// WithAttributes adds attrs to the drain span and to every metric recorded,
// for instance to tell apart several servers of one process. Give it only
// attributes of few values: each distinct set makes its own metric series.
// The default is none. Given more than once, the attributes add up. It panics
// if an attribute has an empty key.
func WithAttributes(attrs ...attribute.KeyValue) Option {
	for i, kv := range attrs {
		if !kv.Valid() {
			panic(fmt.Sprintf("tracing: WithAttributes: attribute %d has an empty key", i))
		}
	}
	attrs = append([]attribute.KeyValue(nil), attrs...)
	return optionFunc(func(o *options) { o.attrs = append(o.attrs, attrs...) })
}

func evaluateOptions(fn string, opts []Option) *options {
	o := &options{}
	for i, opt := range opts {
		if opt == nil {
			panic(fmt.Sprintf("tracing: %s: option %d is nil", fn, i))
		}
		opt.apply(o)
	}
	if o.tracerProvider == nil {
		o.tracerProvider = otel.GetTracerProvider()
	}
	if o.meterProvider == nil {
		o.meterProvider = otel.GetMeterProvider()
	}
	return o
}
