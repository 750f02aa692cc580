package projections

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	"inbox/eventstore"
)

func edit(conv int64, id uint64, user, text string) *eventstore.Edit {
	return &eventstore.Edit{ConversationID: conv, MessageID: int64(id), UserID: user, Text: text}
}

func del(conv int64, id uint64, user string) *eventstore.Delete {
	return &eventstore.Delete{ConversationID: conv, MessageID: int64(id), UserID: user}
}

func react(conv int64, id uint64, user, emoji string, on bool) *eventstore.React {
	return &eventstore.React{ConversationID: conv, MessageID: int64(id), UserID: user, Emoji: emoji, On: on}
}

// history returns conversation conv's messages by id.
func history(t testing.TB, db *DB, conv int64) map[int64]Message {
	t.Helper()
	msgs, err := db.Messages(context.Background(), conv, 0, 200)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int64]Message{}
	for _, m := range msgs {
		out[m.ID] = m
	}
	return out
}

func unread(t testing.TB, db *DB, conv int64, user string) int64 {
	t.Helper()
	n, err := db.Unread(context.Background(), conv, user)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func lastMessage(t testing.TB, db *DB, user string, conv int64) *Message {
	t.Helper()
	convs, err := db.Conversations(context.Background(), user)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range convs {
		if c.ID == conv {
			return c.LastMessage
		}
	}
	t.Fatalf("%s is not in conversation %d", user, conv)
	return nil
}

// TestLifecycleApplies: edits, deletions and reactions as history, the
// conversation list, unread counts and MessageState show them; what the
// rules refuse (another's message, a deleted one) changes nothing but the
// lifecycle's last sequence; a rebuild agrees.
func TestLifecycleApplies(t *testing.T) {
	e := newEnv(t)
	db := openDB(t, "l.db")
	p := NewProjector(ProjectorConfig{Name: "l"}, ProjectorDeps{DB: db, Store: e.store, Logger: testLogger(t)})
	startProjector(t, p)
	e.append(t, created(1, "alice", "bob"))
	m1 := e.append(t, msg(1, "alice", "hello"))
	m2 := e.append(t, msg(1, "bob", "hi"))
	m3 := e.append(t, msg(1, "alice", "third"))
	ed := &eventstore.Edit{Header: eventstore.Header{At: time.Date(2025, 1, 15, 10, 31, 0, 0, time.UTC)},
		ConversationID: 1, MessageID: int64(m1), UserID: "alice", Text: "hello!", ClientMsgID: "e-1"}
	e.append(t, ed)
	e.append(t, edit(1, m2, "alice", "not hers")) // ignored
	e.append(t, react(1, m2, "bob", "👍", true))
	e.append(t, react(1, m2, "alice", "👍", true))
	e.append(t, react(1, m2, "alice", "🎉", true))
	lastReact := e.append(t, react(1, m2, "alice", "🎉", false))
	waitApplied(t, e, p)
	if n := unread(t, db, 1, "bob"); n != 2 {
		t.Fatalf("bob's unread %d before the delete, want 2", n)
	}
	e.append(t, del(1, m3, "alice"))
	e.append(t, edit(1, m3, "alice", "after delete")) // ignored
	e.append(t, react(1, m3, "bob", "👍", true))       // ignored
	waitApplied(t, e, p)

	h := history(t, db, 1)
	if m := h[int64(m1)]; m.Text != "hello!" || m.EditedAt == nil || *m.EditedAt != "2025-01-15T10:31:00Z" || m.Deleted {
		t.Errorf("edited message: %+v", m)
	}
	if m := h[int64(m2)]; m.Text != "hi" || m.EditedAt != nil || len(m.Reactions) != 1 || !slices.Equal(m.Reactions["👍"], []string{"bob", "alice"}) {
		t.Errorf("reacted message: %+v", m)
	}
	if m := h[int64(m3)]; m.Text != "" || !m.Deleted || m.EditedAt != nil || len(m.Reactions) != 0 {
		t.Errorf("deleted message: %+v", m)
	}
	if n := unread(t, db, 1, "bob"); n != 1 {
		t.Errorf("bob's unread %d after alice deleted one of her two unread messages, want 1", n)
	}
	if lm := lastMessage(t, db, "bob", 1); lm == nil || lm.ID != int64(m2) {
		t.Errorf("last message %+v after the last one was deleted, want %d", lm, m2)
	}
	st, found, _, err := db.MessageState(context.Background(), int64(m2), "alice")
	if err != nil || !found || st.SenderID != "bob" || st.LifeSeq != lastReact || !slices.Equal(st.Reactions, []string{"👍"}) {
		t.Errorf("MessageState(m2, alice) = %+v, %v, %v; want life_seq %d and [👍]", st, found, err, lastReact)
	}
	if rec, found, err := db.KeyRecord(context.Background(), eventstore.Key{UserID: "alice", ConversationID: 1, ClientKey: "e-1"}); err != nil ||
		!found || rec.Op != eventstore.OpEdit {
		t.Errorf("the edit's key: %+v, %v, %v", rec, found, err)
	}
	requireSame(t, db, rebuild(t, e))
}

// TestReactionLimit: a user's 21st distinct emoji on a message is ignored.
func TestReactionLimit(t *testing.T) {
	e := newEnv(t)
	db := openDB(t, "r.db")
	p := NewProjector(ProjectorConfig{Name: "r"}, ProjectorDeps{DB: db, Store: e.store, Logger: testLogger(t)})
	startProjector(t, p)
	e.append(t, created(1, "alice", "bob"))
	m := e.append(t, msg(1, "alice", "react to me"))
	emoji := []rune("😀😁😂🤣😃😄😅😆😉😊😋😎😍😘🥰😗😙🥲😚🙂🤗")
	for _, r := range emoji {
		e.append(t, react(1, m, "bob", string(r), true))
	}
	waitApplied(t, e, p)
	got := history(t, db, 1)[int64(m)].Reactions
	if len(got) != eventstore.MaxReactionsPerUser {
		t.Fatalf("%d reactions of one user after %d, want %d", len(got), len(emoji), eventstore.MaxReactionsPerUser)
	}
	if _, ok := got[string(emoji[len(emoji)-1])]; ok {
		t.Fatal("the 21st reaction was kept")
	}
}

// lifecycleStream appends a conversation where alice's secret message was
// edited, reacted to and read past by carol, not by bob, and sent with a
// key; it returns the message, its edit and a later message.
func lifecycleStream(t *testing.T, e *env, secret string) (m, ed, later uint64) {
	t.Helper()
	e.append(t, created(1, "alice", "bob", "carol"))
	e.append(t, msg(1, "bob", "before"))
	km := keyedMsg(1, "alice", "k-1", secret, time.Time{})
	km.SenderName = "Alice Secret-Name"
	m = e.append(t, km)
	ed = e.append(t, edit(1, m, "alice", secret+" (edited)"))
	e.append(t, react(1, m, "bob", "👍", true))
	e.append(t, &eventstore.Read{ConversationID: 1, UserID: "carol", UpTo: int64(m)})
	later = e.append(t, msg(1, "bob", "after"))
	return m, ed, later
}

// TestEraseAgreesWithRebuild: a tombstone makes the message an erased row
// (no text, name, key or reactions), gives back the unread count it made
// and forgets the key of its erased events; a rebuild agrees, whether the
// stream still holds the erased events (an erasure interrupted before its
// secure delete) or not. The SQLite files no longer hold the text.
func TestEraseAgreesWithRebuild(t *testing.T) {
	const secret = "my password is hunter2-zebra"
	e := newEnv(t)
	db := openDB(t, "e.db")
	p := NewProjector(ProjectorConfig{Name: "e"}, ProjectorDeps{DB: db, Store: e.store, Logger: testLogger(t)})
	startProjector(t, p)
	m, ed, _ := lifecycleStream(t, e, secret)
	waitApplied(t, e, p)
	if n := unread(t, db, 1, "bob"); n != 1 {
		t.Fatalf("bob's unread %d before the erasure, want 1", n)
	}
	if !fileHolds(t, db.Path(), secret) {
		t.Fatal("the read model's files do not hold the text before the erasure: the check below would prove nothing")
	}
	sent := history(t, db, 1)[int64(m)].CreatedAt
	at, _ := time.Parse(time.RFC3339, sent)
	e.append(t, &eventstore.Erased{ConversationID: 1, MessageID: int64(m), SenderID: "alice", MsgType: eventstore.TypeText,
		SentAt: at, Seqs: []uint64{m, ed}})
	waitApplied(t, e, p)

	got := history(t, db, 1)[int64(m)]
	want := Message{ID: int64(m), ConversationID: 1, SenderID: "alice", Type: eventstore.TypeText, CreatedAt: sent,
		MessageID: int64(m), Seq: int64(m), Deleted: true, Reactions: map[string][]string{}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("erased message\n got %+v\nwant %+v", got, want)
	}
	if n := unread(t, db, 1, "bob"); n != 0 {
		t.Errorf("bob's unread %d after the erasure, want 0", n)
	}
	if n := unread(t, db, 1, "carol"); n != 1 {
		t.Errorf("carol's unread %d after the erasure, want 1: she had read past it", n)
	}
	if _, found, _ := db.KeyRecord(context.Background(), eventstore.Key{UserID: "alice", ConversationID: 1, ClientKey: "k-1"}); found {
		t.Error("the erased message's idempotency record is still there")
	}
	if fileHolds(t, db.Path(), secret) || fileHolds(t, db.Path(), "Secret-Name") {
		t.Error("the read model's files still hold the erased text or name")
	}
	requireSame(t, db, rebuild(t, e)) // the events are still in the stream
	for _, s := range []uint64{m, ed} {
		if ok, err := e.store.SecureDelete(context.Background(), s); err != nil || !ok {
			t.Fatalf("secure delete %d: %v, %v", s, ok, err)
		}
	}
	requireSame(t, db, rebuild(t, e)) // they are gone
}

// TestExpireAgreesWithRebuild: retention's marker removes every message
// below its sequence with its reactions, keys and unread counts, and moves
// the conversation's last message; a rebuild agrees before and after the
// stream is purged.
func TestExpireAgreesWithRebuild(t *testing.T) {
	e := newEnv(t)
	db := openDB(t, "x.db")
	p := NewProjector(ProjectorConfig{Name: "x"}, ProjectorDeps{DB: db, Store: e.store, Logger: testLogger(t)})
	startProjector(t, p)
	_, _, later := lifecycleStream(t, e, "old")
	e.append(t, created(2, "alice", "bob"))
	old2 := e.append(t, keyedMsg(2, "alice", "k-2", "only old", time.Time{}))
	e.append(t, react(1, later, "alice", "🎉", true))
	newer := e.append(t, msg(1, "alice", "new"))
	e.append(t, &eventstore.Expired{Before: later})
	waitApplied(t, e, p)
	h := history(t, db, 1)
	if len(h) != 2 || h[int64(newer)].Text != "new" || h[int64(later)].Text != "after" {
		t.Errorf("history after the expiry: %+v", h)
	}
	if len(history(t, db, 2)) != 1 {
		t.Errorf("conversation 2 lost its message at %d, which is not below %d", old2, later)
	}
	if n := unread(t, db, 1, "bob"); n != 1 {
		t.Errorf("bob's unread %d after the expiry, want 1 (the newer message)", n)
	}
	requireSame(t, db, rebuild(t, e))
	for _, f := range []string{eventstore.AllMessages, eventstore.AllLifecycles} {
		if err := e.store.Purge(context.Background(), f, later); err != nil {
			t.Fatal(err)
		}
	}
	requireSame(t, db, rebuild(t, e))

	// Everything expires: the conversation keeps its place, with no last message.
	e.append(t, &eventstore.Expired{Before: e.lastSeq(t) + 1})
	waitApplied(t, e, p)
	if lm := lastMessage(t, db, "alice", 1); lm != nil {
		t.Errorf("last message %+v after every message expired", lm)
	}
	if n := unread(t, db, 1, "bob"); n != 0 {
		t.Errorf("bob's unread %d after every message expired", n)
	}
	requireSame(t, db, rebuild(t, e))
}

// TestProfileErased: the profile whose events were erased is gone, in the
// live read model and in a rebuild without them.
func TestProfileErased(t *testing.T) {
	e := newEnv(t)
	db := openDB(t, "p.db")
	p := NewProjector(ProjectorConfig{Name: "p"}, ProjectorDeps{DB: db, Store: e.store, Logger: testLogger(t)})
	startProjector(t, p)
	p1 := e.append(t, &eventstore.Profile{UserID: "alice", Name: "Alice Old"})
	p2 := e.append(t, &eventstore.Profile{UserID: "alice", Name: "Alice Private-Surname"})
	e.append(t, &eventstore.Profile{UserID: "bob", Name: "Bob"})
	e.append(t, &eventstore.ProfileErased{UserID: "alice", Seqs: []uint64{p1, p2}})
	waitApplied(t, e, p)
	if _, err := db.Profile(context.Background(), "alice"); err == nil {
		t.Error("alice's erased profile is still there")
	}
	if _, err := db.Profile(context.Background(), "bob"); err != nil {
		t.Errorf("bob's profile: %v", err)
	}
	for _, s := range []uint64{p1, p2} {
		if _, err := e.store.SecureDelete(context.Background(), s); err != nil {
			t.Fatal(err)
		}
	}
	requireSame(t, db, rebuild(t, e))
	if fileHolds(t, db.Path(), "Private-Surname") {
		t.Error("the read model's files still hold the erased name")
	}
}

// fileHolds reports whether the database at path, its WAL or its
// shared-memory file holds s.
func fileHolds(t testing.TB, path, s string) bool {
	t.Helper()
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		data, err := os.ReadFile(p)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(data, []byte(s)) {
			return true
		}
	}
	return false
}
