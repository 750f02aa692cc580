package feed_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"inbox/chat"
	"inbox/eventstore"
	"inbox/feed"
	"inbox/internal/testnats"
	"inbox/internal/testutil"
)

// events is a Sink that keeps the events it is handed, in order; Dispatch
// waits while hold is set.
type events struct {
	mu   sync.Mutex
	got  []eventstore.Stored
	hold chan struct{} // nil: no wait
}

func (s *events) Dispatch(st eventstore.Stored, _ chat.Change) {
	s.mu.Lock()
	hold := s.hold
	s.mu.Unlock()
	if hold != nil {
		<-hold
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got = append(s.got, st)
}
func (s *events) PushUnread(int64, string, int64)      {}
func (s *events) PushPresence(string, bool, time.Time) {}
func (s *events) Connected(string) bool                { return true }
func (s *events) Opened(string) uint64                 { return 1 }
func (s *events) Passed(eventstore.Cursor)             {}

// seqs are the ids the sink was handed, of conversation conv's events (0:
// every event).
func (s *events) seqs(conv int64) []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []uint64
	for _, st := range s.got {
		if c := eventstore.ConversationOf(st.Event); conv == 0 || c == conv {
			out = append(out, st.Seq)
		}
	}
	return out
}

// liveEnv is a feed in interest mode on a real server, its streams
// republishing, with n partitions.
type liveEnv struct {
	*env
	sink *events
	n    int
}

func newLiveEnv(t *testing.T, n int, cfg feed.Config) *liveEnv {
	t.Helper()
	s := testnats.Server(t)
	e := &env{srv: s, store: testnats.StoreWith(t, s, eventstore.Config{Partitions: n, Republish: true}), dir: chat.NewDirectory(), interest: true}
	e.dir.Seed(eventstore.NewCursor(n), nil, nil, nil)
	e.feed = feed.New(cfg, e.deps(nil))
	le := &liveEnv{env: e, sink: &events{}, n: n}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.feed.Run(ctx, le.sink) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && ctx.Err() == nil {
			t.Errorf("feed: %v", err)
		}
	})
	return le
}

// attach attaches an inbox socket of user and returns its cut.
func (e *liveEnv) attach(t *testing.T, user string) eventstore.Cursor {
	t.Helper()
	var cut eventstore.Cursor
	if err := e.feed.Attach(context.Background(), user, 0, func(c eventstore.Cursor) { cut = c.Clone() }); err != nil {
		t.Fatal(err)
	}
	return cut
}

// waitSeqs polls until the sink was handed exactly want of conv's events.
func (e *liveEnv) waitSeqs(t *testing.T, conv int64, want []uint64) {
	t.Helper()
	testutil.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if got := e.sink.seqs(conv); !slices.Equal(got, want) {
			return fmt.Errorf("conversation %d: sink got %v, want %v", conv, got, want)
		}
		return nil
	})
}

// waitStats polls until ok accepts the feed's counters.
func (e *liveEnv) waitStats(t *testing.T, what string, ok func(feed.Stats) bool) {
	t.Helper()
	testutil.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if st := e.feed.Stats(); !ok(st) {
			return fmt.Errorf("%s: stats %+v", what, st)
		}
		return nil
	})
}

func partitionsRun(t *testing.T, f func(t *testing.T, n int)) {
	for _, n := range []int{1, 3} {
		t.Run(fmt.Sprintf("partitions=%d", n), func(t *testing.T) { f(t, n) })
	}
}

// TestInterestOnlyWatched: in interest mode the feed receives and
// dispatches the membership of every conversation, but the messages only of
// those with a member attached here: the others' never reach it.
func TestInterestOnlyWatched(t *testing.T) {
	partitionsRun(t, func(t *testing.T, n int) {
		e := newLiveEnv(t, n, feed.Config{})
		e.attach(t, "bob")
		c1 := e.append(t, created(1, "alice", "bob"))
		c2 := e.append(t, created(2, "carol", "dave"))
		var want1 []uint64
		for i := range 50 {
			if i%10 == 0 {
				want1 = append(want1, e.append(t, message(1, "alice", fmt.Sprint("for bob ", i))))
			}
			e.append(t, message(2, "carol", fmt.Sprint("not here ", i)))
		}
		e.waitSeqs(t, 1, append([]uint64{c1}, want1...))
		e.waitSeqs(t, 2, []uint64{c2})
		// Conversation 2's 50 messages never reached the feed: what it
		// decoded is the two creations (firehose) and conversation 1's 5
		// messages, some twice (read from the stream when bob joined, and
		// live).
		if st := e.feed.Stats(); st.Copies+st.Filled > 2*(2+5) || st.Dispatched != 2+5 || st.Watched != 1 {
			t.Fatalf("stats %+v: more than conversation 1's events and the creations reached the feed", st)
		}
	})
}

