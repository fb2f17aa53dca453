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

	// ReasonHandlerRan is the ErrorInfo reason of a codes.Unavailable
	// status that a handler returned: the server is not shutting down, or
	// did not cause the error, and the handler ran. Its metadata "handler"
	// is HandlerRan.
	ReasonHandlerRan = "HANDLER_RAN"
	// HandlerRan: the call's handler ran and returned the error itself.
	HandlerRan = "ran"
)

// The details of the two statuses, marshalled once: they do not depend on
// the cause.
var (
	refusedDetails   = mustDetails(errorInfo(ReasonShuttingDown, HandlerNotRun), &errdetails.RetryInfo{RetryDelay: durationpb.New(0)})
	cancelledDetails = mustDetails(errorInfo(ReasonShuttingDown, HandlerCancelled))
	ranDetails       = mustDetails(errorInfo(ReasonHandlerRan, HandlerRan))
)

func errorInfo(reason, handler string) *errdetails.ErrorInfo {
	return &errdetails.ErrorInfo{
		Reason:   reason,
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
// A stream retired for its age or its connection's gets the retirement's
// own message and MetadataRetired instead (see WithMaxStreamAge).
func cancelledStatus(cause error) *status.Status {
	if st := retiredStatus(cause); st != nil {
		return st
	}
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

// forwarded returns err, an error that a handler returned, as this
// server's own answer: its handler ran, so its client must neither read
// "not_run" and send a non-idempotent call again, nor read "cancelled" and
// take it for this server's drain. Only an error whose code is
// codes.Unavailable is looked into. Every drainkit ErrorInfo it carries,
// relayed from a server it called, is dropped, with the RetryInfo of a
// relayed refusal; the code, the message and any other detail are kept; and
// the ErrorInfo of ranDetails is added.
//
// That detail also overrides a refusal relayed as trailer metadata: grpc-go
// sends a status that has details in place of any grpc-status-details-bin
// a handler set with grpc.SetTrailer or ServerStream.SetTrailer, on its own
// transport and through ServeHTTP, but sends the handler's when the status
// has none.
func forwarded(err error) error {
	s, ok := status.FromError(err)
	if !ok || s.Code() != codes.Unavailable {
		return err
	}
	p := s.Proto()
	refusal := false
	kept := make([]*anypb.Any, 0, len(p.GetDetails())+1)
	var retryInfo []*anypb.Any
	for _, a := range p.GetDetails() {
		var info errdetails.ErrorInfo
		switch {
		case a.MessageIs(&info):
			if a.UnmarshalTo(&info) == nil && info.GetDomain() == ErrorInfoDomain {
				refusal = refusal || info.GetMetadata()[MetadataHandler] == HandlerNotRun
				continue
			}
			kept = append(kept, a)
		case a.MessageIs((*errdetails.RetryInfo)(nil)):
			retryInfo = append(retryInfo, a)
		default:
			kept = append(kept, a)
		}
	}
	if !refusal {
		// A RetryInfo of the handler's own, not a refusal's, is kept.
		kept = append(kept, retryInfo...)
	}
	p.Details = append(kept, ranDetails...)
	return status.FromProto(p).Err()
}
