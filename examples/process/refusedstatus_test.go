//go:build linux

package process_test

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// A reload refused while the old server drains puts the refusal in the
// status line; once the old server has exited, the status line says again
// that the successor serves, rather than that a server still drains.
func TestUnitRefusedReloadStatusClears(t *testing.T) {
	const sleep = 2 * time.Second
	u := newFakeUnit(t, unitConfig{access: "main", args: []string{"-db", dbPath(t), "-addr", "127.0.0.1:1",
		"-readiness-delay=0s", "-grace=10s", "-cancel-grace=1s", "-force-wait=1s", "-upgrade-timeout=10s"}})
	u.start()
	old := u.main()

	// A Sleep that keeps the old server draining after the reload.
	_, slept := sendSleeps(t, u.addr, 1, sleep)

	u.reload()
	u.waitFor("the successor as main process", func() bool { return u.mainPID != old && u.state == "active" })
	successor := u.main()
	if _, err := u.log.waitFor(defaultTestTimeout, "the successor's serving record", func(r record) bool {
		pid, _ := r["pid"].(float64)
		return r.str("msg") == "serving" && int(pid) == successor
	}); err != nil {
		t.Fatal(err)
	}
	u.reload()
	u.waitFor("the status line of the refused reload", func() bool {
		return strings.HasPrefix(u.status, "reload refused: the server this one replaced still drains")
	})

	select {
	case err := <-slept:
		if err != nil {
			t.Errorf("Sleep(%v) on the old server = %v, want nil", sleep, err)
		}
	case <-time.After(sleep + defaultTestTimeout):
		t.Fatalf("Sleep still running %v after the reload", sleep+defaultTestTimeout)
	}
	u.waitFor("the old server's exit", func() bool { _, ok := u.exits[old]; return ok })
	want := fmt.Sprintf("serving (pid %d, upgraded from pid %d)", successor, old)
	u.waitFor("the status line to say that the successor serves: "+want, func() bool { return u.status == want })

	u.stop(defaultTestTimeout)
	checkUnitClean(t, u, 1)
}
