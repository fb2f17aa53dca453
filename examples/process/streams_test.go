//go:build unix

package process_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// TestOpenStreamsEnd drains a demo server with 20 Chat streams open, each
// idle with its handler waiting in Recv, and an idle reflection session, as
// grpcurl's shell keeps one. None of these handlers watches its context:
// only ending the RPCs themselves frees them. The server must exit 0 within
// the readiness delay and exitMargin, and every stream end with
// codes.Unavailable saying the server is shutting down.
func TestOpenStreamsEnd(t *testing.T) {
	const (
		readinessDelay = 500 * time.Millisecond
		chats          = 20
	)
	s := startServer(t, "streams", dbPath(t), "-readiness-delay", readinessDelay.String())
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)

	type ended struct {
		what string
		err  error
	}
	ends := make(chan ended, chats+1)
	for i := range chats {
		_, c := dial(t, s.addr)
		chat, err := c.Chat(ctx)
		if err != nil {
			t.Fatalf("Chat() = %v", err)
		}
		if err := chat.Send(wrapperspb.String("hello")); err != nil {
			t.Fatalf("Chat: Send() = %v", err)
		}
		// The echo shows that the handler runs; it then waits in Recv.
		if m, err := chat.Recv(); err != nil || m.GetValue() != "hello" {
			t.Fatalf("Chat: Recv() = %v, %v; want the echo", m, err)
		}
		go func() {
			_, err := chat.Recv()
			ends <- ended{what: fmt.Sprintf("Chat %d", i), err: err}
		}()
	}
	cc, _ := dial(t, s.addr)
	session, err := reflectionpb.NewServerReflectionClient(cc).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatalf("ServerReflectionInfo() = %v", err)
	}
	if err := session.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatalf("reflection: Send() = %v", err)
	}
	if _, err := session.Recv(); err != nil {
		t.Fatalf("reflection: Recv() = %v, want the list of services", err)
	}
	go func() {
		_, err := session.Recv()
		ends <- ended{what: "the reflection session", err: err}
	}()

	sent := s.signal(syscall.SIGTERM)
	took := checkExit(t, s, sent, readinessDelay, readinessDelay+exitMargin, exitOK)
	t.Logf("exited %v after SIGTERM, with %d Chat streams and a reflection session open", took, chats)

	timeout := time.After(defaultTestTimeout)
	for i := range chats + 1 {
		select {
		case e := <-ends:
			st := status.Convert(e.err)
			if st.Code() != codes.Unavailable || !strings.Contains(st.Message(), shuttingDown) {
				t.Errorf("%s ended with %v, want code %v and a message with %q", e.what, e.err, codes.Unavailable, shuttingDown)
			}
		case <-timeout:
			t.Fatalf("%d of %d streams still open %v after the exit", chats+1-i, chats+1, defaultTestTimeout)
		}
	}
	report := drainReport(t, s)
	if got, _ := report["cancelled"].(float64); got != chats+1 {
		t.Errorf("drain report: %v handlers cancelled, want %d", got, chats+1)
	}
	if forced, _ := report["forced"].(bool); forced {
		t.Errorf("drain report: forced, want clean")
	}
}

// TestSignalDuringStartUp sends SIGTERM while the demo opens its database,
// held up by a lock the test holds: the demo catches signals from its first
// line, so it must end its start-up in order, say so in its log, exit 0,
// and never serve.
func TestSignalDuringStartUp(t *testing.T) {
	db := dbPath(t)
	lock, err := sql.Open("sqlite", db)
	if err != nil {
		t.Fatalf("sql.Open(%s) = %v", db, err)
	}
	t.Cleanup(func() { lock.Close() })
	conn, err := lock.Conn(context.Background())
	if err != nil {
		t.Fatalf("Conn() = %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	// An exclusive transaction keeps the demo from setting up its store
	// until the busy timeout of its connection passes.
	if _, err := conn.ExecContext(context.Background(), "BEGIN EXCLUSIVE"); err != nil {
		t.Fatalf("BEGIN EXCLUSIVE = %v", err)
	}

	s := launchServer(t, "start-up", db)
	s.waitLog(`"starting" record`, isMsg("starting"))
	sent := s.signal(syscall.SIGTERM)
	exitedAt, code := s.wait(defaultTestTimeout)
	if code != exitOK {
		t.Errorf("exit status %d after SIGTERM during start-up, want %d", code, exitOK)
	}
	took := exitedAt.Sub(sent)
	t.Logf("exited %v after SIGTERM during start-up", took)
	// The demo's store waits 5s for a lock: an exit after that would mean
	// the start-up ignored the signal until the store gave up.
	if took > 2*time.Second {
		t.Errorf("exited %v after SIGTERM during start-up, want at once, not after the store's busy timeout", took)
	}
	if recs := s.log.find(isMsg("start-up interrupted")); len(recs) != 1 {
		t.Errorf(`log has %d "start-up interrupted" records, want 1`, len(recs))
	}
	if recs := s.log.find(isMsg("serving")); len(recs) != 0 {
		t.Errorf("the server served after SIGTERM during start-up: %v", recs)
	}
	if _, err := conn.ExecContext(context.Background(), "COMMIT"); err != nil && !errors.Is(err, sql.ErrConnDone) {
		t.Errorf("COMMIT = %v", err)
	}
}

// TestTimeoutCommandIsOneSignal runs the demo under coreutils' timeout,
// which sends SIGTERM to the demo and then to its process group, a moment
// apart: the demo must take the two as one, and drain cleanly through its
// readiness delay instead of forcing the drain on the second.
func TestTimeoutCommandIsOneSignal(t *testing.T) {
	timeoutCmd, err := exec.LookPath("timeout")
	if err != nil {
		t.Skipf("coreutils' timeout is not installed: %v", err)
	}
	bin, _ := binaries(t)
	const runs = 3
	repeats := 0
	for i := range runs {
		cmd := exec.Command(timeoutCmd, "--preserve-status", "1",
			bin, "-log", "json", "-addr", "127.0.0.1:0", "-db", dbPath(t), "-readiness-delay", "1s")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		done := make(chan error, 1)
		if err := cmd.Start(); err != nil {
			t.Fatalf("starting %v: %v", cmd, err)
		}
		go func() { done <- cmd.Wait() }()
		select {
		case err = <-done:
		case <-time.After(defaultTestTimeout):
			cmd.Process.Kill()
			<-done
			t.Fatalf("run %d: timeout 1 demo still runs after %v\n%s", i, defaultTestTimeout, stderr.String())
		}
		log := stderr.String()
		if err != nil {
			t.Errorf("run %d: timeout --preserve-status 1 demo = %v, want exit 0\n%s", i, err, log)
		}
		if strings.Contains(log, "signal received during the drain") || strings.Contains(log, `"forced":true`) {
			t.Errorf("run %d: the signal repeated by timeout was taken as a second one\n%s", i, log)
		}
		if strings.Contains(log, "taken as the same signal") {
			repeats++
		}
	}
	// The kernel merges a SIGTERM that arrives while another is pending:
	// some runs see one signal only.
	t.Logf("%d of %d runs received the SIGTERM twice; all drained cleanly", repeats, runs)
}
