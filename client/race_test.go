//go:build race

package client_test

// raceSlowdown scales the timing bounds of tests that run real servers
// and clients: the race detector slows every goroutine several times, and
// the two goroutines of a resume (the client's and the server's) with it.
const raceSlowdown = 2
