//go:build unix

package process_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

const (
	// nobodyUID is the user the server runs as in
	// TestRefusesUnwritableDatabase when the tests run as root, who may
	// write any file whatever its mode.
	nobodyUID = 65534
	// exitStartFailure is the exit status of a server that cannot start.
	exitStartFailure = 1
)

// A database the server cannot write is an error at start-up that names the
// file and the reason, before the server serves.
func TestRefusesUnwritableDatabase(t *testing.T) {
	bin, _ := binaries(t)
	asRoot := os.Geteuid() == 0
	if asRoot {
		// The server runs as nobody, who must reach the binary.
		if err := os.Chmod(filepath.Dir(bin), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct {
		name string
		// db returns the -db of the server, made in dir, which the
		// server's user owns.
		db      func(t *testing.T, dir string) string
		wantErr func(db string) string
	}{
		{
			name: "read-only file",
			db: func(t *testing.T, dir string) string {
				db := filepath.Join(dir, "demo.db")
				makeOwned(t, db, asRoot, 0o444, false)
				return db
			},
			wantErr: func(db string) string { return "-db " + db + ": " + db + " is not writable (permission denied)" },
		},
		{
			name: "read-only directory",
			db: func(t *testing.T, dir string) string {
				sub := filepath.Join(dir, "data")
				makeOwned(t, sub, asRoot, 0o555, true)
				return filepath.Join(sub, "demo.db")
			},
			wantErr: func(db string) string {
				return "-db " + db + ": directory " + filepath.Dir(db) + " is not writable (permission denied)"
			},
		},
		{
			name:    "missing directory",
			db:      func(t *testing.T, dir string) string { return filepath.Join(dir, "missing", "demo.db") },
			wantErr: func(db string) string { return "-db " + db + ": directory " + filepath.Dir(db) + " does not exist" },
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir, err := os.MkdirTemp("", "drainkit-refuse-")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
					if err == nil && d.IsDir() {
						os.Chmod(path, 0o755) // so that it can be removed by a user who is not root
					}
					return nil
				})
				os.RemoveAll(dir)
			})
			makeOwned(t, dir, asRoot, 0o755, true)
			db := tt.db(t, dir)

			cmd := exec.Command(bin, "-addr", "127.0.0.1:0", "-db", db)
			if asRoot {
				cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobodyUID, Gid: nobodyUID}}
			}
			code, stdout, stderr := runBounded(t, cmd)
			if code != exitStartFailure {
				t.Errorf("%v: exit status %d, want %d", cmd, code, exitStartFailure)
			}
			if want := tt.wantErr(db); !strings.Contains(stderr, want) {
				t.Errorf("%v: standard error %q, want it to contain %q", cmd, stderr, want)
			}
			if strings.Contains(stderr, "msg=serving") || stdout != "" {
				t.Errorf("%v served before it failed: stdout %q, stderr %q", cmd, stdout, stderr)
			}
		})
	}
}

// makeOwned makes path, a directory or an empty file, with mode, owned by
// nobody when the tests run as root.
func makeOwned(t *testing.T, path string, asRoot bool, mode os.FileMode, dir bool) {
	t.Helper()
	var err error
	if dir {
		err = os.MkdirAll(path, 0o755)
	} else {
		err = os.WriteFile(path, nil, 0o644)
	}
	if err != nil {
		t.Fatal(err)
	}
	if asRoot {
		if err := os.Chown(path, nobodyUID, nobodyUID); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}
