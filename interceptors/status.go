package interceptors

import (
	"errors"
	"fmt"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

// The google.rpc.ErrorInfo that marks the statuses of a server shutting
// down; see "Status details" in the package documentation.
const (
	// ErrorInfoDomain is the ErrorInfo domain of drainkit's statuses.
	ErrorInfoDomain = "github.com/drainkit/drainkit"
	// ReasonShuttingDown is the ErrorInfo reason of a call refused or
	// cancelled because its server is shutting down.
	ReasonShuttingDown = "SHUTTING_DOWN"
	// MetadataHandler is the ErrorInfo metadata key that says whether the
	// call's handler ran: HandlerNotRun or HandlerCancelled.
	MetadataHandler = "handler"
	// HandlerNotRun: the call was refused before its handler ran; it is
	// safe to send it again, whatever the method does.
	HandlerNotRun = "not_run"
	// HandlerCancelled: the call's handler ran and was cancelled; what it
	// did before is unknown to the client.
	HandlerCancelled = "cancelled"
)

// The details of the two statuses, marshalled once: they do not depend on
// the cause.
var (
	refusedDetails   = mustDetails(errorInfo(HandlerNotRun), &errdetails.RetryInfo{RetryDelay: durationpb.New(0)})
	cancelledDetails = mustDetails(errorInfo(HandlerCancelled))
)

func errorInfo(handler string) *errdetails.ErrorInfo {
	return &errdetails.ErrorInfo{
		Reason:   ReasonShuttingDown,
		Domain:   ErrorInfoDomain,
		Metadata: map[string]string{MetadataHandler: handler},
	}
}

// mustDetails marshals details into the Any messages of a status. It
// panics, when the package is initialised, if one cannot be marshalled.
func mustDetails(details ...proto.Message) []*anypb.Any {
	anys := make([]*anypb.Any, len(details))
	for i, d := range details {
		a, err := anypb.New(d)
		if err != nil {
			panic(fmt.Sprintf("interceptors: marshalling %T: %v", d, err))
		}
		anys[i] = a
	}
	return anys
}

// refusedStatus returns the status a client receives when its call is
// refused, before its handler runs, because the server is shutting down:
// codes.Unavailable with the text of cause, an ErrorInfo whose handler
// metadata is HandlerNotRun, and a RetryInfo with a delay of 0 (retry now,
// on another connection). A nil cause stands for ErrShuttingDown.
func refusedStatus(cause error) *status.Status {
	return shuttingDown(cause, refusedDetails)
}

// cancelledStatus returns the status a client receives when its call's
// handler was cancelled because the server is shutting down:
// codes.Unavailable with the text of cause and an ErrorInfo whose handler
// metadata is HandlerCancelled. A nil cause stands for ErrShuttingDown.
func cancelledStatus(cause error) *status.Status {
	return shuttingDown(cause, cancelledDetails)
}

// refusedError returns the error of refusedStatus, held by a pointer as
// Reject and RejectLongLived store it: built once per rejection, not once
// per refused call.
func refusedError(cause error) *error {
	err := refusedStatus(cause).Err()
	return &err
}

func shuttingDown(cause error, details []*anypb.Any) *status.Status {
	msg := ErrShuttingDown.Error()
	switch {
	case errors.Is(cause, ErrShuttingDown):
		msg = cause.Error()
	case cause != nil:
		msg += ": " + cause.Error()
	}
	// FromProto copies the details, so that no two statuses share them.
	return status.FromProto(&spb.Status{Code: int32(codes.Unavailable), Message: msg, Details: details})
}

// forwarded returns err, a handler's error, without drainkit's refusal mark
// if it carries one. A handler that passes on the refusal of a server it
// called has run: its own client must not read "not_run" and send a
// non-idempotent call again. The ErrorInfo of the refusal and its RetryInfo
// are dropped; the code, the message and any other detail are kept. Only
// an error whose code is codes.Unavailable is looked into.
func forwarded(err error) error {
	s, ok := status.FromError(err)
	if !ok || s.Code() != codes.Unavailable {
		return err
	}
	p := s.Proto()
	refusal := false
	var kept []*anypb.Any // the details but drainkit's and RetryInfo
	for _, a := range p.GetDetails() {
		var info errdetails.ErrorInfo
		switch {
		case a.MessageIs(&info) && a.UnmarshalTo(&info) == nil && info.GetDomain() == ErrorInfoDomain:
			refusal = refusal || info.GetMetadata()[MetadataHandler] == HandlerNotRun
		case a.MessageIs((*errdetails.RetryInfo)(nil)):
		default:
			kept = append(kept, a)
		}
	}
	if !refusal {
		return err
	}
	p.Details = kept
	return status.FromProto(p).Err()
}
