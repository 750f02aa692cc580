package feed_test

import (
	"testing"

	"inbox/eventstore"
)

// TestUnreadGuesses: following the whole stream, the feed tells a message's
// counts with it, from the projector's last count and the messages since,
// and the projector's count goes out only where it differs. A message does
// not count for its sender; after a receipt the feed tells nothing until
// the projector's count of it; a socket opened since a count was told gets
// the projector's; the projector's count wins over a guess.
func TestUnreadGuesses(t *testing.T) {
	e := newEnv(t, nil)
	e.run(t)
	want := []string{"event 1 [alice bob]"}
	e.append(t, created(1, "alice", "bob"))
	e.sink.wait(t, want...)

	e.feed.PushUnread(1, 1, "bob", 0) // the join's count starts the guesses
	want = append(want, "unread 1 bob 0")
	e.sink.wait(t, want...)

	m2 := e.append(t, message(1, "alice", "one"))
	want = append(want, "event 2 [alice bob]", "unread 1 bob 1")
	e.sink.wait(t, want...)
	e.feed.PushUnread(m2, 1, "bob", 1) // the projector agrees: not sent again

	e.append(t, message(1, "bob", "mine")) // bob's own message leaves his count
	want = append(want, "event 3 [alice bob]")
	e.sink.wait(t, want...)

	r := e.append(t, &eventstore.Read{ConversationID: 1, UserID: "bob", UpTo: int64(m2)})
	m5 := e.append(t, message(1, "alice", "two"))
	want = append(want, "event 4 [alice bob]", "event 5 [alice bob]") // after the receipt: no guess
	e.sink.wait(t, want...)
	e.feed.PushUnread(r, 1, "bob", 0) // the receipt's count, plus message 5 since
	want = append(want, "unread 1 bob 1")
	e.sink.wait(t, want...)
	e.feed.PushUnread(m5, 1, "bob", 1)

	// A socket bob opens after a count was told gets the projector's, the same.
	m55 := e.append(t, message(1, "alice", "two and a half"))
	want = append(want, "event 6 [alice bob]", "unread 1 bob 2")
	e.sink.wait(t, want...)
	e.sink.open("bob")
	e.feed.PushUnread(m55, 1, "bob", 2)
	want = append(want, "unread 1 bob 2")
	e.sink.wait(t, want...)
	e.feed.PushUnread(m55, 1, "bob", 2) // told every socket now: not again
	m7 := e.append(t, message(1, "alice", "three"))
	want = append(want, "event 7 [alice bob]", "unread 1 bob 3")
	e.sink.wait(t, want...)
	e.feed.PushUnread(m7, 1, "bob", 5) // the projector disagrees: it wins
	want = append(want, "unread 1 bob 5")
	e.sink.wait(t, want...)
	e.append(t, message(1, "alice", "four"))
	want = append(want, "event 8 [alice bob]", "unread 1 bob 6")
	e.sink.wait(t, want...)
	if got := e.sink.guesses(); got != 4 {
		t.Fatalf("%d counts came with their message, want 4", got)
	}
}

// TestUnreadGuessesNeedEveryEvent: a count is followed only if the feed saw
// every event of its conversation after it: one whose conversation moved on
// since, or from before the feed started, is sent as it is, and guesses
// start with the first count that is up to date.
func TestUnreadGuessesNeedEveryEvent(t *testing.T) {
	e := newEnv(t, nil)
	e.append(t, created(1, "alice", "bob"))
	e.dir.Seed(eventstore.Cursor{1}, map[int64][]eventstore.Member{1: created(1, "alice", "bob").Members}, nil, nil)
	e.run(t)
	e.feed.PushUnread(1, 1, "bob", 0) // from before the feed's start
	want := []string{"unread 1 bob 0"}
	e.sink.wait(t, want...)
	m2 := e.append(t, message(1, "alice", "one"))
	m3 := e.append(t, message(1, "alice", "two"))
	want = append(want, "event 2 [alice bob]", "event 3 [alice bob]")
	e.sink.wait(t, want...)
	e.feed.PushUnread(m2, 1, "bob", 1) // message 3 came since
	want = append(want, "unread 1 bob 1")
	e.sink.wait(t, want...)
	e.feed.PushUnread(m3, 1, "bob", 2) // up to date: followed from here
	want = append(want, "unread 1 bob 2")
	e.sink.wait(t, want...)
	e.append(t, message(1, "alice", "three"))
	want = append(want, "event 4 [alice bob]", "unread 1 bob 3")
	e.sink.wait(t, want...)
	if got := e.sink.guesses(); got != 1 {
		t.Fatalf("%d counts came with their message, want 1", got)
	}
}

// TestUnreadGuessesAfterReceipts: a receipt stops the guesses of its
// reader's count only; the other member's count is still told with each
// message, and the reader's is again once the projector counted the receipt
// (even a reader whose count the feed did not follow yet).
func TestUnreadGuessesAfterReceipts(t *testing.T) {
	e := newEnv(t, nil)
	e.sink.connected["alice"] = true
	e.run(t)
	e.append(t, created(1, "alice", "bob"))
	e.feed.PushUnread(1, 1, "alice", 0)
	want := []string{"event 1 [alice bob]", "unread 1 alice 0"}
	e.sink.wait(t, want...)

	m2 := e.append(t, message(1, "alice", "hi"))
	e.feed.PushUnread(m2, 1, "bob", 1) // bob's first count: followed from here
	r := e.append(t, &eventstore.Read{ConversationID: 1, UserID: "bob", UpTo: int64(m2)})
	e.append(t, message(1, "bob", "hello"))
	want = append(want, "event 2 [alice bob]", "unread 1 bob 1", "event 3 [alice bob]", "event 4 [alice bob]", "unread 1 alice 1")
	e.sink.wait(t, want...)
	e.append(t, message(1, "alice", "and?"))
	want = append(want, "event 5 [alice bob]") // bob's count waits for the receipt's
	e.sink.wait(t, want...)
	e.feed.PushUnread(r, 1, "bob", 0)
	want = append(want, "unread 1 bob 1")
	e.sink.wait(t, want...)
	e.append(t, message(1, "alice", "well?"))
	want = append(want, "event 6 [alice bob]", "unread 1 bob 2")
	e.sink.wait(t, want...)

	// carol, whose count was never followed, reads: her count from before
	// the receipt is sent as it is, not followed.
	e.sink.connected["carol"] = true
	e.append(t, created(2, "alice", "carol"))
	m8 := e.append(t, message(2, "alice", "carol?"))
	r9 := e.append(t, &eventstore.Read{ConversationID: 2, UserID: "carol", UpTo: int64(m8)})
	want = append(want, "event 7 [alice carol]", "event 8 [alice carol]", "event 9 [alice carol]")
	e.sink.wait(t, want...)
	e.feed.PushUnread(m8, 2, "carol", 1)
	e.append(t, message(2, "alice", "carol!"))
	want = append(want, "unread 2 carol 1", "event 10 [alice carol]")
	e.sink.wait(t, want...)
	e.feed.PushUnread(r9, 2, "carol", 0)
	want = append(want, "unread 2 carol 1")
	e.sink.wait(t, want...)
	e.append(t, message(2, "alice", "carol!!"))
	want = append(want, "event 11 [alice carol]", "unread 2 carol 2")
	e.sink.wait(t, want...)
}
