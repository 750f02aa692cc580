package chat_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"inbox/chat"
	"inbox/eventstore"
	"inbox/internal/testnats"
	"inbox/projections"
)

// keyed is a service whose read model is a real SQLite projection kept by a
// real projector, as on a node.
type keyed struct {
	t     testing.TB
	svc   *chat.Service
	store *eventstore.Store
	proj  *projections.Projector
	stop  func() // stops the projector; start runs it again
}

// locator counts the service's single-event reads of the stream.
type locator struct {
	*eventstore.Store
	subjectOf atomic.Int64
}

func (l *locator) SubjectOf(ctx context.Context, seq uint64) (string, error) {
	l.subjectOf.Add(1)
	return l.Store.SubjectOf(ctx, seq)
}

func keyedLimits(dupWindow time.Duration) chat.Limits {
	return chat.Limits{DuplicateWindow: dupWindow, IdempotencyWindow: time.Hour}
}

func newKeyed(t testing.TB, dupWindow time.Duration, loc **locator) *keyed {
	t.Helper()
	st := testnats.StoreWith(t, testnats.Server(t), eventstore.Config{DuplicateWindow: dupWindow})
	db, err := projections.Open(filepath.Join(t.TempDir(), "inbox.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	dir := chat.NewDirectory()
	runFeed(t, st, dir)
	l := &locator{Store: st}
	if loc != nil {
		*loc = l
	}
	k := &keyed{t: t, store: st, proj: projections.NewProjector(projections.ProjectorConfig{Name: "chat"}, projections.ProjectorDeps{DB: db, Store: st})}
	k.svc = chat.New(keyedLimits(dupWindow), chat.Deps{Store: st, Locator: l, Directory: dir, ReadModel: k.proj})
	k.start()
	t.Cleanup(func() { k.stop() })
	return k
}

func (k *keyed) start() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- k.proj.Run(ctx) }()
	k.stop = func() {
		if cancel == nil {
			return
		}
		cancel()
		cancel = nil
		if err := <-done; err != nil {
			k.t.Errorf("projector: %v", err)
		}
	}
}

