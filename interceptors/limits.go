package interceptors

import "time"

// LongestCall returns how long a call that is not long-lived may run at the
// most, from the moment its handler starts, under the deadlines the Tracker
// sets and caps, and true; or 0 and false if some such call may run with no
// bound. It is the largest of WithMaxTimeout, WithStreamTimeout and the
// non-zero WithMethodTimeout values, when WithMaxTimeout bounds every unary
// call, WithStreamTimeout every finite stream, and no method that is not
// long-lived is exempted by WithMethodTimeout(m, 0). Long-lived streams
// (WithLongLived) are left out: they never end by themselves, and no bound
// is expected of them.
//
// It tells a connection's renewal how long to let the calls in flight on it
// finish (see keepalive.WithTracker). A Tracker cannot know whether the
// server has streaming methods: one without gets a bound only with
// WithStreamTimeout too.
func (t *Tracker) LongestCall() (time.Duration, bool) {
	o := t.o
	if o.maxTimeout == 0 || o.streamTimeout == 0 {
		return 0, false
	}
	longest := max(o.maxTimeout, o.streamTimeout)
	for m, d := range o.methodTimeout {
		if d == 0 {
			if _, ok := o.longLived[m]; !ok {
				return 0, false
			}
			continue
		}
		longest = max(longest, d)
	}
	return longest, true
}
