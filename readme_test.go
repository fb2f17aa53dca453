package drainkit_test

import (
	"bytes"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/drainkit/drainkit/drain"
	"github.com/drainkit/drainkit/interceptors"
)

// serve is the first snippet of README.md, word for word: TestREADMESnippet
// fails when the two differ, and the compiler when the snippet does not
// compile.
func serve(lis net.Listener) error {
	// One record per drain phase, then the report. The drain's default
	// logger discards them.
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	t := interceptors.NewTracker(
		// Streams that never end by themselves, such as watches: a drain
		// cancels them at once instead of waiting out its grace period.
		interceptors.WithLongLived("/example.v1.Feed/Watch"),
	)
	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(t.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(t.StreamServerInterceptor()),
	)
	h := health.NewServer()
	healthpb.RegisterHealthServer(srv, h)
	// register your services on srv ...
	d := drain.New(srv, t,
		drain.WithHealth(h),
		drain.WithReadinessDelay(5*time.Second),
		drain.WithLogger(logger),
	)
	// Drains on SIGTERM or SIGINT. nil after a clean drain;
	// errors.Is(err, drain.ErrForced) when handlers had to be cut.
	return d.Serve(lis)
}

// A program serves through the README's serve until SIGTERM or SIGINT.
func Example_serve() {
	lis, err := net.Listen("tcp", "127.0.0.1:50051")
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := serve(lis); err != nil {
		fmt.Println(err)
	}
}

// snippetMarker precedes, in README.md, the code block that is serve.
const snippetMarker = "<!-- func serve of readme_test.go: keep them equal -->\n```go\n"

func TestREADMESnippet(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := bytes.Cut(readme, []byte(snippetMarker))
	if !ok {
		t.Fatalf("README.md: no %q", snippetMarker)
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
		if fn, ok := d.(*ast.FuncDecl); ok && fn.Name.Name == "serve" {
			code = src[fset.Position(fn.Pos()).Offset:fset.Position(fn.End()).Offset]
		}
	}
	if code == nil {
		t.Fatal("readme_test.go: no func serve")
	}
	if !bytes.Equal(block, code) {
		t.Errorf("README.md's snippet differs from func serve of readme_test.go:\n--- README.md\n%s\n--- readme_test.go\n%s", block, code)
	}
}
