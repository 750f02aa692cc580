package chat_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"inbox/chat"
	"inbox/eventstore"
	"inbox/feed"
	"inbox/internal/testnats"
	"inbox/internal/testutil"
)

// newService wires a Service to a real stream with its directory kept by the
// live feed, as a node does.
func newService(t *testing.T) (*chat.Service, *eventstore.Store) {
	t.Helper()
	return newServiceWith(t, chat.Limits{MaxText: 10})
}

func newServiceWith(t *testing.T, limits chat.Limits) (*chat.Service, *eventstore.Store) {
	t.Helper()
	st := testnats.Store(t, testnats.Server(t))
	dir := chat.NewDirectory()
	runFeed(t, st, dir)
	return chat.New(limits, chat.Deps{Store: st, Locator: st, Directory: dir}), st
}

// runFeed keeps dir current with st's events (the live feed, without
// sockets) until the test ends.
func runFeed(t testing.TB, st *eventstore.Store, dir *chat.Directory) {
	t.Helper()
	live := feed.New(feed.Config{}, feed.Deps{Source: st, Directory: dir})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		live.Run(ctx, feed.Discard)
	}()
	t.Cleanup(func() { cancel(); <-done })
}

func members(ids ...string) []eventstore.Member {
	var ms []eventstore.Member
	for _, id := range ids {
		ms = append(ms, eventstore.Member{UserID: id, Role: eventstore.RoleMember})
	}
	return ms
}

func TestSendValidation(t *testing.T) {
	svc, _ := newService(t)
	ctx := context.Background()
	if _, _, err := svc.CreateConversation(ctx, 1, members("a", "b")); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		from string
		req  chat.SendRequest
		code string
	}{
		{"ok", "a", chat.SendRequest{ConversationID: 1, Text: "hi"}, ""},
		{"empty", "a", chat.SendRequest{ConversationID: 1, Text: ""}, chat.CodeBadRequest},
		{"too long", "a", chat.SendRequest{ConversationID: 1, Text: strings.Repeat("é", 11)}, chat.CodeTooLarge},
		{"max length in characters", "a", chat.SendRequest{ConversationID: 1, Text: strings.Repeat("é", 10)}, ""},
		{"bad utf8", "a", chat.SendRequest{ConversationID: 1, Text: "\xff"}, chat.CodeBadRequest},
		{"bad type", "a", chat.SendRequest{ConversationID: 1, Text: "x", Type: "SYSTEM"}, chat.CodeBadRequest},
		{"not a member", "c", chat.SendRequest{ConversationID: 1, Text: "x"}, chat.CodeForbidden},
		{"no conversation", "a", chat.SendRequest{ConversationID: 99, Text: "x"}, chat.CodeNotFound},
		{"zero conversation", "a", chat.SendRequest{ConversationID: 0, Text: "x"}, chat.CodeBadRequest},
		{"negative conversation", "a", chat.SendRequest{ConversationID: -1, Text: "x"}, chat.CodeBadRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sent, err := svc.Send(ctx, chat.Sender{UserID: tc.from}, tc.req)
			if tc.code == "" {
				if err != nil || sent.ID == 0 {
					t.Fatalf("Send = %+v, %v; want stored", sent, err)
				}
				return
			}
			if got := chat.CodeOf(err); got != tc.code {
				t.Fatalf("Send error %v has code %q, want %q", err, got, tc.code)
			}
		})
	}
}

func TestSendIdempotentPerSender(t *testing.T) {
	svc, _ := newService(t)
	ctx := context.Background()
	if _, _, err := svc.CreateConversation(ctx, 1, members("a", "b")); err != nil {
		t.Fatal(err)
	}
	req := chat.SendRequest{ConversationID: 1, Text: "hi", ClientMsgID: "c-1"}
	first, err := svc.Send(ctx, chat.Sender{UserID: "a"}, req)
	if err != nil {
		t.Fatal(err)
	}
	again, err := svc.Send(ctx, chat.Sender{UserID: "a"}, req)
	if err != nil || again.ID != first.ID || !again.Replayed {
		t.Fatalf("retry = %+v, %v; want %d again", again, err, first.ID)
	}
	other, err := svc.Send(ctx, chat.Sender{UserID: "b"}, req)
	if err != nil || other.ID == first.ID {
		t.Fatalf("another sender's c-1 = %+v, %v; want a new message", other, err)
	}
	if got := svc.LastWrite("a"); got.String() != fmt.Sprint(first.ID) {
		t.Fatalf("LastWrite(a) = %s, want %d", got, first.ID)
	}
}

