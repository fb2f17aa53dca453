// Package demoflags is the command line of the drainkit demo server
// (examples/server): its flags, their checks, and the drain options they
// make. The server and the tests of its deployments share it, so that a
// manifest's flags are read exactly as the server reads them.
package demoflags
