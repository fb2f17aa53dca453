package demoflags

import (
	"fmt"
	"regexp"
	"strings"
	"time"
)

// MaxDuration bounds every duration flag. A drain phase of more than an
// hour is a slip of the finger (300000h for 300ms), not a plan, and no
// supervisor waits that long before its SIGKILL.
const MaxDuration = time.Hour

// bareNumber matches a number written without a unit, such as "10" or
// "1.5", which time.ParseDuration refuses (except "0").
var bareNumber = regexp.MustCompile(`^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)$`)

// durationValue is the flag.Value of a duration flag. Unlike the one of
// flag.DurationVar, its errors say what to write instead.
type durationValue struct{ p *time.Duration }

func (v *durationValue) String() string {
	if v == nil || v.p == nil {
		return "0s"
	}
	return v.p.String()
}

func (v *durationValue) Set(s string) error {
	d, err := time.ParseDuration(s)
	switch {
	case err == nil:
		*v.p = d
		return nil
	case bareNumber.MatchString(s):
		return fmt.Errorf("missing unit, want e.g. %ss", s)
	default:
		return fmt.Errorf("not a duration, want a number and a unit, e.g. 500ms, 10s or 1m30s, at most %s", short(MaxDuration))
	}
}

// short renders d without the trailing zero units of time.Duration.String:
// "1h" for 1h0m0s, "1h30m" for 1h30m0s.
func short(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
