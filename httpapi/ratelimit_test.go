package httpapi

import (
	"fmt"
	"testing"
	"time"
)

// TestUserLimitsForgetIdle: buckets that filled up again are dropped when
// the map grows; a bucket still short of tokens is kept, limit and all.
func TestUserLimitsForgetIdle(t *testing.T) {
	l := newUserLimits(1, 1) // one request per second
	t0 := time.Unix(1000, 0)
	if !l.allow("busy", t0) || l.allow("busy", t0) {
		t.Fatal("a burst of 1 should allow one request, then refuse")
	}
	for i := range minPruneAt - 1 {
		l.allow(fmt.Sprint("idle", i), t0.Add(-time.Hour)) // long since refilled at t0
	}
	if len(l.users) != minPruneAt {
		t.Fatalf("%d buckets, want %d", len(l.users), minPruneAt)
	}
	if !l.allow("new", t0) { // prunes before adding
		t.Fatal("a new user was refused")
	}
	if len(l.users) != 2 {
		t.Fatalf("%d buckets after pruning, want 2 (busy and new)", len(l.users))
	}
	if l.allow("busy", t0) {
		t.Fatal("pruning forgot a bucket that was not full")
	}
}
