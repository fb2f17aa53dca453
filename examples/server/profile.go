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

// A drainProfile is the profile of the drain asked for by drainProfileEnv.
// Its file is created once the server listens, so that a start-up that
// fails on a port in use creates nothing, and leaves whole the profile of
// an earlier run.
type drainProfile struct {
	path string       // "" for no profile
	stop func() error // set by start
}

// start creates the profile's file, and profiles from the moment begin
// ends; its error, for a file it cannot create, is a *usageError.
func (p *drainProfile) start(begin context.Context) error {
	if p.path == "" {
		return nil
	}
	stop, err := profileDrain(p.path, begin)
	if err != nil {
		return &usageError{err}
	}
	p.stop = stop
	return nil
}

// finish ends the profile, if start began it, and closes its file.
func (p *drainProfile) finish() error {
	if p.stop == nil {
		return nil
	}
	return p.stop()
}

// A usageError is an error in what the demo was given, for which it exits
// with exitUsage.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

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
