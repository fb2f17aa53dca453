package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/drainkit/drainkit/examples/internal/demoflags"
	"github.com/drainkit/drainkit/systemd"
	"github.com/drainkit/drainkit/upgrade"
)

// Every refusal of an upgrade says why, in its record and in systemd's
// status line ("reload refused: ..."), whether the Upgrader returns the
// error bare or wrapped.
func TestRefusedSaysWhy(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", path)
	n := systemd.NewNotifier()

	for _, tt := range []struct {
		err  error
		want string // the record's message, and after "upgrade " the status line's
	}{
		{err: upgrade.ErrNotReady, want: "upgrade refused: the server does not serve yet"},
		{err: upgrade.ErrUpgraded, want: "upgrade refused: the server was upgraded and drains"},
		{err: fmt.Errorf("%w: successor killed: signal: killed", upgrade.ErrStopped), want: "upgrade refused: the server drains"},
		{err: upgrade.ErrPID1, want: "upgrade refused: the server is PID 1, and its successor would be killed when it exits; restart it instead"},
		{err: upgrade.ErrContainerInit, want: "upgrade refused: the server is the main process of a container"},
		{err: upgrade.ErrParentDraining, want: "upgrade refused: the server this one replaced still drains; reload once it has exited"},
	} {
		t.Run(tt.err.Error(), func(t *testing.T) {
			var out bytes.Buffer
			logger, err := newLogger(demoflags.LogJSON, &out)
			if err != nil {
				t.Fatal(err)
			}
			refused(tt.err, syscall.SIGHUP, n, logger)

			var rec struct{ Level, Msg, Signal, Err string }
			if err := json.Unmarshal(out.Bytes(), &rec); err != nil {
				t.Fatalf("the record %q: %v", out.String(), err)
			}
			if rec.Level != "WARN" || !strings.HasPrefix(rec.Msg, tt.want) || rec.Signal != "hangup" || rec.Err != tt.err.Error() {
				t.Errorf("refused(%v) logged %+v, want a WARN %q... with the signal and the error", tt.err, rec, tt.want)
			}

			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 4096)
			k, err := conn.Read(buf)
			if err != nil {
				t.Fatalf("reading NOTIFY_SOCKET: %v", err)
			}
			wantStatus := "STATUS=reload " + strings.TrimPrefix(tt.want, "upgrade ")
			if got := string(buf[:k]); !strings.HasPrefix(got, wantStatus) || strings.Contains(got, "RELOADING") {
				t.Errorf("refused(%v) sent %q, want %q... and no RELOADING=1", tt.err, got, wantStatus)
			}
		})
	}
}
