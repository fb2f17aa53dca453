//go:build unix && !race

package process_test

const raceEnabled = false
