package main

import (
	"fmt"
	"io"
	"log/slog"

	"github.com/drainkit/drainkit/examples/internal/demoflags"
)

// textTime is the layout of the time of a text record: the time of day to
// the millisecond, which is what a person watching a drain compares.
const textTime = "15:04:05.000"

// newLogger returns the logger of -log: with demoflags.LogText, slog's text
// handler with the time of day alone; with demoflags.LogJSON, slog's JSON
// handler, full timestamps included.
func newLogger(format string, w io.Writer) (*slog.Logger, error) {
	switch format {
	case demoflags.LogText:
		return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{ReplaceAttr: shortTime})), nil
	case demoflags.LogJSON:
		return slog.New(slog.NewJSONHandler(w, nil)), nil
	default:
		return nil, fmt.Errorf("-log %q: unknown", format)
	}
}

// shortTime renders the time of a record as its time of day.
func shortTime(groups []string, a slog.Attr) slog.Attr {
	if len(groups) == 0 && a.Key == slog.TimeKey && a.Value.Kind() == slog.KindTime {
		return slog.String(slog.TimeKey, a.Value.Time().Format(textTime))
	}
	return a
}
