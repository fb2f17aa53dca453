// Package readmesnippet checks, for the tests of drainkit, that a Go code
// block of README.md is, byte for byte, a function of a test file, so that
// the README's code compiles and cannot drift from what the tests run.
package readmesnippet

import (
	"bytes"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"testing"
)

// Check fails t unless the README at readme holds, after the line
//
//	<!-- func NAME of NAMED: keep them equal -->
//
// a Go code block equal to the function name of the file at src, which the
// README calls named (its path from the repository's root).
func Check(t testing.TB, readme, src, named, name string) {
	t.Helper()
	marker := "<!-- func " + name + " of " + named + ": keep them equal -->\n```go\n"
	text, err := os.ReadFile(readme)
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := bytes.Cut(text, []byte(marker))
	if !ok {
		t.Fatalf("%s: no %q", readme, marker)
	}
	block, _, ok = bytes.Cut(block, []byte("\n```\n"))
	if !ok {
		t.Fatalf("%s: the code block of func %s does not end", readme, name)
	}

	code, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, src, code, 0)
	if err != nil {
		t.Fatal(err)
	}
	var fn []byte
	for _, d := range f.Decls {
		if fd, ok := d.(*ast.FuncDecl); ok && fd.Name.Name == name {
			fn = code[fset.Position(fd.Pos()).Offset:fset.Position(fd.End()).Offset]
		}
	}
	if fn == nil {
		t.Fatalf("%s: no func %s", src, name)
	}
	if !bytes.Equal(block, fn) {
		t.Errorf("%s's snippet differs from func %s of %s:\n--- %s\n%s\n--- %s\n%s", readme, name, src, readme, block, src, fn)
	}
}
