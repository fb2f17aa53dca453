package readmesnippet_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/drainkit/drainkit/internal/readmesnippet"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// recorder is a testing.TB that records failures instead of failing.
type recorder struct {
	testing.TB
	failed []string
}

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, args ...any) {
	r.failed = append(r.failed, format)
}

const src = "package x\n\nfunc hello() string {\n\treturn \"hello\"\n}\n"

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		name   string
		readme string
		wantOK bool
	}{
		{"equal", "<!-- func hello of x.go: keep them equal -->\n```go\nfunc hello() string {\n\treturn \"hello\"\n}\n```\n", true},
		{"different", "<!-- func hello of x.go: keep them equal -->\n```go\nfunc hello() string {\n\treturn \"bye\"\n}\n```\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			readme, file := filepath.Join(dir, "README.md"), filepath.Join(dir, "x.go")
			for path, text := range map[string]string{readme: tc.readme, file: src} {
				if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			r := &recorder{TB: t}
			readmesnippet.Check(r, readme, file, "x.go", "hello")
			if ok := len(r.failed) == 0; ok != tc.wantOK {
				t.Errorf("Check() failures = %q, want failing %t", strings.Join(r.failed, "; "), !tc.wantOK)
			}
		})
	}
}
