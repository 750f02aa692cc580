package feed

import (
	"testing"

	"inbox/eventstore"
)

// TestGuessesSweepUsersGone: once the guesses double, those of users with
// no socket here are dropped, and the next sweep waits for them to double
// again.
func TestGuessesSweepUsersGone(t *testing.T) {
	gs := newGuesses(eventstore.NewCursor(1), func(user string) bool { return user == "on" })
	for i := range minSweep {
		gs.add(int64(i+1), map[bool]string{false: "on", true: "gone"}[i%2 == 1])
	}
	if gs.size != minSweep {
		t.Fatalf("%d guesses before the sweep, want %d", gs.size, minSweep)
	}
	gs.add(minSweep+1, "on")
	if want := minSweep/2 + 1; gs.size != want {
		t.Fatalf("%d guesses after the sweep, want %d", gs.size, want)
	}
	for conv, us := range gs.convs {
		if us["gone"] != nil {
			t.Fatalf("conversation %d still follows a user with no socket", conv)
		}
	}
	if gs.sweepAt != minSweep {
		t.Fatalf("next sweep at %d guesses, want %d", gs.sweepAt, minSweep)
	}
}
