package interceptors_test

import (
	"testing"
	"time"

	"github.com/drainkit/drainkit/interceptors"
)

func TestLongestCall(t *testing.T) {
	const watch = "/grpc.health.v1.Health/Watch" // long-lived by default
	bounded := []interceptors.Option{interceptors.WithMaxTimeout(30 * time.Second), interceptors.WithStreamTimeout(time.Minute)}
	tests := []struct {
		name   string
		opts   []interceptors.Option
		want   time.Duration
		wantOK bool
	}{
		{name: "no bound"},
		{name: "unary calls only", opts: []interceptors.Option{interceptors.WithMaxTimeout(30 * time.Second)}},
		{name: "streams only", opts: []interceptors.Option{interceptors.WithStreamTimeout(time.Minute)}},
		{name: "a default timeout bounds only calls without a deadline",
			opts: []interceptors.Option{interceptors.WithDefaultTimeout(30 * time.Second), interceptors.WithStreamTimeout(time.Minute)}},
		{name: "unary calls and streams", opts: bounded, want: time.Minute, wantOK: true},
		{name: "unary calls longer", opts: []interceptors.Option{interceptors.WithMaxTimeout(2 * time.Minute), interceptors.WithStreamTimeout(time.Minute)},
			want: 2 * time.Minute, wantOK: true},
		{name: "a longer method", opts: append(bounded[:2:2], interceptors.WithMethodTimeout("/pkg.Svc/Export", time.Hour)),
			want: time.Hour, wantOK: true},
		{name: "an exempted method", opts: append(bounded[:2:2], interceptors.WithMethodTimeout("/pkg.Svc/Export", 0))},
		{name: "an exempted long-lived method", opts: append(bounded[:2:2], interceptors.WithMethodTimeout(watch, 0)),
			want: time.Minute, wantOK: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := interceptors.NewTracker(tt.opts...).LongestCall()
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("LongestCall() = %v, %t; want %v, %t", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}
