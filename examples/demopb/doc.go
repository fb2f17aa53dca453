// Package demopb holds the generated Go code of the drainkit.demo.v1.Demo
// service, defined in examples/demo.proto.
package demopb

//go:generate sh generate.sh
