package examples_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"
)

const (
	// analyzeTimeout bounds a run of systemd-analyze.
	analyzeTimeout = time.Minute
	// maxExposure is the highest exposure systemd-analyze security may give
	// the service: up to 2.0 it rates it "OK".
	maxExposure = 2.0
)

// overallExposure matches the last line of systemd-analyze security.
var overallExposure = regexp.MustCompile(`Overall exposure level for drainkit-demo\.service: ([0-9.]+)`)

// analyzeUnits copies the shipped units to a directory of the test, with
// ExecStart naming an executable that exists (systemd-analyze verify checks
// it), and returns their paths.
func analyzeUnits(t *testing.T) (socket, service string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	socket, service = filepath.Join(dir, "drainkit-demo.socket"), filepath.Join(dir, "drainkit-demo.service")
	unit := bytes.ReplaceAll(readFile(t, systemdUnit), []byte("/usr/local/bin/drainkit-demo"), []byte(exe))
	if err := os.WriteFile(service, unit, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(socket, readFile(t, systemdSocket), 0o644); err != nil {
		t.Fatal(err)
	}
	return socket, service
}

// systemdAnalyze runs systemd-analyze with args, and returns its output and
// error. It skips the test where systemd-analyze is not installed (Debian's
// package systemd provides it); it never starts systemd.
func systemdAnalyze(t *testing.T, args ...string) ([]byte, error) {
	t.Helper()
	bin, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), analyzeTimeout)
	defer cancel()
	return exec.CommandContext(ctx, bin, args...).CombinedOutput()
}

// The shipped units pass systemd-analyze verify without a word.
func TestSystemdAnalyzeVerify(t *testing.T) {
	socket, service := analyzeUnits(t)
	out, err := systemdAnalyze(t, "verify", socket, service)
	if err != nil || len(bytes.TrimSpace(out)) != 0 {
		t.Errorf("systemd-analyze verify: %v, output:\n%s\nwant no error and no output", err, out)
	}
}

// The shipped service is hardened: systemd-analyze security rates its
// exposure at most maxExposure ("OK").
func TestSystemdAnalyzeSecurity(t *testing.T) {
	_, service := analyzeUnits(t)
	out, err := systemdAnalyze(t, "security", "--offline=yes", "--no-pager", service)
	if err != nil {
		t.Fatalf("systemd-analyze security: %v, output:\n%s", err, out)
	}
	m := overallExposure.FindSubmatch(out)
	if m == nil {
		t.Fatalf("systemd-analyze security printed no overall exposure:\n%s", out)
	}
	exposure, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("overall exposure of the service: %.1f", exposure)
	if exposure > maxExposure {
		t.Errorf("exposure %.1f, want at most %.1f:\n%s", exposure, maxExposure, out)
	}
}
