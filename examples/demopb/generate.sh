#!/bin/sh
# Regenerates demo.pb.go and demo_grpc.pb.go from ../demo.proto.
#
# Needs protoc with the well-known types in /usr/include (Debian:
# apt-get install protobuf-compiler libprotobuf-dev) and the Go toolchain.
# The plugins are run as `go run module@version`, at fixed versions, so that
# they stay out of go.mod: protoc-gen-go matches the google.golang.org/protobuf
# of go.mod. protoc wants an executable per plugin: each is a two-line script
# in a temporary directory.
set -eu

PROTOC_GEN_GO=google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
PROTOC_GEN_GO_GRPC=google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2

cd "$(dirname "$0")"
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
printf '#!/bin/sh\nexec go run %s "$@"\n' "$PROTOC_GEN_GO" >"$bin/protoc-gen-go"
printf '#!/bin/sh\nexec go run %s "$@"\n' "$PROTOC_GEN_GO_GRPC" >"$bin/protoc-gen-go-grpc"
chmod +x "$bin/protoc-gen-go" "$bin/protoc-gen-go-grpc"

protoc -I .. -I /usr/include \
	--plugin=protoc-gen-go="$bin/protoc-gen-go" \
	--plugin=protoc-gen-go-grpc="$bin/protoc-gen-go-grpc" \
	--go_out=. --go_opt=paths=source_relative \
	--go-grpc_out=. --go-grpc_opt=paths=source_relative \
	demo.proto