// applied waits until the projection has applied the whole stream.
func (k *keyed) applied() {
	k.t.Helper()
	last, err := k.store.Last(context.Background())
	if err != nil {
		k.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := k.proj.WaitForAll(ctx, last); err != nil {
		k.t.Fatal(err)
	}
}

func (k *keyed) last() uint64 {
	k.t.Helper()
	last, err := k.store.Last(context.Background())
	if err != nil {
		k.t.Fatal(err)
	}
	return last[0]
}

// TestKeyedSendRefusedWhileReadModelLags: a keyed send is looked up in the
// read model, which is complete only up to its horizon; the stream's
// duplicate window covers the rest only while the horizon is within half
// that window of now. Beyond, the send is refused (unavailable) and nothing
// is stored, rather than risk storing a retry twice.
func TestKeyedSendRefusedWhileReadModelLags(t *testing.T) {
	const dup = 4 * time.Second
	k := newKeyed(t, dup, nil)
	ctx := context.Background()
	if _, _, err := k.svc.CreateConversation(ctx, 1, members("a", "b")); err != nil {
		t.Fatal(err)
	}
	a := chat.Sender{UserID: "a"}
	first, err := k.svc.Send(ctx, a, chat.SendRequest{ConversationID: 1, Text: "one", ClientMsgID: "k1"})
	if err != nil {
		t.Fatal(err)
	}
	k.applied()
	applied, err := k.store.Get(ctx, first.ID)
	if err != nil {
		t.Fatal(err)
	}

	// The projector stalls; the stream moves on.
	k.stop()
	if _, err := k.svc.Send(ctx, chat.Sender{UserID: "b"}, chat.SendRequest{ConversationID: 1, Text: "not applied"}); err != nil {
		t.Fatal(err)
	}
	// Within half the duplicate window of the last applied event: the
	// stream's window covers what the read model has not applied yet.
	k.svc.SetClock(func() time.Time { return applied.Time.Add(dup / 4) }, nil)
	if _, err := k.svc.Send(ctx, a, chat.SendRequest{ConversationID: 1, Text: "two", ClientMsgID: "k2"}); err != nil {
		t.Fatalf("keyed send within the window of a lagging read model: %v", err)
	}
	// A full duplicate window later it does not: refused, nothing stored.
	k.svc.SetClock(func() time.Time { return time.Now().Add(dup) }, nil)
	before := k.last()
	_, err = k.svc.Send(ctx, a, chat.SendRequest{ConversationID: 1, Text: "three", ClientMsgID: "k3"})
	if chat.CodeOf(err) != chat.CodeUnavailable {
		t.Fatalf("keyed send with the read model a window behind: %v, want unavailable", err)
	}
	if after := k.last(); after != before {
		t.Fatalf("a refused send stored something: last seq %d, was %d", after, before)
	}
	// A send without a key needs no lookup.
	if _, err := k.svc.Send(ctx, a, chat.SendRequest{ConversationID: 1, Text: "unkeyed"}); err != nil {
		t.Fatalf("unkeyed send: %v", err)
	}
	// The projector catches up: the same request is taken.
	k.svc.SetClock(time.Now, nil)
	k.start()
	if _, err := k.svc.Send(ctx, a, chat.SendRequest{ConversationID: 1, Text: "three", ClientMsgID: "k3"}); err != nil {
		t.Fatalf("keyed send once the read model caught up: %v", err)
	}
}

// TestKeyReusedWithOtherTextIsConflict: the same key in the same
// conversation with another text is a conflict, whether the first request
// is found in the read model or only in the stream (not applied yet), and
// nothing is stored; the same key in another conversation is a new message.
func TestKeyReusedWithOtherTextIsConflict(t *testing.T) {
	k := newKeyed(t, time.Minute, nil)
	ctx := context.Background()
	for _, id := range []int64{1, 2} {
		if _, _, err := k.svc.CreateConversation(ctx, id, members("a", "b")); err != nil {
			t.Fatal(err)
		}
	}
	a := chat.Sender{UserID: "a"}
	for _, applied := range []bool{true, false} {
		t.Run(fmt.Sprint("applied=", applied), func(t *testing.T) {
			key := fmt.Sprint("c-", applied)
			if !applied {
				k.stop()
				defer k.start()
			}
			first, err := k.svc.Send(ctx, a, chat.SendRequest{ConversationID: 1, Text: "hello", ClientMsgID: key})
			if err != nil {
				t.Fatal(err)
			}
			if applied {
				k.applied()
			}
			before := k.last()
			for _, req := range []chat.SendRequest{
				{ConversationID: 1, Text: "hello!", ClientMsgID: key},
				{ConversationID: 1, Text: "hello", Type: eventstore.TypeImage, ClientMsgID: key},
			} {
				_, err := k.svc.Send(ctx, a, req)
				if chat.CodeOf(err) != chat.CodeConflict {
					t.Fatalf("%+v after %q: %v, want conflict", req, "hello", err)
				}
			}
			again, err := k.svc.Send(ctx, a, chat.SendRequest{ConversationID: 1, Text: "hello", Type: eventstore.TypeText, ClientMsgID: key})
			if err != nil || again.ID != first.ID || !again.Replayed || again.ConversationID != 1 {
				t.Fatalf("retry = %+v, %v; want message %d replayed", again, err, first.ID)
			}
			if after := k.last(); after != before {
				t.Fatalf("conflicts or a retry stored something: last seq %d, was %d", after, before)
			}
			other, err := k.svc.Send(ctx, a, chat.SendRequest{ConversationID: 2, Text: "hello!", ClientMsgID: key})
			if err != nil || other.ID == first.ID || other.ConversationID != 2 || other.Replayed {
				t.Fatalf("the same key in conversation 2 = %+v, %v; want a new message there", other, err)
			}
		})
	}
}

// TestReadChecksManyIDsInOneQuery: a receipt naming many messages checks
// those the read model has applied in one query, and only newer ones against
// the stream; every id is still checked (not_found for another
// conversation's message, applied or not).
func TestReadChecksManyIDsInOneQuery(t *testing.T) {
	var loc *locator
	k := newKeyed(t, time.Minute, &loc)
	ctx := context.Background()
	for _, id := range []int64{1, 2} {
		if _, _, err := k.svc.CreateConversation(ctx, id, members("a", "b")); err != nil {
			t.Fatal(err)
		}
	}
	send := func(conv int64, text string) int64 {
		t.Helper()
		sent, err := k.svc.Send(ctx, chat.Sender{UserID: "a"}, chat.SendRequest{ConversationID: conv, Text: text})
		if err != nil {
			t.Fatal(err)
		}
		return int64(sent.ID)
	}
	var ids []int64
	for i := range 98 {
		ids = append(ids, send(1, fmt.Sprint(i)))
	}
	other := send(2, "elsewhere")
	k.applied()
	k.stop()
	newer, newerOther := send(1, "newer"), send(2, "newer elsewhere")

	read := func(ids ...int64) error {
		_, err := k.svc.Read(ctx, "b", 1, 0, ids)
		return err
	}
	loc.subjectOf.Store(0)
	if err := read(append(ids, newer)...); err != nil {
		t.Fatalf("READ of 99 messages of conversation 1: %v", err)
	}
	if n := loc.subjectOf.Load(); n != 1 {
		t.Fatalf("%d stream lookups for 98 applied ids and 1 newer, want 1", n)
	}
	for _, tc := range []struct {
		name string
		ids  []int64
		code string
	}{
		{"another conversation's applied message", append(append([]int64{}, ids...), other), chat.CodeNotFound},
		{"another conversation's newer message", append(append([]int64{}, ids...), newerOther), chat.CodeNotFound},
		{"an applied event that is not a message", []int64{ids[0], 1}, chat.CodeNotFound},
		{"an id past the stream", []int64{ids[0], newerOther + 1000}, chat.CodeNotFound},
		{"a negative id", []int64{ids[0], -1}, chat.CodeBadRequest},
	} {
		if err := read(tc.ids...); chat.CodeOf(err) != tc.code {
			t.Errorf("%s: %v, want %s", tc.name, err, tc.code)
		}
	}
}

// BenchmarkRead100IDs: a receipt naming 100 applied messages, checked
// against the stream one by one (no read model) or in one query.
func BenchmarkRead100IDs(b *testing.B) {
	k := newKeyed(b, time.Minute, nil)
	ctx := context.Background()
	if _, _, err := k.svc.CreateConversation(ctx, 1, members("a", "b")); err != nil {
		b.Fatal(err)
	}
	var ids []int64
	for i := range 100 {
		sent, err := k.svc.Send(ctx, chat.Sender{UserID: "a"}, chat.SendRequest{ConversationID: 1, Text: fmt.Sprint(i)})
		if err != nil {
			b.Fatal(err)
		}
		ids = append(ids, int64(sent.ID))
	}
	k.applied()
	for _, tc := range []struct {
		name string
		rm   chat.ReadModel
	}{{"stream", nil}, {"read-model", k.proj}} {
		b.Run(tc.name, func(b *testing.B) {
			svc := chat.New(keyedLimits(time.Minute), chat.Deps{Store: k.store, Locator: k.store, Directory: k.svc.Directory(), ReadModel: tc.rm})
			for b.Loop() {
				if _, err := svc.Read(ctx, "b", 1, 0, ids); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSend: a send without a key, and one with a new key (a lookup in
// the read model before the append).
func BenchmarkSend(b *testing.B) {
	k := newKeyed(b, time.Minute, nil)
	ctx := context.Background()
	if _, _, err := k.svc.CreateConversation(ctx, 1, members("a", "b")); err != nil {
		b.Fatal(err)
	}
	for _, keyed := range []bool{false, true} {
		b.Run(fmt.Sprint("key=", keyed), func(b *testing.B) {
			i := 0
			for b.Loop() {
				i++
				req := chat.SendRequest{ConversationID: 1, Text: "hello"}
				if keyed {
					req.ClientMsgID = fmt.Sprint("bench-", i)
				}
				if _, err := k.svc.Send(ctx, chat.Sender{UserID: "a"}, req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
