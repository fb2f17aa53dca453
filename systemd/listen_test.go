//go:build unix

package systemd_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/drainkit/drainkit/systemd"
)

const (
	// childEnv, set in the environment of the test binary, makes it call
	// Listen and print the result instead of running the tests.
	childEnv = "DRAINKIT_SYSTEMD_LISTEN_CHILD"
	// childTimeout bounds a run of the child.
	childTimeout = 30 * time.Second
)

// listenResult is what the child prints.
type listenResult struct {
	Source string `json:"source"`
	Addr   string `json:"addr"`
	Err    string `json:"err"`
	// OtherProcess and BadSocket say whether Err wraps the sentinels.
	OtherProcess bool `json:"other_process"`
	BadSocket    bool `json:"bad_socket"`
	// Env is what remains of the protocol's variables after Listen.
	Env []string `json:"env"`
}

// listenChild calls Listen with the network and address given in its
// environment, prints the result as JSON and closes the listener.
func listenChild() int {
	lis, src, err := systemd.Listen(os.Getenv(childEnv), os.Getenv("DRAINKIT_ADDR"))
	var r listenResult
	r.Source = string(src)
	if err != nil {
		r.Err = err.Error()
		r.OtherProcess = errors.Is(err, systemd.ErrOtherProcess)
		r.BadSocket = errors.Is(err, systemd.ErrBadSocket)
	} else {
		r.Addr = lis.Addr().String()
		lis.Close()
	}
	for _, name := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		if v, ok := os.LookupEnv(name); ok {
			r.Env = append(r.Env, name+"="+v)
		}
	}
	if err := json.NewEncoder(os.Stdout).Encode(r); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// runListen runs the test binary as systemd would run a socket-activated
// service: files from descriptor 3 on, and the environment env, in which
// "LISTEN_PID=self" stands for the child's own process ID. The child calls
// Listen(network, addr).
func runListen(t *testing.T, network, addr string, env []string, files ...*os.File) listenResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), childTimeout)
	defer cancel()
	// sh exports LISTEN_PID with its own process ID, which exec keeps.
	script := `exec "$0" "$@"`
	for _, e := range env {
		if e == "LISTEN_PID=self" {
			script = `LISTEN_PID=$$ ` + script
			continue
		}
		script = e + " " + script
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, "sh", "-c", script, exe, "-test.run=^$")
	// The race detector would wait a second at the exit.
	cmd.Env = append(os.Environ(), childEnv+"="+network, "DRAINKIT_ADDR="+addr, "GORACE=atexit_sleep_ms=0")
	cmd.ExtraFiles = files
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v: %v\n%s", cmd, err, out)
	}
	var r listenResult
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("child output %q: %v", out, err)
	}
	return r
}

// tcpListener returns a listening socket on 127.0.0.1 and its file, both
// closed at the end of the test.
func tcpListener(t *testing.T) (*net.TCPListener, *os.File) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	f, err := lis.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return lis.(*net.TCPListener), f
}

// socketFile returns a socket of the given domain and type, bound to the
// loopback address (or a file for AF_UNIX), listening if listen is set.
func socketFile(t *testing.T, domain, typ int, listen bool) *os.File {
	t.Helper()
	fd, err := syscall.Socket(domain, typ, 0)
	if err != nil {
		t.Fatal(err)
	}
	var sa syscall.Sockaddr
	switch domain {
	case syscall.AF_INET:
		sa = &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}
	case syscall.AF_UNIX:
		sa = &syscall.SockaddrUnix{Name: filepath.Join(t.TempDir(), "s")}
	}
	if err := syscall.Bind(fd, sa); err != nil {
		syscall.Close(fd)
		t.Fatal(err)
	}
	if listen {
		if err := syscall.Listen(fd, 16); err != nil {
			syscall.Close(fd)
			t.Fatal(err)
		}
	}
	f := os.NewFile(uintptr(fd), "socket")
	t.Cleanup(func() { f.Close() })
	return f
}

func TestListenPassedSocket(t *testing.T) {
	lis, f := tcpListener(t)
	r := runListen(t, "tcp", "127.0.0.1:1", []string{"LISTEN_PID=self", "LISTEN_FDS=1", "LISTEN_FDNAMES=grpc"}, f)
	if r.Err != "" {
		t.Fatalf("Listen() error = %s, want nil", r.Err)
	}
	if r.Source != string(systemd.SourceSystemd) {
		t.Errorf("Listen() source = %q, want %q", r.Source, systemd.SourceSystemd)
	}
	if r.Addr != lis.Addr().String() {
		t.Errorf("Listen() address = %s, want the passed socket's %s (not -addr)", r.Addr, lis.Addr())
	}
	if len(r.Env) != 0 {
		t.Errorf("after Listen(), the environment still has %q", r.Env)
	}

	// The child closed its listener and exited: the socket, which the test
	// holds as systemd would, still takes connections.
	c, err := net.DialTimeout("tcp", lis.Addr().String(), childTimeout)
	if err != nil {
		t.Fatalf("dialing the passed socket after the child closed its listener: %v", err)
	}
	defer c.Close()
	lis.SetDeadline(time.Now().Add(childTimeout))
	accepted, err := lis.Accept()
	if err != nil {
		t.Fatalf("Accept() on the passed socket after the child closed its listener = %v", err)
	}
	accepted.Close()
}

