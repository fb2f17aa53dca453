// Package examples holds the drainkit demo: the service definition
// demo.proto, its generated code in demopb, the server in server, and the
// ways to deploy it, in kubernetes and systemd. Its tests check that each
// deployment gives the server's drain the time it needs.
package examples
