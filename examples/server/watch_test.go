package main

import (
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/drainkit/drainkit/examples/demopb"
)

func TestWatchResumed(t *testing.T) {
	c := newClient(t, &demoService{})
	// Three ticks are already past: they come at once, then the ticks
	// follow in step.
	after := time.Now().Add(-3 * watchInterval).Add(-watchInterval / 2)
	stream, err := c.Watch(testContext(t), &demopb.WatchRequest{After: timestamppb.New(after)})
	if err != nil {
		t.Fatalf("Watch() = %v", err)
	}
	for i := 1; i <= 5; i++ {
		ts, err := stream.Recv()
		if err != nil {
			t.Fatalf("Recv() #%d = %v", i, err)
		}
		want := after.Add(time.Duration(i) * watchInterval)
		if got := ts.AsTime(); !got.Equal(want) {
			t.Errorf("Recv() #%d = %v, want %v", i, got, want)
		}
		if got, now := ts.AsTime(), time.Now(); got.After(now) {
			t.Errorf("Recv() #%d = %v, received early at %v", i, got, now)
		}
	}
}

func TestWatchBadAfter(t *testing.T) {
	c := newClient(t, &demoService{})
	for _, tc := range []struct {
		name  string
		after *timestamppb.Timestamp
	}{
		{name: "too old", after: timestamppb.New(time.Now().Add(-2 * maxResumeSkew))},
		{name: "too far ahead", after: timestamppb.New(time.Now().Add(2 * maxResumeSkew))},
		{name: "invalid", after: &timestamppb.Timestamp{Nanos: -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stream, err := c.Watch(testContext(t), &demopb.WatchRequest{After: tc.after})
			if err == nil {
				_, err = stream.Recv()
			}
			if status.Code(err) != codes.InvalidArgument {
				t.Errorf("Watch(after %v) = %v, want code %v", tc.after, err, codes.InvalidArgument)
			}
		})
	}
}
