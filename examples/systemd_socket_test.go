package examples_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/drainkit/drainkit/examples/internal/demoflags"
)

const systemdSocket = "systemd/drainkit-demo.socket"

// checkSystemdSocket checks a socket unit against the service it
// activates: it must pass one listening stream socket (ListenStream=,
// Accept=no) on the address that the service's -addr names, and the
// service must be of Type=notify, take the main process's notifications
// (NotifyAccess= other than none: the old server hands the service over to
// its successor itself) and upgrade on reload (ExecReload sends SIGHUP).
func checkSystemdSocket(socket, service []byte) error {
	s, err := parseSystemdUnit(socket)
	if err != nil {
		return fmt.Errorf("socket unit: %w", err)
	}
	u, err := parseSystemdUnit(service)
	if err != nil {
		return fmt.Errorf("service unit: %w", err)
	}
	if s["Socket"] == nil {
		return errors.New("socket unit: no [Socket] section")
	}
	for _, key := range []string{"ListenDatagram", "ListenSequentialPacket", "ListenFIFO"} {
		if _, ok := s.last("Socket", key); ok {
			return fmt.Errorf("socket unit: %s: the server takes one stream socket (ListenStream=)", key)
		}
	}
	streams := s["Socket"]["ListenStream"]
	if len(streams) != 1 {
		return fmt.Errorf("socket unit: %d ListenStream settings, want 1: the server takes one socket", len(streams))
	}
	if accept, ok := s.last("Socket", "Accept"); ok && accept != "no" && accept != "false" {
		return fmt.Errorf("socket unit: Accept=%s: the server takes the listening socket (Accept=no), not one connection", accept)
	}

	exec, ok := u.last("Service", "ExecStart")
	if !ok {
		return errors.New("service unit: no ExecStart")
	}
	args := strings.Fields(strings.TrimLeft(exec, "-@:+!"))
	cfg, err := demoflags.Parse(args[1:], discard{})
	if err != nil {
		return fmt.Errorf("service unit: ExecStart: %w", err)
	}
	if streams[0] != cfg.Addr {
		return fmt.Errorf("socket unit: ListenStream=%s, but the service's -addr is %s: they must name the same address", streams[0], cfg.Addr)
	}
	if typ, _ := u.last("Service", "Type"); typ != "notify" {
		return fmt.Errorf("service unit: Type=%s, want notify: the server sends READY=1 once it serves", typ)
	}
	if access, _ := u.last("Service", "NotifyAccess"); access == "none" {
		return fmt.Errorf("service unit: NotifyAccess=%s, want main, exec or all: the server sends READY=1, and MAINPID= in an upgrade", access)
	}
	if reload, _ := u.last("Service", "ExecReload"); !strings.Contains(reload, "-HUP") || !strings.Contains(reload, "$MAINPID") {
		return fmt.Errorf("service unit: ExecReload=%s, want kill -HUP $MAINPID: SIGHUP upgrades the server in place", reload)
	}
	return nil
}

// discard is an io.Writer that drops what it is given.
type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func TestCheckSystemdSocket(t *testing.T) {
	socket, service := readFile(t, systemdSocket), readFile(t, systemdUnit)
	for _, tt := range []struct {
		name     string
		file     string // systemdSocket or systemdUnit
		old, new string
		wantErr  string // "" for none
	}{
		{name: "as shipped"},
		{name: "socket on another port", file: systemdSocket, old: "ListenStream=127.0.0.1:50051", new: "ListenStream=127.0.0.1:50052", wantErr: "ListenStream=127.0.0.1:50052, but the service's -addr is 127.0.0.1:50051"},
		{name: "service on another address", file: systemdUnit, old: "-addr=127.0.0.1:50051", new: "-addr=0.0.0.0:50051", wantErr: "must name the same address"},
		{name: "no ListenStream", file: systemdSocket, old: "ListenStream=127.0.0.1:50051", new: "", wantErr: "0 ListenStream settings"},
		{name: "two ListenStream", file: systemdSocket, old: "ListenStream=127.0.0.1:50051", new: "ListenStream=127.0.0.1:50051\nListenStream=127.0.0.1:50052", wantErr: "2 ListenStream settings"},
		{name: "datagram socket", file: systemdSocket, old: "Accept=no", new: "ListenDatagram=127.0.0.1:50051", wantErr: "ListenDatagram"},
		{name: "a connection per process", file: systemdSocket, old: "Accept=no", new: "Accept=yes", wantErr: "Accept=yes"},
		{name: "no Socket section", file: systemdSocket, old: "[Socket]", new: "[Sockets]", wantErr: "no [Socket] section"},
		{name: "service of type exec", file: systemdUnit, old: "Type=notify", new: "Type=exec", wantErr: "Type=exec, want notify"},
		{name: "only the main process notifies", file: systemdUnit, old: "\nNotifyAccess=all\n", new: "\nNotifyAccess=main\n"},
		{name: "no process notifies", file: systemdUnit, old: "\nNotifyAccess=all\n", new: "\nNotifyAccess=none\n", wantErr: "NotifyAccess=none, want main, exec or all"},
		{name: "no reload", file: systemdUnit, old: "ExecReload=/bin/kill -HUP $MAINPID", new: "", wantErr: "want kill -HUP $MAINPID"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			so, se := socket, service
			switch tt.file {
			case systemdSocket:
				so = edit(t, socket, tt.old, tt.new)
			case systemdUnit:
				se = edit(t, service, tt.old, tt.new)
			}
			checkError(t, "checkSystemdSocket()", checkSystemdSocket(so, se), tt.wantErr)
		})
	}
}
