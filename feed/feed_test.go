package feed_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"inbox/chat"
	"inbox/eventstore"
	"inbox/feed"
	"inbox/internal/testnats"
	"inbox/internal/testutil"
)

// recorder is a Sink that writes down what it is handed, in order.
type recorder struct {
	mu        sync.Mutex
	got       []string
	connected map[string]bool
	passed    eventstore.Cursor // the last Passed
	guessed   int               // counts that came with their event (chat.Change.Unread)
	opened    map[string]uint64 // sockets opened since the first, by user
}

func (r *recorder) add(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, fmt.Sprintf(format, args...))
}

// Dispatch writes the event down, then the counts that came with it, each
// as PushUnread would: a count the feed tells with its event looks the same
// as the projector's count right after it.
func (r *recorder) Dispatch(st eventstore.Stored, ch chat.Change) {
	r.add("event %d %v", st.Seq, ch.Members)
	for _, u := range ch.Unread {
		r.add("unread %d %s %d", eventstore.ConversationOf(st.Event), u.User, u.Unread)
	}
	r.mu.Lock()
	r.guessed += len(ch.Unread)
	r.mu.Unlock()
}

func (r *recorder) guesses() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.guessed
}

func (r *recorder) PushUnread(conv int64, user string, unread int64) {
	r.add("unread %d %s %d", conv, user, unread)
}

func (r *recorder) PushPresence(user string, online bool, _ time.Time) {
	r.add("presence %s %v", user, online)
}

func (r *recorder) Passed(c eventstore.Cursor) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.passed = c.Clone()
}

func (r *recorder) lastPassed() eventstore.Cursor {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.passed.Clone()
}

func (r *recorder) Connected(user string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.connected[user]
}

// Opened is 1 for a connected user until open says a socket opened since.
func (r *recorder) Opened(user string) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.connected[user] {
		return 0
	}
	return 1 + r.opened[user]
}

// open says that another socket of user opened.
func (r *recorder) open(user string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.opened == nil {
		r.opened = map[string]uint64{}
	}
	r.opened[user]++
}

func (r *recorder) lines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

// wait polls until the sink was handed exactly want.
func (r *recorder) wait(t *testing.T, want ...string) {
	t.Helper()
	testutil.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if got := r.lines(); !slices.Equal(got, want) {
			return fmt.Errorf("sink got %q, want %q", got, want)
		}
		return nil
	})
}

type env struct {
	srv      *server.Server
	store    *eventstore.Store
	dir      *chat.Directory
	feed     *feed.Feed
	sink     *recorder
	interest bool // the feed follows the live copies; bob's inbox socket is attached at run
}

// newEnv builds a feed on a real stream, following the whole stream.
func newEnv(t *testing.T, seed func(*chat.Directory)) *env {
	t.Helper()
	return newModeEnv(t, false, seed)
}

// newModeEnv builds a feed on a real stream, following the whole stream or
// (interest) the live copies; seed, if set, seeds the directory first, as a
// node does from its read model.
func newModeEnv(t *testing.T, interest bool, seed func(*chat.Directory)) *env {
	t.Helper()
	s := testnats.Server(t)
	e := &env{srv: s, store: testnats.StoreWith(t, s, eventstore.Config{Republish: interest}), dir: chat.NewDirectory(),
		sink: &recorder{connected: map[string]bool{"bob": true}}, interest: interest}
	if seed != nil {
		seed(e.dir)
	}
	e.feed = feed.New(feed.Config{}, e.deps(nil))
	return e
}

// deps are the feed's dependencies in the env's mode.
func (e *env) deps(obs feed.Observer) feed.Deps {
	d := feed.Deps{Source: e.store, Directory: e.dir, Observer: obs, Logger: testutil.Logger()}
	if e.interest {
		d.Live, d.Dial = e.store, func() (*nats.Conn, error) { return nats.Connect(e.srv.ClientURL(), nats.NoReconnect()) }
	}
	return d
}

// modes runs f following the whole stream, then the live copies.
func modes(t *testing.T, f func(t *testing.T, interest bool)) {
	for _, interest := range []bool{false, true} {
		t.Run(map[bool]string{false: "stream", true: "interest"}[interest], func(t *testing.T) { f(t, interest) })
	}
}

func (e *env) run(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.feed.Run(ctx, e.sink) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && ctx.Err() == nil {
			t.Errorf("feed: %v", err)
		}
	})
	if e.interest {
		if err := e.feed.Attach(ctx, "bob", 0, func(eventstore.Cursor) {}); err != nil {
			t.Fatal(err)
		}
	}
}

