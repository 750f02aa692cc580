package eventstore_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"inbox/eventstore"
	"inbox/internal/testnats"
	"inbox/internal/testutil"
)

func msg(conv int64, text string) *eventstore.Message {
	return &eventstore.Message{ConversationID: conv, SenderID: "alice", SenderName: "Alice", Text: text, MsgType: eventstore.TypeText}
}

func TestAppendIdempotent(t *testing.T) {
	st := testnats.Store(t, testnats.Server(t))
	ctx := context.Background()
	first, err := st.Append(ctx, msg(1, "hi"), eventstore.WithMsgID("m:alice:c-1"))
	if err != nil {
		t.Fatal(err)
	}
	again, err := st.Append(ctx, msg(1, "hi"), eventstore.WithMsgID("m:alice:c-1"))
	if err != nil {
		t.Fatal(err)
	}
	if again != first {
		t.Fatalf("retry with the same Nats-Msg-Id stored at seq %d, first at %d", again, first)
	}
	other, err := st.Append(ctx, msg(1, "hi"), eventstore.WithMsgID("m:alice:c-2"))
	if err != nil {
		t.Fatal(err)
	}
	if other == first {
		t.Fatal("a different message id was deduplicated")
	}
	last, err := st.Last(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if last.String() != "2" {
		t.Fatalf("stream holds %s events, want 2", last)
	}
}

func TestCreateRefusesExistingID(t *testing.T) {
	st := testnats.Store(t, testnats.Server(t))
	ctx := context.Background()
	create := func() error {
		_, err := st.Append(ctx, &eventstore.Created{ConversationID: 7, Members: []eventstore.Member{{UserID: "a", Role: eventstore.RoleClient}}}, eventstore.ExpectNew())
		return err
	}
	// Concurrent creators: exactly one wins, whatever the interleaving.
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() { errs <- create() })
	}
	wg.Wait()
	close(errs)
	var won, refused int
	for err := range errs {
		switch {
		case err == nil:
			won++
		case errors.Is(err, eventstore.ErrExists):
			refused++
		default:
			t.Fatalf("unexpected error: %v", err)
		}
	}
	if won != 1 || refused != 7 {
		t.Fatalf("won=%d refused=%d, want 1 and 7", won, refused)
	}
}