func TestListenWithoutSystemd(t *testing.T) {
	r := runListen(t, "tcp", "127.0.0.1:0", nil)
	if r.Err != "" {
		t.Fatalf("Listen() error = %s, want nil", r.Err)
	}
	if r.Source != string(systemd.SourceListen) {
		t.Errorf("Listen() source = %q, want %q", r.Source, systemd.SourceListen)
	}
	if !strings.HasPrefix(r.Addr, "127.0.0.1:") {
		t.Errorf("Listen() address = %q, want one on 127.0.0.1", r.Addr)
	}
}

func TestListenRefuses(t *testing.T) {
	_, tcp := tcpListener(t)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pr.Close(); pw.Close() })
	active := []string{"LISTEN_PID=self", "LISTEN_FDS=1"}
	for _, tt := range []struct {
		name         string
		network      string
		env          []string
		files        []*os.File
		wantErr      string
		otherProcess bool // want ErrOtherProcess, else ErrBadSocket
	}{
		{name: "LISTEN_PID of another process", network: "tcp", env: []string{"LISTEN_PID=1", "LISTEN_FDS=1"}, files: []*os.File{tcp}, wantErr: "LISTEN_PID=1, this process is", otherProcess: true},
		{name: "LISTEN_PID not a number", network: "tcp", env: []string{"LISTEN_PID=abc", "LISTEN_FDS=1"}, files: []*os.File{tcp}, wantErr: `LISTEN_PID="abc": not a process ID`},
		{name: "LISTEN_FDS without LISTEN_PID", network: "tcp", env: []string{"LISTEN_FDS=1"}, files: []*os.File{tcp}, wantErr: "without LISTEN_PID"},
		{name: "LISTEN_PID without LISTEN_FDS", network: "tcp", env: []string{"LISTEN_PID=self"}, files: []*os.File{tcp}, wantErr: "without LISTEN_FDS"},
		{name: "LISTEN_FDS zero", network: "tcp", env: []string{"LISTEN_PID=self", "LISTEN_FDS=0"}, wantErr: `LISTEN_FDS="0"`},
		{name: "two sockets", network: "tcp", env: []string{"LISTEN_PID=self", "LISTEN_FDS=2"}, files: []*os.File{tcp, socketFile(t, syscall.AF_INET, syscall.SOCK_STREAM, true)}, wantErr: "LISTEN_FDS=2: want one socket"},
		{name: "not a socket", network: "tcp", env: active, files: []*os.File{pr}, wantErr: "not a socket but pipe:"},
		{name: "a file of the process's own", network: "tcp", env: active, files: []*os.File{regularFile(t)}, wantErr: "/cgroup.file, opened by the process itself: systemd passes the socket there, and passed none (is the service started by its .socket unit?)"},
		// Descriptor 3 is then closed, or one of the process's own.
		{name: "no descriptor passed", network: "tcp", env: active, wantErr: "is the service started by its .socket unit?"},
		{name: "datagram socket", network: "tcp", env: active, files: []*os.File{socketFile(t, syscall.AF_INET, syscall.SOCK_DGRAM, false)}, wantErr: "want a stream socket"},
		{name: "not listening", network: "tcp", env: active, files: []*os.File{socketFile(t, syscall.AF_INET, syscall.SOCK_STREAM, false)}, wantErr: "not listening"},
		{name: "unix socket for tcp", network: "tcp", env: active, files: []*os.File{socketFile(t, syscall.AF_UNIX, syscall.SOCK_STREAM, true)}, wantErr: "a unix socket, want tcp"},
		{name: "tcp4 socket for tcp6", network: "tcp6", env: active, files: []*os.File{tcp}, wantErr: "a tcp4 socket, want tcp6"},
		{name: "unknown network", network: "udp", env: active, files: []*os.File{tcp}, wantErr: `network "udp"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := runListen(t, tt.network, "127.0.0.1:0", tt.env, tt.files...)
			if r.Err == "" {
				t.Fatalf("Listen() = %s listener at %s, want an error containing %q", r.Source, r.Addr, tt.wantErr)
			}
			if !strings.Contains(r.Err, tt.wantErr) {
				t.Errorf("Listen() error = %s, want one containing %q", r.Err, tt.wantErr)
			}
			if tt.network != "udp" {
				if tt.otherProcess && !r.OtherProcess {
					t.Errorf("Listen() error = %s, want one wrapping ErrOtherProcess", r.Err)
				}
				if !tt.otherProcess && !r.BadSocket {
					t.Errorf("Listen() error = %s, want one wrapping ErrBadSocket", r.Err)
				}
			}
			if len(r.Env) != 0 {
				t.Errorf("after Listen(), the environment still has %q", r.Env)
			}
		})
	}
}

func TestListenUnixSocket(t *testing.T) {
	f := socketFile(t, syscall.AF_UNIX, syscall.SOCK_STREAM, true)
	r := runListen(t, "unix", "", []string{"LISTEN_PID=self", "LISTEN_FDS=1"}, f)
	if r.Err != "" || r.Source != string(systemd.SourceSystemd) {
		t.Fatalf("Listen(\"unix\") = %q, error %q; want %q, nil", r.Source, r.Err, systemd.SourceSystemd)
	}
}

// regularFile returns a file named cgroup.file, open for reading, as the Go
// runtime may hold one in the first free descriptor.
func regularFile(t *testing.T) *os.File {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cgroup.file")
	if err := os.WriteFile(path, []byte("max 100000\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}
