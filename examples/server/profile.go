package main

import (
	"context"
	"fmt"
	"os"
	"runtime/pprof"
)

// drainProfileEnv names the file for a CPU profile of the drain, from the
// first SIGTERM or SIGINT to the exit; where it is unset or empty, nothing
// is profiled.
const drainProfileEnv = "DRAINKIT_DEMO_DRAIN_CPUPROFILE"

// takeDrainProfilePath returns the value of drainProfileEnv, and removes it
// from the environment: a successor started by an upgrade, which inherits
// the environment, would otherwise profile its own drain into the same
// file, over this one's profile.
func takeDrainProfilePath() string {
	path := os.Getenv(drainProfileEnv)
	os.Unsetenv(drainProfileEnv)
	return path
}

// profileDrain creates the file at path, and writes to it a CPU profile from
// the moment begin ends to the call of the returned function, which closes
// the file; if begin never ends, the file is left empty. It fails if the
// file cannot be created.
func profileDrain(path string, begin context.Context) (stop func() error, err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", drainProfileEnv, err)
	}
	var (
		started  = make(chan struct{}) // closed once the profile has begun, or failed to
		startErr error
	)
	cancel := context.AfterFunc(begin, func() {
		startErr = pprof.StartCPUProfile(f)
		close(started)
	})
	return func() error {
		profiled := false
		if !cancel() {
			// begin has ended: the profile has begun, or is beginning.
			<-started
			profiled = startErr == nil
		}
		if profiled {
			pprof.StopCPUProfile()
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("%s: %w", drainProfileEnv, err)
		}
		if startErr != nil {
			return fmt.Errorf("%s: %w", drainProfileEnv, startErr)
		}
		return nil
	}, nil
}
