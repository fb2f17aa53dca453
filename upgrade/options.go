package upgrade

import (
	"fmt"
	"time"
)

// An Option configures an Upgrader.
type Option interface {
	apply(*options)
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

type options struct {
	readyTimeout time.Duration
	pidFile      string
}

// DefaultReadyTimeout is how long Upgrade waits for the successor's
// readiness by default.
const DefaultReadyTimeout = time.Minute

func defaultOptions() options {
	return options{readyTimeout: DefaultReadyTimeout}
}

// WithReadyTimeout sets how long Upgrade waits for the successor to report
// ready before it kills the successor and gives up. The default is
// DefaultReadyTimeout. It panics unless d is positive.
func WithReadyTimeout(d time.Duration) Option {
	if d <= 0 {
		panic(fmt.Sprintf("upgrade: WithReadyTimeout(%v): must be positive", d))
	}
	return optionFunc(func(o *options) { o.readyTimeout = d })
}

// WithPIDFile makes the process write its process ID to the file path when
// it reports ready (atomically, by renaming a temporary file), as a
// supervisor's PIDFile= expects. By default no file is written. A relative
// path is relative to the working directory, which the process must not
// change.
// It panics if path is empty.
func WithPIDFile(path string) Option {
	if path == "" {
		panic("upgrade: WithPIDFile: empty path")
	}
	return optionFunc(func(o *options) { o.pidFile = path })
}
