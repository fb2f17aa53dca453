//go:build unix

package process_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// drainProfileEnv names the file of the demo's CPU profile of its drain.
const drainProfileEnv = "DRAINKIT_DEMO_DRAIN_CPUPROFILE"

// A profile file the demo cannot create is a usage error at start-up,
// named in the log, and the database is not created.
func TestDemoBadDrainProfile(t *testing.T) {
	bin, _ := binaries(t)
	dir := t.TempDir()
	unwritable := filepath.Join(dir, "unwritable.prof")
	if err := os.WriteFile(unwritable, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	cases := []struct{ name, path string }{
		{"missing directory", filepath.Join(dir, "missing", "drain.prof")},
		{"a directory", dir},
	}
	if os.Geteuid() != 0 { // root writes any file
		cases = append(cases, struct{ name, path string }{"unwritable file", unwritable})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			db := dbPath(t)
			cmd := exec.Command(bin, "-addr", "127.0.0.1:0", "-db", db, "-log", "json")
			cmd.Env = append(os.Environ(), drainProfileEnv+"="+tc.path)
			s, err := spawn(t, tc.name, cmd)
			if err != nil {
				t.Fatalf("starting the demo: %v", err)
			}
			t.Cleanup(s.kill)
			if _, code := s.wait(startTimeout); code != exitUsage {
				t.Errorf("the demo with %s=%q exited %d, want %d\n%s", drainProfileEnv, tc.path, code, exitUsage, s.log)
			}
			if failed := s.log.find(isMsg("start-up failed")); len(failed) != 1 || !strings.Contains(failed[0].str("err"), drainProfileEnv) {
				t.Errorf("the demo with %s=%q logged %v, want one \"start-up failed\" record naming %s", drainProfileEnv, tc.path, failed, drainProfileEnv)
			}
			if _, err := os.Stat(db); err == nil {
				t.Errorf("the demo with %s=%q created its database, want nothing created", drainProfileEnv, tc.path)
			}
		})
	}
}
