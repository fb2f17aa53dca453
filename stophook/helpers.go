package stophook

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Closer returns a Hook that calls c.Close at Cleanup, once no handler uses
// c: a *sql.DB, a client of another service, a file. The name says what c is
// in errors: "stophook: closing <name>: <error>".
//
// Close runs once, at the first Cleanup event, even if the event repeats;
// the hook ignores the other phases. Close runs in a goroutine of its own, so
// that a Close that blocks cannot hold the hook past its context: the hook
// then returns the context's error, and the goroutine is left to finish on
// its own. A later Cleanup event waits for that same Close. The error of
// Close is returned by the call that sees it finish; a panic in Close is
// returned as an error too.
//
// Register a resource before the servers whose handlers use it: hooks run in
// reverse order, so it is then closed after them. Closer panics if name is
// empty or c is nil.
func Closer(name string, c io.Closer) Hook {
	if name == "" {
		panic("stophook: Closer: name is empty")
	}
	if isNil(c) {
		panic(fmt.Sprintf("stophook: Closer(%q, c): c is nil", name))
	}
	return &closeOnce{what: name, hook: fmt.Sprintf("stophook.Closer(%q)", name), close: c.Close}
}

// ClientConn returns a Hook that closes cc at Cleanup, once no handler calls
// through it. It behaves as Closer does. A cc that the application closed
// itself before is not an error: grpc then reports codes.Canceled, and the
// hook returns nil. ClientConn panics if cc is nil.
func ClientConn(cc *grpc.ClientConn) Hook {
	if cc == nil {
		panic("stophook: ClientConn: cc is nil")
	}
	return &closeOnce{
		what: "grpc client connection to " + cc.Target(),
		hook: fmt.Sprintf("stophook.ClientConn(%q)", cc.Target()),
		close: func() error {
			// Close fails only on a ClientConn already closed, with
			// codes.Canceled: that is the state the hook wants.
			if err := cc.Close(); status.Code(err) != codes.Canceled {
				return err
			}
			return nil
		},
	}
}

// HTTPTransport returns a Hook that closes the idle connections of tr at
// Cleanup, once no handler sends requests through it. tr is an
// *http.Transport, an *http.Client or anything else that keeps connections
// open between requests. Connections in use are left alone; the hook ignores
// the other phases and never fails. HTTPTransport panics if tr is nil.
func HTTPTransport(tr interface{ CloseIdleConnections() }) Hook {
	if isNil(tr) {
		panic("stophook: HTTPTransport: tr is nil")
	}
	name := fmt.Sprintf("stophook.HTTPTransport(%T)", tr)
	return &named{name: name, f: func(_ context.Context, e Event) error {
		if e.Phase == Cleanup {
			tr.CloseIdleConnections()
		}
		return nil
	}}
}

// HTTPServer returns a Hook that drains srv, an HTTP server running beside
// the gRPC server (metrics, a REST gateway, webhooks), in step with it:
//
//   - NotReady: nothing. srv serves as before, keep-alive connections
//     included, for the readiness delay, as the gRPC server does. Turning
//     keep-alives off here would close idle connections while load
//     balancers may still send their clients back to this server, and cost
//     them new connections for nothing.
//   - Graceful: srv.Shutdown starts in the background; the hook returns as
//     soon as srv's listeners are closed. New connections are refused from
//     then on, idle ones are closed, and every other one is closed after its
//     response, which carries "Connection: close" (HTTP/2 connections are
//     sent GOAWAY). The HTTP server drains while the gRPC server's grace
//     period runs. If the drain skips Graceful, this happens at Cancel,
//     or at Cleanup.
//   - Force: Shutdown is abandoned and srv.Close closes every connection,
//     requests in progress included. The hook returns the error of Close,
//     if any.
//   - Cleanup: the hook waits for Shutdown to end and returns its error, if
//     any: failing to close a listener is an error, being cut short by the
//     forced stop is not (the drain reports that itself). If the hook's
//     context ends first, srv is closed as at Force and the hook returns
//     the context's error; the goroutine running Shutdown then ends at once.
//
// So if the gRPC server is done before the HTTP server, the HTTP server gets
// at most the drain's hook timeout more. net/http does not track hijacked
// connections, such as WebSockets: close them with srv.RegisterOnShutdown.
// Handlers that outlive Close are not waited for.
//
// HTTPServer registers a function with srv.RegisterOnShutdown, to learn when
// the listeners are closed. It panics if srv is nil.
func HTTPServer(srv *http.Server) Hook {
	if srv == nil {
		panic("stophook: HTTPServer: srv is nil")
	}
	h := &httpServer{srv: srv, listenersClosed: make(chan struct{})}
	var once sync.Once
	// Shutdown calls this once it has closed the listeners.
	srv.RegisterOnShutdown(func() { once.Do(func() { close(h.listenersClosed) }) })
	return h
}

type httpServer struct {
	srv             *http.Server
	listenersClosed chan struct{}

	mu       sync.Mutex
	shutdown *task              // srv.Shutdown; nil until started
	cancel   context.CancelFunc // cancels the context of Shutdown
	close    *task              // srv.Close; nil until started
}

func (h *httpServer) String() string {
	if h.srv.Addr == "" {
		return "stophook.HTTPServer"
	}
	return fmt.Sprintf("stophook.HTTPServer(%q)", h.srv.Addr)
}

