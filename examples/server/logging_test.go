package main

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"regexp"
	"testing"
	"time"

	"github.com/drainkit/drainkit/examples/internal/demoflags"
)

func TestNewLogger(t *testing.T) {
	for _, tt := range []struct {
		name   string
		format string
		check  func(t *testing.T, line []byte)
	}{
		{
			name:   "text",
			format: demoflags.LogText,
			check: func(t *testing.T, line []byte) {
				want := regexp.MustCompile(`^time=\d\d:\d\d:\d\d\.\d\d\d level=WARN msg="drain phase" phase=Force report.forced=true\n$`)
				if !want.Match(line) {
					t.Errorf("text record %q, want one matching %q", line, want)
				}
			},
		},
		{
			name:   "json",
			format: demoflags.LogJSON,
			check: func(t *testing.T, line []byte) {
				var rec struct {
					Time   time.Time
					Level  string
					Msg    string
					Phase  string
					Report struct{ Forced bool }
				}
				if err := json.Unmarshal(line, &rec); err != nil {
					t.Fatalf("JSON record %q: %v", line, err)
				}
				if rec.Time.IsZero() || rec.Level != "WARN" || rec.Msg != "drain phase" || rec.Phase != "Force" || !rec.Report.Forced {
					t.Errorf("JSON record %q, want a full time, WARN, drain phase, Force and report.forced", line)
				}
			},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			logger, err := newLogger(tt.format, &out)
			if err != nil {
				t.Fatalf("newLogger(%q) = %v", tt.format, err)
			}
			logger.Warn("drain phase", "phase", "Force", slog.Group("report", "forced", true))
			tt.check(t, out.Bytes())
		})
	}
	if _, err := newLogger("xml", &bytes.Buffer{}); err == nil {
		t.Errorf(`newLogger("xml") = nil error, want one`)
	}
}
