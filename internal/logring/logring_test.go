package logring

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestRingKeepsWarningsWithTheirAttrs(t *testing.T) {
	var out bytes.Buffer
	r := New(3)
	log := slog.New(r.Handler(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelError})))
	sub := log.With("component", "wsedge").WithGroup("req")

	log.Info("not kept")
	sub.Warn("slow", "user_id", "alice", slog.Group("g", "n", 2))
	log.Error("failed", "err", "boom")

	got := r.Entries()
	if len(got) != 2 {
		t.Fatalf("kept %d entries, want 2: %+v", len(got), got)
	}
	w := got[0]
	if w.Level != "WARN" || w.Message != "slow" || w.Attrs["component"] != "wsedge" ||
		w.Attrs["req.user_id"] != "alice" || w.Attrs["req.g.n"] != "2" {
		t.Errorf("warning kept as %+v", w)
	}
	if e := got[1]; e.Level != "ERROR" || e.Attrs["err"] != "boom" {
		t.Errorf("error kept as %+v", e)
	}
	// The wrapped handler still decides what it prints: error only.
	if s := out.String(); strings.Contains(s, "slow") || !strings.Contains(s, "failed") {
		t.Errorf("the wrapped handler printed %q, want only the error", s)
	}
}

func TestRingOverwritesTheOldest(t *testing.T) {
	r := New(2)
	log := slog.New(r.Handler(slog.DiscardHandler))
	for _, m := range []string{"a", "b", "c", "d", "e"} {
		log.Warn(m)
	}
	got := r.Entries()
	if len(got) != 2 || got[0].Message != "d" || got[1].Message != "e" {
		t.Errorf("entries %+v, want d then e", got)
	}
	if r.Total() != 5 {
		t.Errorf("total %d, want 5", r.Total())
	}
}

func TestRingTruncatesLongValuesOnARuneBoundary(t *testing.T) {
	r := New(1)
	long := strings.Repeat("é", MaxValue) // two bytes each
	slog.New(r.Handler(slog.DiscardHandler)).Warn("long", "v", long)
	v := r.Entries()[0].Attrs["v"]
	if len(v) > MaxValue+len("…") || !strings.HasSuffix(v, "…") || !strings.HasPrefix(v, "éé") {
		t.Errorf("value of %d bytes kept as %d bytes: %q…", len(long), len(v), v[:10])
	}
	if !strings.HasSuffix(strings.TrimSuffix(v, "…"), "é") {
		t.Errorf("truncated inside a rune: %q", v[len(v)-8:])
	}
}