func TestCreateConversationIDs(t *testing.T) {
	svc, _ := newService(t)
	ctx := context.Background()
	if _, _, err := svc.CreateConversation(ctx, 5, members("a")); err != nil {
		t.Fatal(err)
	}
	_, _, err := svc.CreateConversation(ctx, 5, members("b"))
	if chat.CodeOf(err) != chat.CodeConflict || !errors.Is(err, eventstore.ErrExists) {
		t.Fatalf("second create of 5: %v, want conflict", err)
	}
	// Concurrent creations with assigned ids all succeed, each with its own id above 5.
	var mu sync.Mutex
	seen := map[int64]bool{}
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			id, _, err := svc.CreateConversation(ctx, 0, members("a", "b"))
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if seen[id] || id <= 5 {
				t.Errorf("assigned id %d twice or not above 5", id)
			}
			seen[id] = true
		})
	}
	wg.Wait()
	if len(seen) != 32 {
		t.Fatalf("%d distinct ids, want 32", len(seen))
	}
}

func TestMembershipChangesAreVisibleOnReturn(t *testing.T) {
	svc, _ := newService(t)
	ctx := context.Background()
	dir := svc.Directory()
	if _, _, err := svc.CreateConversation(ctx, 1, members("a")); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.AddMember(ctx, 1, eventstore.Member{UserID: "b", Role: eventstore.RoleWorker}); err != nil {
		t.Fatal(err)
	}
	if !dir.IsMember(1, "b") || !dir.ShareConversation("a", "b") {
		t.Fatal("added member not visible when AddMember returned")
	}
	if got := dir.Contacts("a"); len(got) != 1 || got[0] != "b" {
		t.Fatalf("Contacts(a) = %v, want [b]", got)
	}
	if _, err := svc.RemoveMember(ctx, 1, "b"); err != nil {
		t.Fatal(err)
	}
	if dir.IsMember(1, "b") || len(dir.Conversations("b")) != 0 {
		t.Fatal("removed member still visible when RemoveMember returned")
	}
	if _, err := svc.RemoveMember(ctx, 1, "b"); chat.CodeOf(err) != chat.CodeNotFound {
		t.Fatalf("removing a non-member: %v, want not_found", err)
	}
	if _, err := svc.AddMember(ctx, 1, eventstore.Member{UserID: "b c", Role: "member"}); chat.CodeOf(err) != chat.CodeBadRequest {
		t.Fatalf("bad user id: %v, want bad_request", err)
	}
	if _, err := svc.AddMember(ctx, 1, eventstore.Member{UserID: "b", Role: "owner"}); chat.CodeOf(err) != chat.CodeBadRequest {
		t.Fatalf("bad role: %v, want bad_request", err)
	}
}

func TestReadChecksMessagesAgainstTheStream(t *testing.T) {
	svc, _ := newService(t)
	ctx := context.Background()
	for _, id := range []int64{1, 2} {
		if _, _, err := svc.CreateConversation(ctx, id, members("a", "b")); err != nil {
			t.Fatal(err)
		}
	}
	s1, err := svc.Send(ctx, chat.Sender{UserID: "a"}, chat.SendRequest{ConversationID: 1, Text: "one"})
	if err != nil {
		t.Fatal(err)
	}
	s2, err := svc.Send(ctx, chat.Sender{UserID: "a"}, chat.SendRequest{ConversationID: 2, Text: "two"})
	if err != nil {
		t.Fatal(err)
	}
	m1, m2 := s1.ID, s2.ID
	tests := []struct {
		name string
		upTo int64
		ids  []int64
		code string
	}{
		{"up_to", int64(m1), nil, ""},
		{"message_ids", 0, []int64{int64(m1)}, ""},
		{"other conversation's message", 0, []int64{int64(m2)}, chat.CodeNotFound},
		{"other conversation's up_to", int64(m2), nil, chat.CodeNotFound},
		{"not a message", 1, nil, chat.CodeNotFound},
		{"beyond the stream", 1 << 40, nil, chat.CodeNotFound},
		{"negative", 0, []int64{-3}, chat.CodeBadRequest},
		{"nothing", 0, nil, chat.CodeBadRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := svc.Read(ctx, "b", 1, tc.upTo, tc.ids)
			if got := chat.CodeOf(err); (tc.code == "" && err != nil) || (tc.code != "" && got != tc.code) {
				t.Fatalf("Read = %v (code %q), want code %q", err, got, tc.code)
			}
		})
	}
}

