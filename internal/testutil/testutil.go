// Package testutil holds the small helpers the test harnesses of several
// packages share.
package testutil

import (
	"encoding/json"
	"log/slog"
	"os"
	"testing"
)

// Logger discards everything unless INBOX_TEST_LOG is set; then it writes
// from debug up to stderr.
func Logger() *slog.Logger {
	if os.Getenv("INBOX_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// Int is key of a frame decoded with UseNumber, as an integer; anything else
// fails t.
func Int(t testing.TB, f map[string]any, key string) int64 {
	t.Helper()
	n, ok := f[key].(json.Number)
	if !ok {
		t.Fatalf("%s is %T (%v), want a JSON number in %v", key, f[key], f[key], f)
	}
	i, err := n.Int64()
	if err != nil {
		t.Fatalf("%s = %s is not an integer", key, n)
	}
	return i
}
