package interceptors_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/drainkit/drainkit/interceptors"
)

// panicOf returns the value f panics with, or nil.
func panicOf(f func()) (p any) {
	defer func() { p = recover() }()
	f()
	return nil
}

func TestOptionsRefuseBadInput(t *testing.T) {
	const method = "/grpc.testing.TestService/UnaryCall"
	badNames := []string{
		"grpc.testing.TestService/UnaryCall",
		"/grpc.testing.TestService",
		"/grpc.testing.TestService/",
		"//UnaryCall",
		"/",
		"/grpc.testing.TestService/UnaryCall/More",
	}
	tests := []struct {
		name string
		f    func()
		want []string // what the panic message must name
	}{
		{
			name: "negative default timeout",
			f:    func() { interceptors.WithDefaultTimeout(-time.Second) },
			want: []string{"WithDefaultTimeout", "-1s"},
		},
		{
			name: "negative max timeout",
			f:    func() { interceptors.WithMaxTimeout(-time.Nanosecond) },
			want: []string{"WithMaxTimeout", "-1ns"},
		},
		{
			name: "negative stream timeout",
			f:    func() { interceptors.WithStreamTimeout(-time.Minute) },
			want: []string{"WithStreamTimeout", "-1m0s"},
		},
		{
			name: "negative method timeout",
			f:    func() { interceptors.WithMethodTimeout(method, -time.Second) },
			want: []string{"WithMethodTimeout", method, "-1s"},
		},
		{
			name: "empty method for method timeout",
			f:    func() { interceptors.WithMethodTimeout("", time.Second) },
			want: []string{"WithMethodTimeout", "empty"},
		},
		{
			name: "empty method for long-lived",
			f:    func() { interceptors.WithLongLived("") },
			want: []string{"WithLongLived", "empty"},
		},
		{
			name: "empty method among long-lived",
			f:    func() { interceptors.WithLongLived(method, "") },
			want: []string{"WithLongLived", "empty"},
		},
		{
			name: "default timeout above max timeout",
			f: func() {
				interceptors.NewTracker(interceptors.WithDefaultTimeout(2*time.Second), interceptors.WithMaxTimeout(time.Second))
			},
			want: []string{"WithDefaultTimeout(2s)", "WithMaxTimeout(1s)"},
		},
		{
			name: "default timeout above max timeout given first",
			f: func() {
				interceptors.NewTracker(interceptors.WithMaxTimeout(time.Second), interceptors.WithDefaultTimeout(time.Minute))
			},
			want: []string{"WithDefaultTimeout(1m0s)", "WithMaxTimeout(1s)"},
		},
		{
			name: "nil option",
			f:    func() { interceptors.NewTracker(nil) },
			want: []string{"NewTracker", "option 0", "nil"},
		},
		{
			name: "nil option after others",
			f:    func() { interceptors.NewTracker(interceptors.WithDefaultTimeout(time.Second), nil) },
			want: []string{"NewTracker", "option 1", "nil"},
		},
	}
	for _, name := range badNames {
		tests = append(tests,
			struct {
				name string
				f    func()
				want []string
			}{
				name: fmt.Sprintf("method timeout for %q", name),
				f:    func() { interceptors.WithMethodTimeout(name, time.Second) },
				want: []string{"WithMethodTimeout", fmt.Sprintf("%q", name)},
			},
			struct {
				name string
				f    func()
				want []string
			}{
				name: fmt.Sprintf("long-lived %q", name),
				f:    func() { interceptors.WithLongLived(method, name) },
				want: []string{"WithLongLived", fmt.Sprintf("%q", name)},
			})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := panicOf(tc.f)
			if p == nil {
				t.Fatalf("no panic, want one naming %q", tc.want)
			}
			msg := fmt.Sprint(p)
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("panic(%q), want it to name %q", msg, w)
				}
			}
		})
	}
}

func TestOptionsAcceptGoodInput(t *testing.T) {
	const method = "/grpc.testing.TestService/UnaryCall"
	tests := []struct {
		name string
		opts []interceptors.Option
	}{
		{name: "none"},
		{name: "zero durations", opts: []interceptors.Option{
			interceptors.WithDefaultTimeout(0), interceptors.WithMaxTimeout(0),
			interceptors.WithStreamTimeout(0), interceptors.WithMethodTimeout(method, 0),
		}},
		{name: "default timeout without max timeout", opts: []interceptors.Option{interceptors.WithDefaultTimeout(time.Hour)}},
		{name: "default timeout equal to max timeout", opts: []interceptors.Option{
			interceptors.WithDefaultTimeout(time.Second), interceptors.WithMaxTimeout(time.Second),
		}},
		{name: "max timeout without default timeout", opts: []interceptors.Option{interceptors.WithMaxTimeout(time.Second)}},
		{name: "method timeout above max timeout", opts: []interceptors.Option{
			interceptors.WithMaxTimeout(time.Second), interceptors.WithMethodTimeout(method, time.Hour),
		}},
		{name: "no long-lived method", opts: []interceptors.Option{interceptors.WithLongLived()}},
		{name: "long-lived methods", opts: []interceptors.Option{
			interceptors.WithLongLived("/grpc.health.v1.Health/Watch", "/pkg.v1.Events/Subscribe"),
		}},
		{name: "service without package", opts: []interceptors.Option{interceptors.WithLongLived("/Events/Subscribe")}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if p := panicOf(func() { interceptors.NewTracker(tc.opts...) }); p != nil {
				t.Errorf("NewTracker() panicked: %v", p)
			}
		})
	}
}
