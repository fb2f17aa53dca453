package client

import (
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/drainkit/drainkit/interceptors"
)

// An outcome says what the status of a failed attempt tells of the server.
type outcome uint8

const (
	// other: not codes.Unavailable; never retried.
	other outcome = iota
	// refused: a server shutting down refused the call before its
	// handler ran; always retried.
	refused
	// cancelled: a server shutting down cancelled the call's handler;
	// retried only for idempotent methods, resumed for resumable streams.
	cancelled
	// unavailable: codes.Unavailable without drainkit's mark, such as a
	// connection that failed; as cancelled.
	unavailable
)

// MaxRetryDelay is the longest wait before a retry that a server's
// google.rpc.RetryInfo can ask for: a longer delay is cut to it, so that a
// call without a deadline cannot wait an hour on a server's word.
const MaxRetryDelay = 10 * time.Second

// classify reads the status of err. For a status with drainkit's mark, it
// also returns the delay of its google.rpc.RetryInfo, at most
// MaxRetryDelay; 0 if none. When several ErrorInfos mark the status, the
// safe reading wins: cancelled over refused, and HANDLER_RAN (which a
// server with the Tracker adds to its handlers' codes.Unavailable) over
// both: the marks beside it were relayed from another server.
func classify(err error) (outcome, time.Duration) {
	s, ok := status.FromError(err)
	if !ok || s.Code() != codes.Unavailable {
		return other, 0
	}
	o, delay := unavailable, time.Duration(0)
	ran := false // a HANDLER_RAN ErrorInfo: no refusal stands
	for _, a := range s.Proto().GetDetails() {
		switch {
		case a.MessageIs((*errdetails.ErrorInfo)(nil)):
			var info errdetails.ErrorInfo
			if a.UnmarshalTo(&info) != nil || info.GetDomain() != interceptors.ErrorInfoDomain {
				continue
			}
			if info.GetReason() != interceptors.ReasonShuttingDown {
				ran = ran || info.GetReason() == interceptors.ReasonHandlerRan
				continue
			}
			// Anything but a refusal may have run its handler.
			if info.GetMetadata()[interceptors.MetadataHandler] == interceptors.HandlerNotRun && o != cancelled {
				o = refused
			} else {
				o = cancelled
			}
		case a.MessageIs((*errdetails.RetryInfo)(nil)):
			var info errdetails.RetryInfo
			if a.UnmarshalTo(&info) == nil && info.GetRetryDelay().IsValid() {
				delay = min(max(info.GetRetryDelay().AsDuration(), 0), MaxRetryDelay)
			}
		}
	}
	if ran {
		// The server that answered says its handler ran: a mark beside
		// it was relayed from another, whatever it says.
		o = unavailable
	}
	if o == unavailable {
		// A RetryInfo without drainkit's mark is not drainkit's to honour.
		delay = 0
	}
	return o, delay
}

// isRetirement reports whether err is the status of a long-lived stream
// that its server retired for its age or its connection's
// (interceptors.WithMaxStreamAge, interceptors.Tracker.Credentials): a
// planned move, not a failure. A HANDLER_RAN mark beside it means it was
// relayed from another server, and it is not one.
func isRetirement(err error) bool {
	s, ok := status.FromError(err)
	if !ok || s.Code() != codes.Unavailable {
		return false
	}
	retired := false
	for _, a := range s.Proto().GetDetails() {
		var info errdetails.ErrorInfo
		if !a.MessageIs(&info) || a.UnmarshalTo(&info) != nil || info.GetDomain() != interceptors.ErrorInfoDomain {
			continue
		}
		switch info.GetReason() {
		case interceptors.ReasonHandlerRan:
			return false
		case interceptors.ReasonShuttingDown:
			retired = retired || info.GetMetadata()[interceptors.MetadataRetired] != ""
		}
	}
	return retired
}

// IsDraining reports whether err is a status sent by a server that is
// shutting down with drainkit: a call refused before its handler ran, or
// cancelled while it ran (codes.Unavailable with the google.rpc.ErrorInfo
// described in the package documentation). It is false for nil, for other
// codes.Unavailable errors, such as a connection that failed, and for every
// other code. The caller of a call that was not retried, or of a bidi or
// client stream, can take it to mean: open it again, the next server will
// take it.
func IsDraining(err error) bool {
	if err == nil {
		return false
	}
	o, _ := classify(err)
	return o == refused || o == cancelled
}