func (e *env) append(t *testing.T, ev eventstore.Event) uint64 {
	t.Helper()
	seq, err := e.store.Append(context.Background(), ev)
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

func created(conv int64, users ...string) *eventstore.Created {
	ev := &eventstore.Created{ConversationID: conv}
	for _, u := range users {
		ev.Members = append(ev.Members, eventstore.Member{UserID: u, Role: eventstore.RoleMember})
	}
	return ev
}

func message(conv int64, from, text string) *eventstore.Message {
	return &eventstore.Message{ConversationID: conv, SenderID: from, SenderName: from, Text: text, MsgType: eventstore.TypeText}
}

// TestDispatchAfterApply: every event reaches the sink in stream order,
// after the directory applied it, with what it changed.
func TestDispatchAfterApply(t *testing.T) { modes(t, testDispatchAfterApply) }

func testDispatchAfterApply(t *testing.T, interest bool) {
	e := newModeEnv(t, interest, nil)
	e.run(t)
	e.append(t, created(1, "alice", "bob"))
	e.append(t, message(1, "alice", "hi"))
	e.sink.wait(t, "event 1 [alice bob]", "event 2 [alice bob]")
	if got := e.dir.Seq(); got.String() != "2" {
		t.Fatalf("directory at %s, want 2", got)
	}
}

// TestUnreadWaitsForItsEvent: a count pushed before the feed dispatched the
// event that made it (the projector ran ahead) is held back until that event
// went to the sink, and held counts go out in the order pushed.
func TestUnreadWaitsForItsEvent(t *testing.T) { modes(t, testUnreadWaitsForItsEvent) }

func testUnreadWaitsForItsEvent(t *testing.T, interest bool) {
	e := newModeEnv(t, interest, nil)
	e.run(t)
	e.append(t, created(1, "alice", "bob"))
	e.sink.wait(t, "event 1 [alice bob]")
	e.feed.PushUnread(2, 1, "bob", 1)
	e.feed.PushUnread(3, 1, "bob", 2)
	e.feed.PushUnread(1, 1, "bob", 0) // its event is dispatched: due now, after the held ones that are due (none)
	e.sink.wait(t, "event 1 [alice bob]", "unread 1 bob 0")
	e.append(t, message(1, "alice", "one"))
	e.sink.wait(t, "event 1 [alice bob]", "unread 1 bob 0", "event 2 [alice bob]", "unread 1 bob 1")
	e.append(t, message(1, "alice", "two"))
	e.sink.wait(t, "event 1 [alice bob]", "unread 1 bob 0", "event 2 [alice bob]", "unread 1 bob 1", "event 3 [alice bob]", "unread 1 bob 2")
	// Following the whole stream, the feed told both counts with their
	// messages (unread.go) and the projector's, the same, were not sent
	// again; following interest it guesses nothing.
	if got, want := e.sink.guesses(), map[bool]int{false: 2, true: 0}[interest]; got != want {
		t.Fatalf("%d counts came with their message, want %d", got, want)
	}
}

// TestUnreadWithoutSocket: a count for a user with no socket on the sink is
// neither held nor sent.
func TestUnreadWithoutSocket(t *testing.T) {
	e := newEnv(t, nil)
	e.run(t)
	e.append(t, created(1, "alice", "carol"))
	e.sink.wait(t, "event 1 [alice carol]")
	e.feed.PushUnread(2, 1, "carol", 1)
	e.append(t, message(1, "alice", "hi"))
	e.sink.wait(t, "event 1 [alice carol]", "event 2 [alice carol]")
}

// TestRunStartsAfterTheSeed: the feed starts after the directory's seed (a
// node's read model snapshot); a count pushed before Run waits for it, and
// one for an event of the seed is due at once.
func TestRunStartsAfterTheSeed(t *testing.T) { modes(t, testRunStartsAfterTheSeed) }

func testRunStartsAfterTheSeed(t *testing.T, interest bool) {
	e := newModeEnv(t, interest, nil)
	e.append(t, created(1, "alice", "bob"))
	e.append(t, message(1, "alice", "seeded"))
	e.dir.Seed(eventstore.Cursor{2}, map[int64][]eventstore.Member{1: created(1, "alice", "bob").Members}, nil, nil)
	e.feed.PushUnread(2, 1, "bob", 1)
	e.feed.PushUnread(3, 1, "bob", 2)
	e.feed.PushPresence("alice", true, time.Time{}) // before Run: no socket to tell
	e.run(t)
	e.sink.wait(t, "unread 1 bob 1")
	if got := e.sink.lastPassed(); !slices.Equal(got, eventstore.Cursor{2}) {
		t.Fatalf("the sink was told the feed passed %v, want the seed 2", got)
	}
	e.append(t, message(1, "alice", "live"))
	e.sink.wait(t, "unread 1 bob 1", "event 3 [alice bob]", "unread 1 bob 2")
	e.feed.PushPresence("alice", false, time.Now())
	e.sink.wait(t, "unread 1 bob 1", "event 3 [alice bob]", "unread 1 bob 2", "presence alice false")
}

// observer records what the feed says it dispatched.
type observer struct {
	mu   sync.Mutex
	seqs []uint64
	late []bool // stored after it was dispatched: never
}

func (o *observer) Dispatched(seq uint64, stored time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.seqs = append(o.seqs, seq)
	o.late = append(o.late, stored.IsZero() || stored.After(time.Now()))
}

// TestObserverHearsEachDispatch: the observer (the node's admission control,
// which measures the feed's lag) hears every event after the sink got it,
// with its stream time.
func TestObserverHearsEachDispatch(t *testing.T) { modes(t, testObserverHearsEachDispatch) }

func testObserverHearsEachDispatch(t *testing.T, interest bool) {
	e := newModeEnv(t, interest, nil)
	obs := &observer{}
	e.feed = feed.New(feed.Config{}, e.deps(obs))
	e.run(t)
	e.append(t, created(1, "alice", "bob"))
	e.append(t, message(1, "alice", "hi"))
	e.sink.wait(t, "event 1 [alice bob]", "event 2 [alice bob]")
	testutil.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		obs.mu.Lock()
		defer obs.mu.Unlock()
		if !slices.Equal(obs.seqs, []uint64{1, 2}) || slices.Contains(obs.late, true) {
			return fmt.Errorf("observed %v (bad times %v)", obs.seqs, obs.late)
		}
		return nil
	})
}