// appendBehind appends messages to conv from sender in the background, one
// after another, until the stop it returns is called; stop returns their ids.
func (e *liveEnv) appendBehind(t *testing.T, conv int64, sender string) (stop func() []uint64) {
	done := make(chan struct{})
	var ids []uint64
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			default:
			}
			ids = append(ids, e.append(t, message(conv, sender, fmt.Sprint("behind ", i))))
		}
	})
	return func() []uint64 {
		close(done)
		wg.Wait()
		return ids
	}
}

// TestInterestJoinAndLeave: a user attached here who is added to a
// conversation the node does not watch gets its membership event, then
// every later event of it in order (nothing between the join and the
// subscription is lost); removed, its interest ends and the conversation's
// events stop coming.
func TestInterestJoinAndLeave(t *testing.T) {
	partitionsRun(t, func(t *testing.T, n int) {
		e := newLiveEnv(t, n, feed.Config{})
		e.attach(t, "bob")
		want := []uint64{e.append(t, created(7, "alice", "carol"))}
		for i := range 3 {
			e.append(t, message(7, "alice", fmt.Sprint("before ", i)))
		}
		e.waitSeqs(t, 7, want)
		// Messages racing the join: appended right behind it.
		stop := e.appendBehind(t, 7, "alice")
		time.Sleep(20 * time.Millisecond)
		join := e.append(t, &eventstore.MemberChanged{ConversationID: 7, Op: eventstore.OpAdd, UserID: "bob", Role: eventstore.RoleMember})
		time.Sleep(50 * time.Millisecond)
		after := stop()
		want = append(want, join)
		for _, id := range after {
			if id > join {
				want = append(want, id)
			}
		}
		e.waitSeqs(t, 7, want)
		e.waitStats(t, "watching conversation 7", func(s feed.Stats) bool { return s.Watched == 1 })

		leave := e.append(t, &eventstore.MemberChanged{ConversationID: 7, Op: eventstore.OpRemove, UserID: "bob"})
		want = append(want, leave)
		e.waitSeqs(t, 7, want)
		e.waitStats(t, "not watching", func(s feed.Stats) bool { return s.Watched == 0 })
		before := e.feed.Stats()
		for i := range 3 {
			e.append(t, message(7, "alice", fmt.Sprint("after bob left ", i)))
		}
		e.append(t, created(8, "x", "y")) // a firehose event behind them: they were not received
		e.waitSeqs(t, 7, want)
		e.waitStats(t, "the next creation", func(s feed.Stats) bool { return s.Copies == before.Copies+1 })
	})
}

// TestInterestDetach: when the last socket of the last local member goes,
// the conversation is no longer watched.
func TestInterestDetach(t *testing.T) {
	e := newLiveEnv(t, 1, feed.Config{})
	e.append(t, created(1, "alice", "bob"))
	e.append(t, created(2, "bob", "carol"))
	e.attach(t, "bob")
	e.attach(t, "bob")
	e.attach(t, "alice")
	e.waitStats(t, "two watched", func(s feed.Stats) bool { return s.Watched == 2 })
	e.feed.Detach("bob", 0)
	e.feed.Detach("alice", 0)
	e.append(t, message(1, "alice", "still watched: bob has a socket"))
	e.waitStats(t, "two watched", func(s feed.Stats) bool { return s.Watched == 2 && s.Dispatched == 3 })
	e.feed.Detach("bob", 0)
	e.waitStats(t, "none watched", func(s feed.Stats) bool { return s.Watched == 0 })
}

// TestInterestCut: a socket attaching while its conversation, not watched
// yet, takes messages gets every one after its cut from the feed, in order:
// the boundary between what the catch-up reads and what comes live has no
// hole.
func TestInterestCut(t *testing.T) {
	partitionsRun(t, func(t *testing.T, n int) {
		e := newLiveEnv(t, n, feed.Config{})
		for round := range 10 {
			conv := int64(100 + round)
			user := fmt.Sprint("u", round)
			sent := []uint64{e.append(t, created(conv, "writer", user))}
			stop := e.appendBehind(t, conv, "writer")
			time.Sleep(time.Duration(round) * 3 * time.Millisecond)
			cut := e.attach(t, user)
			if round%2 == 1 { // else stopped at once: no later copy would reveal a hole as a gap
				time.Sleep(30 * time.Millisecond)
			}
			sent = append(sent, stop()...)
			k := eventstore.Partition(conv, n)
			var want []uint64
			for _, id := range sent {
				if !cut.Covers(id) {
					want = append(want, id)
				}
			}

			testutil.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
				var got []uint64
				for _, id := range e.sink.seqs(conv) {
					if !cut.Covers(id) {
						got = append(got, id)
					}
				}
				if !slices.Equal(got, want) {
					return fmt.Errorf("round %d (cut %d in partition %d): after the cut the feed dispatched %v, want %v", round, cut[k], k, got, want)
				}
				return nil
			})
			e.feed.Detach(user, 0)
		}
	})
}

