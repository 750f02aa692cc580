// Package feed is inbox's live feed: the one goroutine that follows the
// event stream, applies each event to the in-memory membership Directory and
// hands it, with what it changed, to the sockets (Tail → Apply → Dispatch);
// and the rule that a socket never gets an unread count before the message
// it counts.
//
// The feed reads from a Source, the whole stream (eventstore.Store's Tail),
// or in interest mode from the streams' live copies of what its sockets need
// (a LiveSource; interest.go), and delivers to a Sink (the WebSocket hub).
// Both are small interfaces declared here.
//
// A feed is built before the parts that push into it (the projector's unread
// counts, presence changes) and before its sink, which is given to Run: a
// node can wire projector → feed → hub → service → projector without a
// setter.
package feed

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"inbox/chat"
	"inbox/eventstore"
)

// Source is the stream the feed follows; *eventstore.Store is one. Tail
// calls fn for every event after the cursor after, each partition's in
// order, one call at a time, until ctx ends or the stream fails.
type Source interface {
	Tail(ctx context.Context, after eventstore.Cursor, filters []string, fn func(eventstore.Stored)) error
}

// Sink is where the feed delivers; *wsedge.Hub is one. Dispatch is called
// one event at a time, each partition's in stream order; PushUnread and
// PushPresence on the goroutine of whoever pushed (the projector, the
// presence tracker). None may block.
type Sink interface {
	// Dispatch routes one stream event, with what applying it to the
	// directory changed, to the sockets it concerns.
	Dispatch(st eventstore.Stored, ch chat.Change)
	// PushUnread sends user's unread count of conversation conv.
	PushUnread(conv int64, user string, unread int64)
	// PushPresence tells user's contacts that it came online or went offline.
	PushPresence(user string, online bool, lastSeen time.Time)
	// Connected reports whether user has a socket here: a count for a user
	// who has none is not held back.
	Connected(user string) bool
	// Opened says when user's latest socket here opened, as a number that
	// grows with every socket opened on the sink (0: none): a count the
	// user's sockets were told before is sent again to a newer one.
	Opened(user string) uint64
	// Passed says that the feed has handed over, per partition, every event
	// up to c it ever will: where it starts (the directory's seed), and
	// past events it skipped (interest mode).
	Passed(c eventstore.Cursor)
}

// Observer hears of every event the feed dispatched, with its stream time;
// *admission.Controller is one (it measures how far behind the feed is). It
// is called on the feed's goroutine and must not block.
type Observer interface {
	Dispatched(seq uint64, stored time.Time)
}

var _ Source = (*eventstore.Store)(nil)

// DefaultMaxHeld is Config.MaxHeld's default.
const DefaultMaxHeld = 1 << 16

// Config tunes a Feed. Zero fields take their defaults.
type Config struct {
	// MaxHeld bounds the unread counts held back waiting for their event;
	// past it they are sent at once, possibly ahead of their event (a feed
	// far behind the projector).
	MaxHeld int
	// LiveBuffer is how many live copies wait for the feed before one is
	// dropped and the feed reads the stream instead (interest mode; default
	// eventstore.DefaultLiveBuffer).
	LiveBuffer int
}

// Deps are the parts a Feed is built on; Source and Directory are required.
type Deps struct {
	Source    Source
	Directory *chat.Directory // seeded up to where the feed starts (Directory.Seq)
	Observer  Observer        // optional
	// Live, if set, runs the feed in interest mode (interest.go), with Dial
	// opening its connections: ones that do not reconnect by themselves
	// (nats.NoReconnect). Both or neither.
	Live   LiveSource
	Dial   func() (*nats.Conn, error)
	Logger *slog.Logger // nil: discard
}

// Feed is the live feed. Build it with New, run it with Run.
type Feed struct {
	cfg     Config
	src     Source
	dir     *chat.Directory
	obs     Observer
	running atomic.Bool

	log *slog.Logger

	mu         sync.Mutex
	sink       Sink              // nil until Run
	dispatched eventstore.Cursor // per partition, the last sequence the sink was handed (interest mode: or skipped)
	held       []heldUnread      // counts waiting for their event, oldest first
	guess      *guesses          // counts told ahead of the projector (unread.go); nil in interest mode

	liveState // interest mode
}

// heldUnread is an unread count held back until the feed passes seq.
type heldUnread struct {
	seq    uint64
	conv   int64
	user   string
	unread int64
}

// Discard is a Sink that delivers nothing, for a node part that only needs
// the directory kept up to date.
var Discard Sink = discard{}

type discard struct{}

func (discard) Dispatch(eventstore.Stored, chat.Change) {}
func (discard) PushUnread(int64, string, int64)         {}
func (discard) PushPresence(string, bool, time.Time)    {}
func (discard) Connected(string) bool                   { return false }
func (discard) Opened(string) uint64                    { return 0 }
func (discard) Passed(eventstore.Cursor)                {}

