package erasure_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"inbox/chat"
	"inbox/erasure"
	"inbox/eventstore"
	"inbox/internal/testnats"
	"inbox/internal/testutil"
	"inbox/projections"
)

// env is a real stream with a real projector over a SQLite read model.
type env struct {
	store *eventstore.Store
	proj  *projections.Projector
	dir   string // the NATS store directory
}

func newEnv(t *testing.T) *env {
	t.Helper()
	s := testnats.Server(t)
	st := testnats.Store(t, s)
	db, err := projections.Open(filepath.Join(t.TempDir(), "inbox.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	p := projections.NewProjector(projections.ProjectorConfig{Name: "erasure"}, projections.ProjectorDeps{DB: db, Store: st})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("projector: %v", err)
		}
	})
	return &env{store: st, proj: p, dir: s.JetStreamConfig().StoreDir}
}

func (e *env) append(t *testing.T, ev eventstore.Event) uint64 {
	t.Helper()
	seq, err := e.store.Append(context.Background(), ev)
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

func (e *env) applied(t *testing.T) {
	t.Helper()
	last, err := e.store.Last(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.proj.WaitForAll(ctx, last); err != nil {
		t.Fatal(err)
	}
}

func (e *env) holds(t *testing.T, s string) bool {
	t.Helper()
	return len(testutil.FilesHolding(t, e.dir, s)) > 0
}

// TestInterruptedErasureFinished: an erasure that stopped after its
// tombstone (a crash before the secure delete) is finished by running it
// again: the text leaves the stream, and nothing is tombstoned twice.
func TestInterruptedErasureFinished(t *testing.T) {
	e := newEnv(t)
	const secret = "the safe's code is 4711-narwhal"
	e.append(t, &eventstore.Created{ConversationID: 1, Members: []eventstore.Member{{UserID: "alice", Role: "member"}, {UserID: "bob", Role: "member"}}})
	m := e.append(t, &eventstore.Message{ConversationID: 1, SenderID: "alice", SenderName: "Alice", Text: secret, MsgType: eventstore.TypeText})
	edit := e.append(t, &eventstore.Edit{ConversationID: 1, MessageID: int64(m), UserID: "alice", Text: secret + " (edited)"})
	e.applied(t)
	st, _, _, err := e.proj.MessageState(context.Background(), int64(m), "")
	if err != nil {
		t.Fatal(err)
	}
	// The tombstone, as the erasure appends it, and no secure delete.
	e.append(t, &eventstore.Erased{ConversationID: 1, MessageID: int64(m), SenderID: "alice", MsgType: st.MsgType, SentAt: st.SentAt, Seqs: []uint64{m, edit}})
	e.applied(t)
	if !e.holds(t, secret) {
		t.Fatal("the stream's files do not hold the text: the check below would prove nothing")
	}

	er := erasure.New(e.store, e.proj, nil)
	rep, err := er.Message(context.Background(), 1, int64(m))
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Messages) != 0 || len(rep.Tombstones) != 0 || rep.Deleted != 2 {
		t.Fatalf("report %+v: want no new tombstone and the 2 events deleted", rep)
	}
	if e.holds(t, secret) {
		t.Fatal("the text is still in the stream's files")
	}
	rep, err = er.Message(context.Background(), 1, int64(m))
	if err != nil || rep.Deleted != 0 || rep.AlreadyGone != 1 {
		t.Fatalf("a third run: %+v, %v; want nothing to delete (the message already gone)", rep, err)
	}
}

// TestEraseRefusals: a message that does not exist, or is in another
// conversation, is not_found; a malformed user id is bad_request.
func TestEraseRefusals(t *testing.T) {
	e := newEnv(t)
	e.append(t, &eventstore.Created{ConversationID: 1, Members: []eventstore.Member{{UserID: "alice", Role: "member"}}})
	m := e.append(t, &eventstore.Message{ConversationID: 1, SenderID: "alice", Text: "hi", MsgType: eventstore.TypeText})
	e.applied(t)
	er := erasure.New(e.store, e.proj, nil)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		err  error
		code string
	}{
		{"another conversation", func() error { _, err := er.Message(ctx, 2, int64(m)); return err }(), chat.CodeNotFound},
		{"no such message", func() error { _, err := er.Message(ctx, 1, int64(m)+100); return err }(), chat.CodeNotFound},
		{"id 0", func() error { _, err := er.Message(ctx, 1, 0); return err }(), chat.CodeBadRequest},
		{"a malformed user", func() error { _, err := er.User(ctx, "a b"); return err }(), chat.CodeBadRequest},
	} {
		var ce *chat.Error
		if !errors.As(tc.err, &ce) || ce.Code != tc.code {
			t.Errorf("%s: %v, want %s", tc.name, tc.err, tc.code)
		}
	}
	rep, err := er.User(ctx, "nobody")
	if err != nil || len(rep.Messages) != 0 || len(rep.ProfileEvents) != 0 {
		t.Errorf("erasing a user who wrote nothing: %+v, %v", rep, err)
	}
}