func TestTypingThrottle(t *testing.T) {
	svc, _ := newService(t)
	ctx := context.Background()
	if _, _, err := svc.CreateConversation(ctx, 1, members("a", "b")); err != nil {
		t.Fatal(err)
	}
	var appended int
	start := time.Now()
	for range 50 {
		seq, err := svc.Typing(ctx, "a", 1, true)
		if err != nil {
			t.Fatal(err)
		}
		if seq != 0 {
			appended++
		}
	}
	// 50 calls within well under a second (or a little over on a slow machine).
	if limit := 1 + int(time.Since(start)/time.Second); appended > limit {
		t.Fatalf("%d typing events appended in %s, want at most %d", appended, time.Since(start), limit)
	}
	if got, want := svc.Limits().TypingInterval, eventstore.DefaultTypingTTL/2; got != want {
		t.Fatalf("default typing interval %s, want half the expiry (%s)", got, want)
	}
	if _, err := svc.Typing(ctx, "c", 1, true); chat.CodeOf(err) != chat.CodeForbidden {
		t.Fatalf("typing by a non-member: %v, want forbidden", err)
	}
}

// TestTypingRepeatSpread: the same state is admitted again TypingInterval
// ±25% after the last event (never sooner than TypingGap), so users who
// started typing together do not repeat together.
func TestTypingRepeatSpread(t *testing.T) {
	const interval = 4 * time.Second
	svc, _ := newServiceWith(t, chat.Limits{TypingInterval: interval, TypingGap: time.Second})
	ctx := context.Background()
	var users []string
	for i := range 100 {
		users = append(users, fmt.Sprintf("u%d", i))
	}
	if _, _, err := svc.CreateConversation(ctx, 1, members(users...)); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	now := t0
	admitted := func(user string, at time.Duration) bool {
		t.Helper()
		now = t0.Add(at)
		ev, err := svc.AdmitTyping(user, 1, true)
		if err != nil {
			t.Fatal(err)
		}
		return ev != nil
	}

	// The bounds, with the random draw fixed.
	for _, tc := range []struct {
		draw          float64
		before, after time.Duration
	}{
		{0, 3*time.Second - time.Millisecond, 3 * time.Second},
		{0.5, 4*time.Second - time.Millisecond, 4 * time.Second},
		{0.999999, 5*time.Second - 2*time.Millisecond, 5 * time.Second},
	} {
		svc.SetClock(func() time.Time { return now }, func() float64 { return tc.draw })
		t0 = t0.Add(time.Minute)
		if !admitted("u0", 0) || admitted("u0", tc.before) || !admitted("u0", tc.after) {
			t.Errorf("draw %v: want the repeat admitted at %v and not at %v", tc.draw, tc.after, tc.before)
		}
	}

	// With the real random source, 100 users who start together are not all
	// due again at the same moment: about half repeat by the interval.
	svc.SetClock(func() time.Time { return now }, rand.Float64)
	t0 = t0.Add(time.Minute)
	for _, u := range users {
		if !admitted(u, 0) {
			t.Fatalf("first start of %s not admitted", u)
		}
	}
	repeated := 0
	for _, u := range users {
		if admitted(u, interval) {
			repeated++
		}
	}
	if repeated < 20 || repeated > 80 {
		t.Errorf("%d of 100 users who started together repeated after exactly one interval, want about half", repeated)
	}
}

// TestTypingChangeWaitsForGap: a change of state sooner than TypingGap after
// the last typing event is appended once the gap has passed, the latest state
// winning; a user who changes back meanwhile causes no event at all.
// TestTypingAfterAMessage: a message ends the sender's typing indicator on
// the receivers, so a start right after it (past TypingGap) is announced,
// not held back as a repeat of the start before the message.
func TestTypingAfterAMessage(t *testing.T) {
	svc, _ := newServiceWith(t, chat.Limits{TypingInterval: 5 * time.Second, TypingGap: time.Second})
	ctx := context.Background()
	if _, _, err := svc.CreateConversation(ctx, 1, members("a", "b")); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	now := t0
	svc.SetClock(func() time.Time { return now }, func() float64 { return 0.5 })
	admitted := func(at time.Duration) bool {
		t.Helper()
		now = t0.Add(at)
		ev, err := svc.AdmitTyping("a", 1, true)
		if err != nil {
			t.Fatal(err)
		}
		return ev != nil
	}
	if !admitted(0) {
		t.Fatal("the first start was not admitted")
	}
	now = t0.Add(500 * time.Millisecond)
	if _, err := svc.Send(ctx, chat.Sender{UserID: "a"}, chat.SendRequest{ConversationID: 1, Text: "hi"}); err != nil {
		t.Fatal(err)
	}
	if !admitted(1500 * time.Millisecond) {
		t.Error("a start 1.5 s after a message (1 s gap, 5 s interval) was held back as a repeat")
	}
	// The start after the message is the new state: a second one soon after is a repeat.
	if admitted(2 * time.Second) {
		t.Error("a second start within the interval was admitted")
	}
}

