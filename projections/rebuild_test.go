package projections

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
)

// TestRebuildProgressCountsEvents: progress reports events read and the
// events stored, not stream sequences, so a stream with gaps (expired typing
// events) shows the count and rate the summary line reports.
func TestRebuildProgressCountsEvents(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.append(t, created(1, "alice", "bob"))
	for i := range 20 {
		seq := e.append(t, msg(1, "alice", fmt.Sprint("m", i)))
		if i%4 == 0 {
			if err := e.store.Streams()[0].DeleteMsg(ctx, seq); err != nil {
				t.Fatal(err)
			}
		}
	}
	const events = 1 + 20 - 5
	var reports [][2]uint64
	stats, err := Rebuild(ctx, e.store, filepath.Join(t.TempDir(), "rebuilt.db"), func(done, total uint64) {
		reports = append(reports, [2]uint64{done, total})
	})
	if err != nil {
		t.Fatal(err)
	}
	if stats.Events != events || stats.Applied.String() != "21" {
		t.Fatalf("stats %+v, want %d events up to sequence 21", stats, events)
	}
	if len(reports) == 0 {
		t.Fatal("no progress reported")
	}
	for _, r := range reports {
		if r[0] > r[1] {
			t.Errorf("progress %d of %d", r[0], r[1])
		}
	}
	if last := reports[len(reports)-1]; last != [2]uint64{events, events} {
		t.Errorf("last progress %d of %d, want %d of %d (events, not sequences)", last[0], last[1], events, events)
	}
	if want := float64(stats.Events) / stats.Duration.Seconds(); stats.Rate() != want {
		t.Errorf("Rate() = %g, want %g", stats.Rate(), want)
	}
}
