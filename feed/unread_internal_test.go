package feed

import (
	"testing"

	"inbox/chat"
	"inbox/eventstore"
)

// fakeSockets says which users have a socket; none opened one since.
type fakeSockets func(user string) bool

func (f fakeSockets) Connected(user string) bool { return f(user) }
func (fakeSockets) Opened(string) uint64         { return 1 }

// TestGuessesSweepUsersGone: once the guesses double, those of users with
// no socket here are dropped, and the next sweep waits for them to double
// again.
func TestGuessesSweepUsersGone(t *testing.T) {
	gs := newGuesses(eventstore.NewCursor(1), fakeSockets(func(user string) bool { return user == "on" }))
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

// TestGuessesForgetOldConversations: the conversations' last events are
// bounded; when they are dropped, a count from before is no longer followed
// (it is sent as it is), one from after is.
func TestGuessesForgetOldConversations(t *testing.T) {
	gs := newGuesses(eventstore.NewCursor(1), fakeSockets(func(string) bool { return true }))
	msg := func(seq uint64, conv int64) {
		gs.dispatch(eventstore.Stored{Seq: seq, Event: &eventstore.Message{ConversationID: conv, SenderID: "a"}}, chat.Change{})
	}
	for i := range maxLast {
		msg(uint64(i+1), int64(i+1))
	}
	if len(gs.last) != maxLast {
		t.Fatalf("%d conversations held, want %d", len(gs.last), maxLast)
	}
	msg(maxLast+1, 1) // drops them, then holds this one
	if len(gs.last) != 1 {
		t.Fatalf("%d conversations held after the bound, want 1", len(gs.last))
	}
	// Conversation 2's last event (seq 2) was forgotten: a count of it is
	// sent as it is, and not followed.
	if v, ok := gs.counted(heldUnread{seq: 2, conv: 2, user: "b", unread: 1}); !ok || v != 1 || gs.convs[2]["b"] != nil {
		t.Fatalf("count from before the bound: %d %v, followed %v", v, ok, gs.convs[2]["b"] != nil)
	}
	msg(maxLast+2, 2)
	if v, ok := gs.counted(heldUnread{seq: maxLast + 2, conv: 2, user: "b", unread: 7}); !ok || v != 7 || gs.convs[2]["b"] == nil {
		t.Fatalf("count from after the bound: %d %v, followed %v", v, ok, gs.convs[2]["b"] != nil)
	}
}