// New returns a Feed. It panics if a dependency is missing: that is a wiring
// mistake, not a runtime condition.
func New(cfg Config, d Deps) *Feed {
	switch {
	case d.Source == nil:
		panic("feed: no source")
	case d.Directory == nil:
		panic("feed: no directory")
	case (d.Live == nil) != (d.Dial == nil):
		panic("feed: a live source needs a dialer, and only it")
	}
	if cfg.MaxHeld <= 0 {
		cfg.MaxHeld = DefaultMaxHeld
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	f := &Feed{cfg: cfg, src: d.Source, dir: d.Directory, obs: d.Observer, log: d.Logger.With("component", "feed")}
	f.live, f.dial = d.Live, d.Dial
	f.ready = make(chan struct{})
	f.stopped = make(chan struct{})
	f.wake = make(chan struct{}, 1)
	return f
}

// Run follows the source from the event after the directory's last
// (Directory.Seq()+1) until ctx ends or the source fails, and returns the
// source's error. Each event is applied to the directory, then dispatched to
// sink; then the unread counts it made are released. In interest mode it
// follows the live copies instead, and gets over a lost connection by
// itself: it returns when ctx ends. One Run per Feed.
func (f *Feed) Run(ctx context.Context, sink Sink) (err error) {
	if sink == nil {
		return errors.New("feed: no sink")
	}
	if !f.running.CompareAndSwap(false, true) {
		return errors.New("feed: already running")
	}
	defer func() {
		f.qmu.Lock()
		f.runErr = err
		close(f.stopped)
		f.qmu.Unlock()
	}()
	after := f.dir.Seq()
	f.mu.Lock()
	f.sink = sink
	f.dispatched = after.Clone() // the directory's seed: counts up to it are due
	if f.live == nil {
		f.guess = newGuesses(after, sink)
	}
	f.sendDueLocked()
	f.mu.Unlock()
	sink.Passed(after)
	if f.live != nil {
		f.stale = make([]bool, len(after))
		return f.runLive(ctx)
	}
	f.readyOnce.Do(func() { close(f.ready) })
	return f.src.Tail(ctx, after, nil, func(st eventstore.Stored) { f.handle(st) })
}

// PushUnread sends user's unread count of conv once the feed has dispatched
// the event at seq that made it (a message, a receipt, a join): the
// projector and the feed read the stream separately, and a client must never
// see a count before the message it counts. Counts go out in the order
// pushed. Pushed before Run, a count waits for Run.
func (f *Feed) PushUnread(seq uint64, conv int64, user string, unread int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.sink != nil && !f.sink.Connected(user) {
		return // no socket here to tell
	}
	f.sendDueLocked() // older counts first, so counts never go back in time
	u := heldUnread{seq: seq, conv: conv, user: user, unread: unread}
	if f.sink == nil || !f.dispatched.Covers(seq) {
		if len(f.held) < f.cfg.MaxHeld {
			f.held = append(f.held, u)
			return
		}
		if f.sink == nil {
			return // nowhere to send it: no socket can be open before Run
		}
		// Too many held: sent ahead of its event, so no guess builds on it.
		if f.guess != nil {
			f.guess.drop(conv, user)
		}
		f.sink.PushUnread(u.conv, u.user, u.unread)
		return
	}
	f.sendLocked(u)
}

// sendLocked sends the projector's count u, whose event has been
// dispatched, unless the guesses already told the sockets. f.mu is held.
func (f *Feed) sendLocked(u heldUnread) {
	if f.guess != nil {
		v, ok := f.guess.counted(u)
		if !ok {
			return
		}
		u.unread = v
	}
	f.sink.PushUnread(u.conv, u.user, u.unread)
}

// PushPresence tells user's contacts on the sink that it came online or
// went offline (lastSeen: when, if known). Before Run there is no socket to
// tell, and the change is dropped.
func (f *Feed) PushPresence(user string, online bool, lastSeen time.Time) {
	f.mu.Lock()
	sink := f.sink
	f.mu.Unlock()
	if sink != nil {
		sink.PushPresence(user, online, lastSeen)
	}
}

// sendDueLocked sends, in order, the held counts whose event has been
// dispatched. f.mu must be held.
func (f *Feed) sendDueLocked() {
	if len(f.held) == 0 || f.sink == nil {
		return
	}
	kept := f.held[:0]
	for _, u := range f.held {
		if f.dispatched.Covers(u.seq) {
			f.sendLocked(u)
		} else {
			kept = append(kept, u)
		}
	}
	clear(f.held[len(kept):])
	f.held = kept
}
