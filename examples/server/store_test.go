package main

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The errors of the store's file system checks, for a server that runs as
// a user without root's right to write any file.
func TestOpenStoreRefuses(t *testing.T) {
	for _, tt := range []struct {
		name string
		// path returns the database's path in dir, after preparing dir.
		path    func(t *testing.T, dir string) string
		wantErr func(path string) []string // each must be in the error
		nonRoot bool                       // root writes whatever the modes say
	}{
		{
			name: "missing directory",
			path: func(t *testing.T, dir string) string { return filepath.Join(dir, "missing", "demo.db") },
			wantErr: func(path string) []string {
				return []string{"-db " + path + ": ", "directory " + filepath.Dir(path) + " does not exist"}
			},
		},
		{
			name: "directory is a file",
			path: func(t *testing.T, dir string) string {
				writeFile(t, filepath.Join(dir, "file"))
				return filepath.Join(dir, "file", "demo.db")
			},
			wantErr: func(path string) []string {
				return []string{"-db " + path + ": ", filepath.Dir(path) + " is not a directory"}
			},
		},
		{
			name: "file is a directory",
			path: func(t *testing.T, dir string) string {
				path := filepath.Join(dir, "demo.db")
				if err := os.Mkdir(path, 0o755); err != nil {
					t.Fatal(err)
				}
				return path
			},
			wantErr: func(path string) []string { return []string{"-db " + path + ": ", path + " is a directory"} },
		},
		{
			name: "read-only file",
			path: func(t *testing.T, dir string) string {
				path := filepath.Join(dir, "demo.db")
				openTestStore(t, path).Close()
				chmod(t, path, 0o444)
				return path
			},
			wantErr: func(path string) []string {
				return []string{"-db " + path + ": ", path + " is not writable (permission denied)"}
			},
			nonRoot: true,
		},
		{
			name: "read-only directory",
			path: func(t *testing.T, dir string) string {
				chmod(t, dir, 0o555)
				t.Cleanup(func() { os.Chmod(dir, 0o755) }) // for t.TempDir's removal
				return filepath.Join(dir, "demo.db")
			},
			wantErr: func(path string) []string {
				return []string{"-db " + path + ": ", "directory " + filepath.Dir(path) + " is not writable (permission denied)"}
			},
			nonRoot: true,
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.nonRoot && os.Geteuid() == 0 {
				t.Skip("root writes read-only files; examples/process runs this case as another user")
			}
			path := tt.path(t, t.TempDir())
			db, err := openStore(testContext(t), path)
			if err == nil {
				db.Close()
				t.Fatalf("openStore(%q) = nil error, want one", path)
			}
			for _, want := range tt.wantErr(path) {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("openStore(%q) = %v, want an error containing %q", path, err, want)
				}
			}
		})
	}
}

func writeFile(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

func chmod(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// The check of the directory leaves nothing behind.
func TestOpenStoreLeavesOnlyTheDatabase(t *testing.T) {
	dir := t.TempDir()
	openTestStore(t, filepath.Join(dir, "demo.db")).Close()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "demo.db") {
			t.Errorf("openStore left %s in the database's directory", e.Name())
		}
	}
}

// A write that fails is INTERNAL, not UNAVAILABLE: a client retrying it on
// another server would fail there too.
func TestAppendFailedWrite(t *testing.T) {
	db := openTestStore(t, filepath.Join(t.TempDir(), "demo.db"))
	// One connection, made read-only: every write through the pool fails.
	db.SetMaxOpenConns(1)
	ctx := testContext(t)
	if _, err := db.ExecContext(ctx, `PRAGMA query_only = ON`); err != nil {
		t.Fatal(err)
	}
	c := newClient(t, &demoService{db: db})
	_, err := c.Append(ctx, wrapperspb.String("lost"))
	if got := status.Code(err); got != codes.Internal {
		t.Errorf("Append() on a read-only store = %v, want code %v", err, codes.Internal)
	}
}

func TestGetBadID(t *testing.T) {
	c := newClient(t, &demoService{db: openTestStore(t, filepath.Join(t.TempDir(), "demo.db"))})
	for _, id := range []int64{0, -1} {
		if _, err := c.Get(testContext(t), wrapperspb.Int64(id)); status.Code(err) != codes.InvalidArgument {
			t.Errorf("Get(%d) = %v, want code %v", id, err, codes.InvalidArgument)
		}
	}
}

func TestStoreError(t *testing.T) {
	db := openTestStore(t, filepath.Join(t.TempDir(), "demo.db"))
	ctx := testContext(t)
	insert := `INSERT INTO entries (id, value) VALUES (1, 'one')`
	if _, err := db.ExecContext(ctx, insert); err != nil {
		t.Fatal(err)
	}
	_, constraint := db.ExecContext(ctx, insert)
	if constraint == nil {
		t.Fatal("a second row with id 1 was inserted")
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	expired, cancel := context.WithTimeout(ctx, 0)
	defer cancel()

	for _, tt := range []struct {
		name string
		ctx  context.Context
		err  error
		want codes.Code
	}{
		{name: "cancelled", ctx: cancelled, err: context.Canceled, want: codes.Canceled},
		{name: "deadline", ctx: expired, err: context.DeadlineExceeded, want: codes.DeadlineExceeded},
		{name: "constraint", ctx: ctx, err: constraint, want: codes.InvalidArgument},
		{name: "other", ctx: ctx, err: errors.New("disk I/O error"), want: codes.Internal},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := status.Code(storeError(tt.ctx, "op", tt.err)); got != tt.want {
				t.Errorf("storeError(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

// When the port is taken, the server exits before it opens, so creates,
// its database.
func TestRunPortTaken(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	dir := t.TempDir()
	args := []string{"-addr", lis.Addr().String(), "-db", filepath.Join(dir, "demo.db"), "-log", "json"}
	if got := run(args); got != exitError {
		t.Errorf("run(%q) = %d, want %d", args, got, exitError)
	}
	if entries, _ := os.ReadDir(dir); len(entries) > 0 {
		t.Errorf("run(%q) created %s, want nothing", args, entries[0].Name())
	}
}

func TestRunMissingDirectory(t *testing.T) {
	args := []string{"-addr", "127.0.0.1:0", "-db", filepath.Join(t.TempDir(), "missing", "demo.db"), "-log", "json"}
	if got := run(args); got != exitError {
		t.Errorf("run(%q) = %d, want %d", args, got, exitError)
	}
}
