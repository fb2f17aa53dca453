//go:build !race

package client_test

// raceSlowdown scales the timing bounds of tests that run real servers
// and clients; see race_test.go.
const raceSlowdown = 1
