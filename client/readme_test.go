package client_test

import (
	"bytes"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/drainkit/drainkit/client"
	"github.com/drainkit/drainkit/examples/demopb"
)

// dialDemo is the snippet of README.md's Clients section, word for word:
// TestREADMEClientSnippet fails when the two differ, and the compiler when
// the snippet does not compile.
func dialDemo(target string, creds credentials.TransportCredentials) (*grpc.ClientConn, error) {
	opts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(creds),
	}, client.DialOptions(
		// Echo may run twice: retried even when a drain cut it.
		client.WithIdempotent(demopb.Demo_Echo_FullMethodName),
		// Watch goes on on another server, after the last tick received.
		client.WithResume(demopb.Demo_Watch_FullMethodName, func(_ *demopb.WatchRequest, last *timestamppb.Timestamp) *demopb.WatchRequest {
			return &demopb.WatchRequest{After: last}
		}),
	)...)
	return client.NewClient(target, opts...)
}

// clientSnippetMarker precedes, in README.md, the code block that is
// dialDemo.
const clientSnippetMarker = "<!-- func dialDemo of client/readme_test.go: keep them equal -->\n```go\n"

func TestREADMEClientSnippet(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := bytes.Cut(readme, []byte(clientSnippetMarker))
	if !ok {
		t.Fatalf("README.md: no %q", clientSnippetMarker)
	}
	block, _, ok = bytes.Cut(block, []byte("\n```\n"))
	if !ok {
		t.Fatal("README.md: the snippet's code block does not end")
	}

	src, err := os.ReadFile("readme_test.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "readme_test.go", src, 0)
	if err != nil {
		t.Fatal(err)
	}
	var code []byte
	for _, d := range f.Decls {
		if fn, ok := d.(*ast.FuncDecl); ok && fn.Name.Name == "dialDemo" {
			code = src[fset.Position(fn.Pos()).Offset:fset.Position(fn.End()).Offset]
		}
	}
	if code == nil {
		t.Fatal("readme_test.go: no func dialDemo")
	}
	if !bytes.Equal(block, code) {
		t.Errorf("README.md's snippet differs from func dialDemo of readme_test.go:\n--- README.md\n%s\n--- readme_test.go\n%s", block, code)
	}

	// And the conn it makes is in the registry until closed.
	cc, err := dialDemo("passthrough:///demo", insecure.NewCredentials())
	if err != nil {
		t.Fatalf("dialDemo() = %v", err)
	}
	if open := client.Open(); len(open) != 1 || open[0].Target != "passthrough:///demo" {
		t.Errorf("Open() = %v, want the conn of dialDemo", open)
	}
	cc.Close()
}
