// Package keepalive is a set of gRPC server keepalive settings that agree
// with a drain: connections are renewed often enough for clients to spread
// over new servers, a renewal cuts no call that the Tracker lets finish,
// dead peers are found within a minute and a half, and well-behaved clients
// are never cut for pinging.
//
// ServerOptions returns the options to give grpc.NewServer, with the
// Tracker the server installs, from which the renewal takes its grace:
//
//	srv := grpc.NewServer(append(keepalive.ServerOptions(keepalive.WithTracker(tracker)),
//		tracker.ServerOptions()...)...)
//
// Parameters returns the same settings as grpc's keepalive.ServerParameters
// and keepalive.EnforcementPolicy, for a test or a program to check them.
//
// # The defaults, and why
//
// MaxConnectionAge, 5 minutes: HTTP/2 connections live as long as both ends
// do, so clients keep talking to the servers they first reached, and servers
// started later (a scale-up, the second half of a rolling update) get no
// traffic from them. When a connection reaches its age the server sends
// GOAWAY; clients open a new connection, which the load balancer, or the
// client's resolver, may send to any server, and spread over all servers
// within minutes. grpc adds a random jitter of ±10% to each connection's
// age, so that connections opened together are not renewed together. A
// renewal costs one handshake per client every few minutes. New RPCs go to
// the new connection; those in flight on the old one run on for the grace
// period below, and are cut with codes.Unavailable if they outlive it.
//
// MaxConnectionAgeGrace, Infinity, or with WithTracker the longest call
// the Tracker allows plus a second: after GOAWAY, the RPCs in flight on an
// aged connection get this long to finish before the connection is closed.
// A call of length L, unary or a finite stream, that starts at a random
// moment of a connection's life of age A is still running at the end of a
// grace G with a probability of about (L − G) / A, and every call longer
// than 1.1 × A + G is cut. With A = 5 minutes and a grace of 20 seconds, say:
//
//	call length   cut by a renewal
//	≤ 20s         never
//	1 minute      about 13%
//	2 minutes     about 33%
//	5 minutes     about 93%
//	≥ 5m50s       always
//
// A client that retries such a call (it got codes.Unavailable with no
// drainkit mark: the handler may have run) may be cut again. So the grace
// must cover the longest call, not the time a drain has: a renewal is not
// bounded by a termination budget, since the process keeps running, and an
// old connection that lingers costs little. The default, Infinity (grpc's
// own), lets every call finish: an aged connection closes once its last
// call has ended. WithTracker takes the bound from the Tracker
// (Tracker.LongestCall: its WithMaxTimeout, WithStreamTimeout and
// WithMethodTimeout), plus a second, so that no call it bounds is cut, and
// falls back to Infinity if it bounds not every call that is not
// long-lived. Choose WithGracePeriod yourself only with the table above in
// mind. The drain's grace period is not repeated here: it is the drain's
// alone, set once in drain.WithGracePeriod, and bounded by the time the
// platform gives a stopping process.
//
// MaxConnectionIdle, off: an idle connection costs the server little, dead
// ones are found by the pings below, and every connection is renewed at its
// age anyway. Closing idle connections earlier would make the next RPC of
// each quiet client wait for a new connection and its handshake.
//
// Time, 1 minute, and Timeout, 20 seconds: a server whose connection has
// carried nothing for Time pings the client, and closes the connection if
// no answer comes within Timeout. grpc's default Time, 2 hours, keeps a
// connection to a vanished client (a killed pod, a lost node, a NAT entry
// dropped) and the streams on it for hours. One minute finds it within a
// minute and a half, and keeps idle connections alive through the load
// balancers and NAT gateways that drop idle flows after a few minutes. It
// costs one small frame each way per idle minute. Timeout is grpc's default;
// grpc also uses it as the connection's TCP_USER_TIMEOUT.
//
// MinTime, 5 seconds, and PermitWithoutStream, true: the enforcement policy
// says how often clients may ping. grpc's default, 5 minutes, and no pings
// without RPCs, makes the server send GOAWAY with "too_many_pings" and close
// the connection of every client whose keepalive is set below 5 minutes, or
// which pings while idle: common settings, chosen to keep connections alive
// through proxies. Those clients would see their RPCs fail for no fault of
// theirs. grpc-go clients never ping more often than every 10 seconds, so 5
// seconds leaves every well-behaved client alone, while a client that pings
// faster, three times in a row, is still cut. Pings without RPCs are allowed
// because they are how a client keeps an idle connection ready; they are
// subject to MinTime like the others.
//
// # Long-lived streams: connection age, stream age and the drain
//
// grpc sends GOAWAY on a connection between 4m30s and 5m30s after it opened
// (MaxConnectionAge, 5 minutes, ±10%), and closes it once its calls have
// ended, or at the end of a finite grace G (WithGracePeriod, or WithTracker
// with a Tracker that bounds its calls), cutting what still runs on it. A
// watch or a subscription still runs: left alone, it holds the aged
// connection, and so its old server, until it ends or the server drains
// under the default grace, Infinity; under a finite G it is cut with a
// transport error G after GOAWAY, every MaxConnectionAge or so.
//
// A server whose Tracker wraps its credentials
// (grpc.Creds(tracker.Credentials(creds)), package interceptors) ends the
// long-lived streams of a connection as soon as grpc has sent its GOAWAY,
// with a status that package client resumes: the stream leaves at 4m30s to
// 5m30s, its client opens it again on a new connection after its first
// backoff (20ms by default), and the aged connection closes as soon as its
// other RPCs are done. In the process test of examples/process, with a
// connection age of 2 seconds, a grace of 1 second, and 60 connections each
// holding one Watch on one server when two more servers are added: after
// six ages the connections are open 20, 20 and 20 to the three servers, and
// about 360 Watch attempts were retired with 0 cut; with the same settings
// and no retirement, the connections spread as well but 180 attempts were
// cut.
//
// interceptors.WithMaxStreamAge ends each long-lived stream after its own
// age, ±10%, whatever its connection does. Use it where connection renewal
// moves no stream: behind an L7 proxy, which holds the connections to the
// server, through ServeHTTP, or with MaxConnectionAge off. A stream age
// about equal to MaxConnectionAge (5 minutes) moves streams as often as
// connection renewal does; where connections are renewed anyway, a stream
// age well below it only adds resumptions.
//
// A drain ends every long-lived stream at once, at its Graceful phase,
// whatever their ages: its grace period is for the other RPCs.
//
// # Relation with the drain
//
// This package does not depend on package drain, and the drain does not
// need it: a drain sends GOAWAY to every connection whatever its age, and
// waits for its own grace period, then cancels what remains. Both end a
// connection the same way for the client: GOAWAY, time to finish, then a
// cut. They differ in the time to finish, for the reason above, and share
// the Tracker, which bounds the calls a renewal lets finish and marks the
// calls a drain ends.
//
// Every duration is refused below a second, with a panic naming the
// option, but for the 0 that turns MaxConnectionAge or MaxConnectionIdle
// off: a time.Duration counts nanoseconds, and WithMaxConnectionAge(5),
// meant as 5 minutes, would be 5ns, on which grpc panics at the first
// connection. A maximum connection age above MaxConnectionAge (about 265
// years) other than Infinity is refused too: grpc's jitter would overflow
// it, and renew about half the connections as soon as they open.
//
// Clients may set keepalive.ClientParameters with a Time of 10 seconds or
// more, and PermitWithoutStream either way; a Time below MinTime breaks the
// policy, as grpc documents.
package keepalive
