//go:build unix && race

package process_test

// raceEnabled: the test binary runs under the race detector, which makes
// its clients several times slower and larger.
const raceEnabled = true
