package eventstore_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"inbox/eventstore"
	"inbox/internal/testnats"
	"inbox/internal/testutil"
)

// TestExpectLastSerializesALifecycle: of concurrent appends to one message's
// lifecycle that all expect its last event, exactly one is stored; the others
// get ErrStale, and an append expecting the new last event succeeds. Events
// of another message do not interfere.
func TestExpectLastSerializesALifecycle(t *testing.T) {
	st := testnats.Store(t, testnats.Server(t))
	ctx := context.Background()
	m, err := st.Append(ctx, msg(1, "hi"))
	if err != nil {
		t.Fatal(err)
	}
	other, err := st.Append(ctx, msg(1, "other"))
	if err != nil {
		t.Fatal(err)
	}
	filter := eventstore.LifecycleFilter(1, int64(m))
	var wg sync.WaitGroup
	seqs := make(chan uint64, 8)
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Go(func() {
			var e eventstore.Event = &eventstore.Delete{ConversationID: 1, MessageID: int64(m), UserID: "alice"}
			if i%2 == 0 {
				e = &eventstore.Edit{ConversationID: 1, MessageID: int64(m), UserID: "alice", Text: "edited"}
			}
			seq, err := st.Append(ctx, e, eventstore.ExpectLast(0, filter))
			if err != nil {
				errs <- err
				return
			}
			seqs <- seq
		})
	}
	wg.Wait()
	close(seqs)
	close(errs)
	if len(seqs) != 1 {
		t.Fatalf("%d of 8 concurrent appends expecting an empty lifecycle were stored, want 1", len(seqs))
	}
	for err := range errs {
		if !errors.Is(err, eventstore.ErrStale) {
			t.Fatalf("a losing append failed with %v, want ErrStale", err)
		}
	}
	won := <-seqs
	if last, err := st.LastSeqOf(ctx, filter); err != nil || last != won {
		t.Fatalf("LastSeqOf(%s) = %d, %v; want %d", filter, last, err, won)
	}
	if _, err := st.Append(ctx, &eventstore.React{ConversationID: 1, MessageID: int64(m), UserID: "bob", Emoji: "👍", On: true},
		eventstore.ExpectLast(won, filter)); err != nil {
		t.Fatalf("an append expecting the last event: %v", err)
	}
	if _, err := st.Append(ctx, &eventstore.Edit{ConversationID: 1, MessageID: int64(other), UserID: "alice", Text: "x"},
		eventstore.ExpectLast(0, eventstore.LifecycleFilter(1, int64(other)))); err != nil {
		t.Fatalf("another message's lifecycle: %v", err)
	}
}

// TestSecureDeleteLeavesNoBytes: a securely deleted event is gone from the
// stream and its text from every file of the store, while the events
// around it stay readable.
func TestSecureDeleteLeavesNoBytes(t *testing.T) {
	s := testnats.Server(t)
	st := testnats.Store(t, s)
	ctx := context.Background()
	const secret = "hunter2-correct-horse-battery"
	before, err := st.Append(ctx, msg(1, "before"))
	if err != nil {
		t.Fatal(err)
	}
	seq, err := st.Append(ctx, msg(1, secret))
	if err != nil {
		t.Fatal(err)
	}
	after, err := st.Append(ctx, msg(1, "after"))
	if err != nil {
		t.Fatal(err)
	}
	dir := s.JetStreamConfig().StoreDir
	if len(testutil.FilesHolding(t, dir, secret)) == 0 {
		t.Fatalf("the text is not in %s before the delete: the check below would prove nothing", dir)
	}
	if ok, err := st.SecureDelete(ctx, seq); err != nil || !ok {
		t.Fatalf("SecureDelete(%d) = %v, %v", seq, ok, err)
	}
	if ok, err := st.SecureDelete(ctx, seq); err != nil || ok {
		t.Fatalf("a second SecureDelete(%d) = %v, %v; want false, nil", seq, ok, err)
	}
	if _, err := st.Get(ctx, seq); !errors.Is(err, eventstore.ErrNotFound) {
		t.Fatalf("Get(%d) after the delete: %v, want ErrNotFound", seq, err)
	}
	for _, s := range []uint64{before, after} {
		if got, err := st.Get(ctx, s); err != nil || got.Event == nil {
			t.Fatalf("Get(%d): %+v, %v", s, got, err)
		}
	}
	if len(testutil.FilesHolding(t, dir, secret)) > 0 {
		t.Fatalf("the deleted text is still in a file under %s", dir)
	}
}

// TestPurgeBelowAndFirstSince: Purge removes the events on a filter below a
// sequence and nothing else; FirstSince finds the first event since a time.
func TestPurgeBelowAndFirstSince(t *testing.T) {
	st := testnats.Store(t, testnats.Server(t))
	ctx := context.Background()
	var seqs []uint64
	for _, text := range []string{"a", "b", "c"} {
		seq, err := st.Append(ctx, msg(1, text))
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, seq)
	}
	read, err := st.Append(ctx, &eventstore.Read{ConversationID: 1, UserID: "bob", UpTo: int64(seqs[2])})
	if err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	time.Sleep(10 * time.Millisecond) // stream timestamps are the server's clock, to the nanosecond
	late, err := st.Append(ctx, msg(1, "d"))
	if err != nil {
		t.Fatal(err)
	}
	first, ok, err := st.FirstSince(ctx, 0, eventstore.AllMessages, cut)
	if err != nil || !ok || first != late {
		t.Fatalf("FirstSince = %d, %v, %v; want %d", first, ok, err, late)
	}
	if _, ok, err := st.FirstSince(ctx, 0, eventstore.AllMessages, time.Now().Add(time.Hour)); err != nil || ok {
		t.Fatalf("FirstSince(an hour from now) = %v, %v; want none", ok, err)
	}
	if err := st.Purge(ctx, eventstore.AllMessages, seqs[2]); err != nil {
		t.Fatal(err)
	}
	for _, s := range seqs[:2] {
		if _, err := st.Get(ctx, s); !errors.Is(err, eventstore.ErrNotFound) {
			t.Errorf("message %d below the purge: %v, want ErrNotFound", s, err)
		}
	}
	for _, s := range []uint64{seqs[2], read, late} {
		if _, err := st.Get(ctx, s); err != nil {
			t.Errorf("event %d: %v", s, err)
		}
	}
}
