package logsample

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestSamplerBoundsEachReason: a flood of one reason writes Burst lines per
// interval, the first line of the next interval counts what was left out,
// and another reason is not held back by it.
func TestSamplerBoundsEachReason(t *testing.T) {
	var buf bytes.Buffer
	s := New(slog.New(slog.NewTextHandler(&buf, nil)), 3, time.Minute)
	now := time.Unix(1_700_000_000, 0)
	s.now = func() time.Time { return now }

	for i := range 1000 {
		s.Info("bad_token", "socket refused", "n", i)
	}
	s.Info("violation", "closing socket")
	now = now.Add(time.Minute)
	s.Info("bad_token", "socket refused", "n", 1000)

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 5 {
		t.Fatalf("%d lines, want 5:\n%s", len(lines), buf.String())
	}
	for i, want := range []string{"n=0 reason=bad_token", "n=1 reason=bad_token", "n=2 reason=bad_token", "reason=violation", "n=1000 reason=bad_token suppressed=997"} {
		if !strings.Contains(lines[i], want) {
			t.Errorf("line %d %q, want %q", i, lines[i], want)
		}
	}
}

// TestSamplerBoundsItsReasons: reasons past maxReasons share one budget.
func TestSamplerBoundsItsReasons(t *testing.T) {
	var buf bytes.Buffer
	s := New(slog.New(slog.NewTextHandler(&buf, nil)), 1, time.Minute)
	for i := range maxReasons + 100 {
		s.Info(fmt.Sprint("r", i), "x")
	}
	if n := strings.Count(buf.String(), "\n"); n != maxReasons+1 {
		t.Errorf("%d lines, want %d", n, maxReasons+1)
	}
	if len(s.reasons) != maxReasons+1 {
		t.Errorf("%d reasons tracked", len(s.reasons))
	}
}
