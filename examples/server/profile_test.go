package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A profile begins when its context ends and is complete once stopped: a
// gzip stream, as pprof writes it.
func TestProfileDrain(t *testing.T) {
	path := filepath.Join(t.TempDir(), "drain.prof")
	begin, start := context.WithCancel(context.Background())
	stop, err := profileDrain(path, begin)
	if err != nil {
		t.Fatalf("profileDrain() = %v", err)
	}
	start()
	if err := stop(); err != nil {
		t.Fatalf("stop() = %v", err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte{0x1f, 0x8b}) {
		t.Errorf("profile = %q..., want a gzip stream", b[:min(len(b), 8)])
	}
}

// Without a drain, the file stays empty.
func TestProfileDrainNotBegun(t *testing.T) {
	path := filepath.Join(t.TempDir(), "drain.prof")
	stop, err := profileDrain(path, context.Background())
	if err != nil {
		t.Fatalf("profileDrain() = %v", err)
	}
	if err := stop(); err != nil {
		t.Fatalf("stop() = %v", err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() != 0 {
		t.Errorf("profile file: %v, %v; want an empty file", fi, err)
	}
}

func TestProfileDrainBadPath(t *testing.T) {
	_, err := profileDrain(filepath.Join(t.TempDir(), "missing", "drain.prof"), context.Background())
	if err == nil || !strings.Contains(err.Error(), drainProfileEnv) {
		t.Errorf("profileDrain() = %v, want an error naming %s", err, drainProfileEnv)
	}
}

// A successor started by an upgrade does not inherit the variable.
func TestTakeDrainProfilePath(t *testing.T) {
	t.Setenv(drainProfileEnv, "/tmp/x.prof")
	if got := takeDrainProfilePath(); got != "/tmp/x.prof" {
		t.Errorf("takeDrainProfilePath() = %q, want /tmp/x.prof", got)
	}
	if v, ok := os.LookupEnv(drainProfileEnv); ok {
		t.Errorf("%s = %q after takeDrainProfilePath, want it unset", drainProfileEnv, v)
	}
}

// When the port is taken, the profile's file is not created, and a profile
// already there, of an earlier drain, is left whole.
func TestRunPortTakenKeepsProfile(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	dir := t.TempDir()
	for _, earlier := range []bool{false, true} {
		path := filepath.Join(dir, "drain.prof")
		if earlier {
			if err := os.WriteFile(path, []byte("earlier profile"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		t.Setenv(drainProfileEnv, path)
		args := []string{"-addr", lis.Addr().String(), "-db", filepath.Join(dir, "demo.db"), "-log", "json"}
		if got := run(args); got != exitError {
			t.Errorf("run(%q) = %d, want %d", args, got, exitError)
		}
		b, err := os.ReadFile(path)
		switch {
		case !earlier && err == nil:
			t.Errorf("run(%q) with the port taken created %s, want nothing", args, path)
		case earlier && string(b) != "earlier profile":
			t.Errorf("run(%q) with the port taken left %s = %q, %v; want the earlier profile", args, path, b, err)
		}
	}
}