// TestInterestGapHealed: a live copy that never came (the stream stopped
// republishing for one event) is noticed by the next copy on its subject,
// read from the stream and dispatched before it, once, in order.
func TestInterestGapHealed(t *testing.T) {
	partitionsRun(t, func(t *testing.T, n int) {
		e := newLiveEnv(t, n, feed.Config{})
		e.attach(t, "bob")
		want := []uint64{e.append(t, created(3, "alice", "bob"))}
		want = append(want, e.append(t, message(3, "alice", "one")))
		e.waitSeqs(t, 3, want)

		ctx := context.Background()
		k := eventstore.Partition(3, n)
		st := e.store.Streams()[k]
		cfg := st.CachedInfo().Config
		saved := cfg.RePublish
		cfg.RePublish = nil
		if _, err := e.store.JetStream().UpdateStream(ctx, cfg); err != nil {
			t.Fatal(err)
		}
		lost := e.append(t, message(3, "alice", "never copied"))
		cfg.RePublish = saved
		if _, err := e.store.JetStream().UpdateStream(ctx, cfg); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
		if got := e.sink.seqs(3); slices.Contains(got, lost) {
			t.Fatalf("the uncopied message was dispatched: %v", got)
		}
		next := e.append(t, message(3, "alice", "three"))
		want = append(want, lost, next)
		e.waitSeqs(t, 3, want)
		if s := e.feed.Stats(); s.Gaps != 1 {
			t.Fatalf("stats %+v: want one gap", s)
		}
	})
}

// TestInterestReopens: a Live that had to drop copies (the feed could not
// keep up) is replaced, and what it missed is read from the stream: every
// event once, in order.
func TestInterestReopens(t *testing.T) {
	e := newLiveEnv(t, 1, feed.Config{LiveBuffer: 4})
	e.attach(t, "bob")
	want := []uint64{e.append(t, created(1, "alice", "bob"))}
	e.waitSeqs(t, 1, want)
	hold := make(chan struct{})
	e.sink.mu.Lock()
	e.sink.hold = hold
	e.sink.mu.Unlock()
	for i := range 50 {
		want = append(want, e.append(t, message(1, "alice", fmt.Sprint(i))))
	}
	e.waitStats(t, "a copy dropped", func(s feed.Stats) bool { return s.Reopens == 0 }) // it holds
	e.sink.mu.Lock()
	e.sink.hold = nil
	e.sink.mu.Unlock()
	close(hold)
	e.waitSeqs(t, 1, want)
	e.waitStats(t, "replaced", func(s feed.Stats) bool { return s.Reopens >= 1 })
	want = append(want, e.append(t, message(1, "alice", "after")))
	e.waitSeqs(t, 1, want)
}

// TestInterestConnectionLost: the live connection is cut; the feed opens
// another and reads what it missed meanwhile.
func TestInterestConnectionLost(t *testing.T) {
	s := testnats.Server(t)
	e := &env{srv: s, store: testnats.StoreWith(t, s, eventstore.Config{Republish: true}), dir: chat.NewDirectory(), interest: true}
	var mu sync.Mutex
	var conns []*nats.Conn
	d := e.deps(nil)
	d.Dial = func() (*nats.Conn, error) {
		nc, err := nats.Connect(s.ClientURL(), nats.NoReconnect())
		if err == nil {
			mu.Lock()
			conns = append(conns, nc)
			mu.Unlock()
		}
		return nc, err
	}
	e.feed = feed.New(feed.Config{}, d)
	le := &liveEnv{env: e, sink: &events{}, n: 1}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go e.feed.Run(ctx, le.sink)
	le.attach(t, "bob")
	want := []uint64{e.append(t, created(1, "alice", "bob"))}
	le.waitSeqs(t, 1, want)
	mu.Lock()
	conns[0].Close() // as a lost connection does: the feed is told by its closed handler
	mu.Unlock()
	for i := range 20 {
		want = append(want, e.append(t, message(1, "alice", fmt.Sprint(i))))
	}
	le.waitSeqs(t, 1, want)
	le.waitStats(t, "replaced", func(s feed.Stats) bool { return s.Reopens == 1 })
}
