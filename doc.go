// Package drainkit makes gRPC servers shut down bounded, lossless and
// invisible to their clients.
//
// It is made of small packages:
//   - interceptors: a Tracker that knows every RPC in flight, gives handlers
//     deadlines, cancels them with a cause and refuses new work, with status
//     codes that clients act on.
//   - drain: a Drainer that shuts the server down in bounded phases on top
//     of the Tracker, with a worst-case duration it can compute.
//   - stophook: the interface of the callbacks a drain calls at each phase,
//     with helpers for HTTP servers, clients and databases.
//   - keepalive: server keepalive settings that agree with the drain: a
//     renewal cuts no call the Tracker bounds.
//   - tracing: OpenTelemetry spans and metrics for the server and its drain.
//   - client: client interceptors that read what a draining server did,
//     retry what is safe and resume server streams, and a registry that
//     finds ClientConns left open.
//   - systemd: on one host, the listening socket systemd passes (socket
//     activation, so that restarts refuse no connection) and sd_notify.
//   - upgrade: an in-place upgrade that hands the listening socket to a
//     successor and drains once the successor serves.
//
// A server gives grpc.NewServer the Tracker's options and serves through the
// Drainer:
//
//	t := interceptors.NewTracker()
//	srv := grpc.NewServer(t.ServerOptions()...)
//	d := drain.New(srv, t, drain.WithHealth(h), drain.WithReadinessDelay(5*time.Second))
//	err := d.Serve(lis) // drains on SIGTERM or SIGINT
//
// The timeline of a drain, from the signal:
//  1. NotReady: health reports NOT_SERVING; everything is still served, new
//     connections too, for the readiness delay, while load balancers and
//     Kubernetes endpoints catch up.
//  2. Graceful: long-lived streams end with UNAVAILABLE, even those whose
//     handler waits in Recv or Send; GOAWAY is sent and the listeners close;
//     in-flight RPCs have the grace period to finish.
//  3. Cancel: new RPCs are refused with UNAVAILABLE; the remaining handlers
//     are cancelled with a cause, their streams ended, and have the cancel
//     grace to return.
//  4. Force: every connection is closed; handlers still running after the
//     force wait are reported as leaked, by method and age. The drain counts
//     as forced only if this cut RPCs.
//  5. Cleanup: hooks close databases and clients, now unused.
package drainkit
