package main

import (
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/drainkit/drainkit/examples/demopb"
)

const (
	// watchInterval is the time between two messages of Watch.
	watchInterval = 100 * time.Millisecond
	// maxResumeSkew bounds how far WatchRequest.after may be from the
	// server's time, so that a resumed Watch sends at most a minute of
	// ticks at once, and never waits more than a minute for its first.
	maxResumeSkew = time.Minute
)

// Watch sends a tick every watchInterval until the stream ends: the time,
// or, resumed with in.After, the ticks that follow it.
func (s *demoService) Watch(in *demopb.WatchRequest, stream grpc.ServerStreamingServer[timestamppb.Timestamp]) error {
	if in.GetAfter() == nil {
		return watchNow(stream)
	}
	if err := in.GetAfter().CheckValid(); err != nil {
		return status.Errorf(codes.InvalidArgument, "after: %v", err)
	}
	after := in.GetAfter().AsTime()
	if skew := time.Since(after).Abs(); skew > maxResumeSkew {
		return status.Errorf(codes.InvalidArgument, "after (%v) is %v from the server's time, more than %v", after.Format(time.RFC3339Nano), skew, maxResumeSkew)
	}
	return watchAfter(stream, after)
}

// watchNow sends the time every watchInterval.
func watchNow(stream grpc.ServerStreamingServer[timestamppb.Timestamp]) error {
	ctx := stream.Context()
	tick := time.NewTicker(watchInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case now := <-tick.C:
			if err := stream.Send(timestamppb.New(now)); err != nil {
				return err
			}
		}
	}
}

// watchAfter sends after + watchInterval, after + 2*watchInterval and so on,
// each once its time has come.
func watchAfter(stream grpc.ServerStreamingServer[timestamppb.Timestamp], after time.Time) error {
	ctx := stream.Context()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for next := after.Add(watchInterval); ; next = next.Add(watchInterval) {
		if wait := time.Until(next); wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return status.FromContextError(ctx.Err()).Err()
			case <-timer.C:
			}
		} else if err := ctx.Err(); err != nil {
			return status.FromContextError(err).Err()
		}
		if err := stream.Send(timestamppb.New(next)); err != nil {
			return err
		}
	}
}