func TestTypingExpires(t *testing.T) {
	s := testnats.Server(t)
	st := testnats.StoreWith(t, s, eventstore.Config{TypingTTL: time.Second})
	ctx := context.Background()
	seq, err := st.Append(ctx, &eventstore.Typing{ConversationID: 1, UserID: "a", IsTyping: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.SubjectOf(ctx, seq); err != nil {
		t.Fatalf("typing event not stored: %v", err)
	}
	testutil.CheckFor(t, 5*time.Second, 100*time.Millisecond, func() error {
		_, err := st.SubjectOf(ctx, seq)
		if errors.Is(err, eventstore.ErrNotFound) {
			return nil
		}
		return fmt.Errorf("typing event still stored (err=%v)", err)
	})
}

func TestReadAndTail(t *testing.T) {
	st := testnats.Store(t, testnats.Server(t))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := range 10 {
		if _, err := st.Append(ctx, msg(int64(i%2+1), fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	var got []uint64
	err := st.Read(ctx, 0, 3, 8, []string{eventstore.ConvSubject(1, "*")}, func(s eventstore.Stored) error {
		if s.Err != nil {
			return s.Err
		}
		got = append(got, s.Seq)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != "[3 5 7]" {
		t.Fatalf("read conversation 1 in [3,8] = %v, want [3 5 7]", got)
	}

	seen := make(chan uint64, 100)
	done := make(chan error, 1)
	go func() {
		done <- st.Tail(ctx, eventstore.Cursor{8}, nil, func(s eventstore.Stored) { seen <- s.Seq })
	}()
	if _, err := st.Append(ctx, msg(1, "live")); err != nil {
		t.Fatal(err)
	}
	for _, want := range []uint64{9, 10, 11} {
		select {
		case got := <-seen:
			if got != want {
				t.Fatalf("tail delivered %d, want %d", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("tail did not deliver %d", want)
		}
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("tail ended with %v, want context.Canceled", err)
	}
}

func TestDecodeRejectsBadEvents(t *testing.T) {
	good, err := eventstore.Encode(msg(5, "hello"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		subject string
		data    string
	}{
		{"junk", "inbox.conv.5.msg", "not json"},
		{"unknown kind", "inbox.conv.5.party", string(good)},
		{"future version", "inbox.conv.5.msg", `{"v":99,"type":"msg","conversation_id":5,"sender_id":"a","message":"x"}`},
		{"no version", "inbox.conv.5.msg", `{"type":"msg","conversation_id":5,"sender_id":"a","message":"x"}`},
		{"kind mismatch", "inbox.conv.5.msg", `{"v":1,"type":"read","conversation_id":5,"sender_id":"a"}`},
		{"id mismatch", "inbox.conv.6.msg", string(good)},
		{"bad user", "inbox.conv.5.msg", `{"v":1,"type":"msg","conversation_id":5,"sender_id":"a b","message":"x"}`},
		{"not inbox", "other.conv.5.msg", string(good)},
		{"wrong type", "inbox.conv.5.msg", `{"v":1,"type":"msg","conversation_id":"5"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := eventstore.Decode(tc.subject, []byte(tc.data)); !errors.Is(err, eventstore.ErrBadEvent) {
				t.Fatalf("Decode = %v, want ErrBadEvent", err)
			}
		})
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	avatar := "https://example.test/a.png"
	events := []eventstore.Event{
		&eventstore.Created{ConversationID: 3, Members: []eventstore.Member{{UserID: "a", Role: "client"}, {UserID: "b", Role: "worker"}}},
		&eventstore.MemberChanged{ConversationID: 3, Op: eventstore.OpAdd, UserID: "c", Role: "member"},
		&eventstore.Message{ConversationID: 3, SenderID: "a", SenderName: "A", SenderAvatar: &avatar, Text: "hé", MsgType: "TEXT", ClientMsgID: "c1"},
		&eventstore.Typing{ConversationID: 3, UserID: "a", IsTyping: true},
		&eventstore.Read{ConversationID: 3, UserID: "b", UpTo: 9, MessageIDs: []int64{8, 9}},
		&eventstore.Profile{UserID: "a", Name: "Alice", Avatar: &avatar},
		&eventstore.Job{JobID: 4, Members: []string{"a"}},
		&eventstore.JobStatus{JobID: 4, Status: "accepted", Detail: []byte(`{"eta":5}`)},
	}
	for _, e := range events {
		data, err := eventstore.Encode(e)
		if err != nil {
			t.Fatal(err)
		}
		back, err := eventstore.Decode(e.Subject(), data)
		if err != nil {
			t.Fatalf("%s: %v", e.Subject(), err)
		}
		again, _ := eventstore.Encode(back)
		if string(again) != string(data) {
			t.Fatalf("%s: round trip changed\n%s\n%s", e.Subject(), data, again)
		}
	}
}

func TestAppendReportsDuplicate(t *testing.T) {
	st := testnats.Store(t, testnats.Server(t))
	ctx := context.Background()
	var dup bool
	first, err := st.Append(ctx, msg(1, "hi"), eventstore.WithMsgID("m:alice:1:c-1"), eventstore.ReportDuplicate(&dup))
	if err != nil || dup {
		t.Fatalf("first append = %d, duplicate %v, %v; want stored", first, dup, err)
	}
	again, err := st.Append(ctx, msg(1, "other text"), eventstore.WithMsgID("m:alice:1:c-1"), eventstore.ReportDuplicate(&dup))
	if err != nil || !dup || again != first {
		t.Fatalf("retry = %d, duplicate %v, %v; want %d, duplicate", again, dup, err, first)
	}
	got, err := st.Get(ctx, again)
	if err != nil {
		t.Fatal(err)
	}
	if m, ok := got.Event.(*eventstore.Message); !ok || m.Text != "hi" || got.Seq != first || got.Time.IsZero() {
		t.Fatalf("Get(%d) = %+v, want the first message", again, got)
	}
	if _, err := st.Get(ctx, 99); !errors.Is(err, eventstore.ErrNotFound) {
		t.Fatalf("Get(99) error %v, want ErrNotFound", err)
	}
}

func TestKeyMsgIDIsScopedAndEscaped(t *testing.T) {
	k := func(user string, conv int64, key string) string {
		return eventstore.Key{UserID: user, ConversationID: conv, ClientKey: key}.MsgID()
	}
	if got := k("alice", 7, "c-1"); got != "m:alice:7:c-1" {
		t.Fatalf("MsgID = %q, want m:alice:7:c-1", got)
	}
	// Keys nats.go would send as the same header value, or that could be read
	// as another conversation's, get distinct ids.
	ids := []string{
		k("alice", 1, "c-1"), k("alice", 2, "c-1"), k("bob", 1, "c-1"),
		k("alice", 1, " c-1"), k("alice", 1, "c-1\n"), k("alice", 1, "c-1\r"), k("alice", 1, "c 1"),
		k("alice", 1, "2:c-1"), k("alice", 12, "c-1"), k("alice", 1, "c-1%20"),
	}
	seen := map[string]bool{}
	for _, id := range ids {
		if seen[id] {
			t.Fatalf("two keys share the message id %q", id)
		}
		if strings.ContainsAny(id, " \r\n\t") {
			t.Fatalf("message id %q holds white space", id)
		}
		seen[id] = true
	}
}

func TestMessageFingerprint(t *testing.T) {
	keyed := func(m *eventstore.Message) eventstore.Keyed {
		k, ok := m.Keyed()
		if !ok {
			t.Fatalf("%+v: not keyed", m)
		}
		return k
	}
	m := &eventstore.Message{ConversationID: 3, SenderID: "alice", Text: "hi", MsgType: eventstore.TypeText, ClientMsgID: "c-1"}
	k := keyed(m)
	want := eventstore.Keyed{Key: eventstore.Key{UserID: "alice", ConversationID: 3, ClientKey: "c-1"}, Op: eventstore.OpSend,
		// SHA-256 of len("TEXT"), "TEXT", len("hi"), "hi": a rebuilt read model must compute exactly this.
		Fingerprint: "8df6f4c9e78b269bed4e277d08eb1b45441937d700579a4f6e517d108bcfb8e0"}
	if k != want {
		t.Fatalf("Keyed = %+v, want %+v", k, want)
	}
	noType := *m
	noType.MsgType = ""
	if keyed(&noType) != k {
		t.Fatal("an empty type is not fingerprinted as TEXT")
	}
	for _, other := range []eventstore.Message{
		{ConversationID: 3, SenderID: "alice", Text: "hi!", MsgType: eventstore.TypeText, ClientMsgID: "c-1"},
		{ConversationID: 3, SenderID: "alice", Text: "hi", MsgType: eventstore.TypeImage, ClientMsgID: "c-1"},
	} {
		if keyed(&other).Fingerprint == k.Fingerprint {
			t.Fatalf("%+v has the fingerprint of %+v", other, m)
		}
	}
	if eventstore.Fingerprint("a\x00b", "c") == eventstore.Fingerprint("a", "b\x00c") || eventstore.Fingerprint("ab") == eventstore.Fingerprint("a", "b") {
		t.Fatal("two lists of parts share a fingerprint")
	}
	if _, ok := (&eventstore.Message{ConversationID: 3, SenderID: "alice", Text: "hi"}).Keyed(); ok {
		t.Fatal("a message without client_msg_id is keyed")
	}
}

// TestAppendAsync: an append that does not wait is stored in order with
// the caller's later appends, and its result reaches done: the event's id,
// or the stream's refusal.
func TestAppendAsync(t *testing.T) {
	st := testnats.Store(t, testnats.Server(t))
	ctx := context.Background()
	type result struct {
		id  uint64
		err error
	}
	results := make(chan result, 2)
	done := func(id uint64, err error) { results <- result{id, err} }
	typing := &eventstore.Typing{ConversationID: 1, UserID: "alice", IsTyping: true}
	if err := st.AppendAsync(typing, done); err != nil {
		t.Fatal(err)
	}
	id, err := st.Append(ctx, msg(1, "after the typing"))
	if err != nil {
		t.Fatal(err)
	}
	r := <-results
	if r.err != nil || r.id == 0 || r.id >= id {
		t.Fatalf("async append: id %d, err %v; want stored before the message at %d", r.id, r.err, id)
	}

	if err := st.AppendAsync(msg(2, "first"), done, eventstore.ExpectNew()); err != nil {
		t.Fatal(err)
	}
	if r := <-results; r.err != nil {
		t.Fatalf("first append to conversation 2: %v", r.err)
	}
	if err := st.AppendAsync(msg(2, "second"), done, eventstore.ExpectNew()); err != nil {
		t.Fatal(err)
	}
	if r := <-results; !errors.Is(r.err, eventstore.ErrExists) {
		t.Fatalf("second append expecting a new subject: id %d, err %v; want ErrExists", r.id, r.err)
	}
}