func (h *httpServer) OnStop(ctx context.Context, e Event) error {
	switch e.Phase {
	case Graceful, Cancel:
		return h.goAway(ctx)
	case Force:
		return h.force(ctx)
	case Cleanup:
		return h.stopped(ctx)
	}
	return nil
}

// startShutdown starts srv.Shutdown unless srv is being shut down or closed
// already. h.mu must be held.
func (h *httpServer) startShutdown(ctx context.Context) {
	if h.shutdown != nil || h.close != nil {
		return
	}
	// The drain's context for this call ends when the call returns;
	// Shutdown must outlive it, until Force or Cleanup.
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	h.cancel = cancel
	h.shutdown = startTask(func() error { return h.srv.Shutdown(sctx) })
}

// startClose abandons Shutdown and starts srv.Close, unless it is started
// already. h.mu must be held.
func (h *httpServer) startClose() {
	if h.close != nil {
		return
	}
	if h.cancel != nil {
		h.cancel()
	}
	h.close = startTask(h.srv.Close)
}

func (h *httpServer) goAway(ctx context.Context) error {
	h.mu.Lock()
	h.startShutdown(ctx)
	s, closing := h.shutdown, h.close != nil
	h.mu.Unlock()
	if closing {
		return nil
	}
	select {
	case <-h.listenersClosed:
		return nil
	case <-s.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stophook: http server: closing listeners: %w", ctx.Err())
	}
}

func (h *httpServer) force(ctx context.Context) error {
	h.mu.Lock()
	h.startClose()
	c := h.close
	h.mu.Unlock()
	if !c.wait(ctx) {
		return fmt.Errorf("stophook: closing http server: %w", ctx.Err())
	}
	if err := c.take(); err != nil {
		return fmt.Errorf("stophook: closing http server: %w", err)
	}
	return nil
}

func (h *httpServer) stopped(ctx context.Context) error {
	h.mu.Lock()
	h.startShutdown(ctx)
	s, c, cancel := h.shutdown, h.close, h.cancel
	h.mu.Unlock()

	var errs []error
	if s != nil {
		if !s.wait(ctx) {
			h.mu.Lock()
			h.startClose()
			h.mu.Unlock()
			return fmt.Errorf("stophook: http server still shutting down at Cleanup, its connections are closed: %w", ctx.Err())
		}
		// Shutdown fails with context.Canceled only when Force, or a
		// Cleanup whose context ended, cut it short: its context is ours.
		if err := s.take(); err != nil && !errors.Is(err, context.Canceled) {
			errs = append(errs, fmt.Errorf("stophook: shutting down http server: %w", err))
		}
		cancel() // frees the context of Shutdown
	}
	if c != nil {
		if !c.wait(ctx) {
			errs = append(errs, fmt.Errorf("stophook: closing http server: %w", ctx.Err()))
		} else if err := c.take(); err != nil {
			errs = append(errs, fmt.Errorf("stophook: closing http server: %w", err))
		}
	}
	return errors.Join(errs...)
}

// closeOnce runs close once, at the first Cleanup event.
type closeOnce struct {
	what  string // what close closes, for errors
	hook  string // the name of the hook
	close func() error

	mu   sync.Mutex
	task *task // nil until Cleanup
}

func (h *closeOnce) String() string { return h.hook }

func (h *closeOnce) OnStop(ctx context.Context, e Event) error {
	if e.Phase != Cleanup {
		return nil
	}
	h.mu.Lock()
	if h.task == nil {
		h.task = startTask(h.close)
	}
	t := h.task
	h.mu.Unlock()
	if !t.wait(ctx) {
		return fmt.Errorf("stophook: closing %s: %w", h.what, ctx.Err())
	}
	if err := t.take(); err != nil {
		return fmt.Errorf("stophook: closing %s: %w", h.what, err)
	}
	return nil
}

// A task runs a function in a goroutine of its own, so that a hook can wait
// for it no longer than its context allows.
type task struct {
	done  chan struct{} // closed when the function has returned
	err   error         // what it returned; read only after done is closed
	taken atomic.Bool
}

func startTask(f func() error) *task {
	t := &task{done: make(chan struct{})}
	go func() {
		defer close(t.done)
		defer func() {
			if r := recover(); r != nil {
				t.err = fmt.Errorf("panic: %v", r)
			}
		}()
		t.err = f()
	}()
	return t
}

// wait reports whether the task has finished before ctx ended.
func (t *task) wait(ctx context.Context) bool {
	select {
	case <-t.done:
		return true
	default:
	}
	select {
	case <-t.done:
		return true
	case <-ctx.Done():
		return false
	}
}

// take returns the error of the finished task the first time it is called,
// and nil after, so that an error is reported once.
func (t *task) take() error {
	if t.taken.Swap(true) {
		return nil
	}
	return t.err
}

// named is a Func with a name.
type named struct {
	name string
	f    Func
}

func (n *named) String() string { return n.name }

func (n *named) OnStop(ctx context.Context, e Event) error { return n.f(ctx, e) }

// isNil reports whether v is nil or holds a nil pointer, map, slice,
// function or channel.
func isNil(v any) bool {
	if v == nil {
		return true
	}
	switch rv := reflect.ValueOf(v); rv.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Slice, reflect.Func, reflect.Chan, reflect.Interface, reflect.UnsafePointer:
		return rv.IsNil()
	}
	return false
}