func TestTypingChangeWaitsForGap(t *testing.T) {
	const gap = 200 * time.Millisecond
	svc, st := newServiceWith(t, chat.Limits{TypingGap: gap})
	ctx := context.Background()
	if _, _, err := svc.CreateConversation(ctx, 1, members("a", "b")); err != nil {
		t.Fatal(err)
	}
	start, err := svc.Typing(ctx, "a", 1, true)
	if err != nil || start == 0 {
		t.Fatalf("first start = %d, %v", start, err)
	}
	for i, on := range []bool{false, true, false, true, false} {
		if seq, err := svc.Typing(ctx, "a", 1, on); err != nil || seq != 0 {
			t.Fatalf("change %d within the gap = %d, %v; want it deferred", i, seq, err)
		}
	}
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		last, err := lastSeq(ctx, st)
		if err != nil {
			return err
		}
		if last <= start {
			return errors.New("the deferred stop was never appended")
		}
		return nil
	})
	time.Sleep(2 * gap) // nothing more may follow
	var got []*eventstore.Typing
	err = st.Read(ctx, 0, start+1, start+10, nil, func(s eventstore.Stored) error {
		if ev, ok := s.Event.(*eventstore.Typing); ok {
			got = append(got, ev)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].IsTyping || got[0].UserID != "a" {
		t.Fatalf("after the gap: %+v, want one stop by a", got)
	}

	// Changing back within the gap announces nothing.
	time.Sleep(gap)
	if seq, err := svc.Typing(ctx, "a", 1, true); err != nil || seq == 0 {
		t.Fatalf("start after the gap = %d, %v", seq, err)
	}
	last, _ := lastSeq(ctx, st)
	svc.Typing(ctx, "a", 1, false)
	svc.Typing(ctx, "a", 1, true)
	time.Sleep(3 * gap)
	if now, _ := lastSeq(ctx, st); now != last {
		t.Fatalf("stream moved from %d to %d after a stop and a start within the gap", last, now)
	}
}

// stallStops holds every typing stop on its way to the stream until the
// append's context ends, telling entered when one arrives and appended what
// the stream answered.
type stallStops struct {
	*eventstore.Store
	entered  chan struct{}
	appended chan error
}

func (a stallStops) Append(ctx context.Context, e eventstore.Event, opts ...eventstore.AppendOption) (uint64, error) {
	ev, ok := e.(*eventstore.Typing)
	if !ok || ev.IsTyping {
		return a.Store.Append(ctx, e, opts...)
	}
	a.entered <- struct{}{}
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second): // an append no one cancels: the test fails, it does not hang
	}
	seq, err := a.Store.Append(ctx, e, opts...)
	a.appended <- err
	return seq, err
}

// TestCloseWaitsForDeferredTyping: Close cancels a deferred typing change
// already appending and returns only once that append has returned, so
// nothing the service runs by itself reaches the store after Close.
func TestCloseWaitsForDeferredTyping(t *testing.T) {
	st := testnats.Store(t, testnats.Server(t))
	stall := stallStops{Store: st, entered: make(chan struct{}, 1), appended: make(chan error, 1)}
	// A gap long enough that the stop below comes within it on a loaded
	// machine (with 50 ms it came after, was appended at once and hung).
	svc := chat.New(chat.Limits{TypingGap: time.Second}, chat.Deps{Store: stall, Locator: st, Directory: chat.NewDirectory()})
	svc.Directory().Apply(eventstore.Stored{Seq: 1, Event: &eventstore.Created{ConversationID: 1, Members: members("a")}})
	ctx := context.Background()
	if seq, err := svc.Typing(ctx, "a", 1, true); err != nil || seq == 0 {
		t.Fatalf("start = %d, %v", seq, err)
	}
	if seq, err := svc.Typing(ctx, "a", 1, false); err != nil || seq != 0 {
		t.Fatalf("stop within the gap = %d, %v; want it deferred", seq, err)
	}
	select {
	case <-stall.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the deferred stop was never appended")
	}
	closed := make(chan struct{})
	go func() {
		svc.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return")
	}
	select {
	case err := <-stall.appended:
		if err == nil {
			t.Fatal("the deferred stop was stored during Close, want its append cancelled")
		}
	default:
		t.Fatal("Close returned while the deferred stop was still appending")
	}
}

// lastSeq is the last sequence of a one-partition stream.
func lastSeq(ctx context.Context, st *eventstore.Store) (uint64, error) {
	c, err := st.Last(ctx)
	if err != nil {
		return 0, err
	}
	return c[0], nil
}
