// Package chat holds inbox's domain operations — send, type, read, create and
// change conversations, profiles and jobs — shared by the WebSocket edge and the
// HTTP API: one place validates input, checks membership against the in-memory
// Directory and appends the event.
package chat

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"inbox/eventstore"
)

// Appender stores events; *eventstore.Store is one.
type Appender interface {
	Append(ctx context.Context, e eventstore.Event, opts ...eventstore.AppendOption) (uint64, error)
}

// AsyncAppender is an Appender that can also append without waiting for
// the stream (typing events); *eventstore.Store is one. With a store that
// is not one, the service waits.
type AsyncAppender interface {
	AppendAsync(e eventstore.Event, done func(uint64, error), opts ...eventstore.AppendOption) error
}

var _ AsyncAppender = (*eventstore.Store)(nil)

// MessageLocator reads single events back from the stream: which subject a
// sequence was stored under, so a read receipt can be checked against the
// stream itself, and the event a deduplicated append points at;
// *eventstore.Store is one.
type MessageLocator interface {
	SubjectOf(ctx context.Context, seq uint64) (string, error)
	Get(ctx context.Context, seq uint64) (eventstore.Stored, error)
	// LastSeqOf is the last sequence stored on filter (0: none): after an
	// append expecting another one (eventstore.ErrStale), the read model is
	// waited for up to it.
	LastSeqOf(ctx context.Context, filter string) (uint64, error)
}

// ReadModel is what the service asks the read model: the durable record of
// requests sent with an idempotency key, and which conversation a message is
// in. On this build every node keeps a read model of the whole stream and its
// projector (*projections.Projector) is one.
type ReadModel interface {
	// Covers reports whether the read model holds every event the stream
	// stored before t.
	Covers(ctx context.Context, t time.Time) (bool, error)
	// KeyRecord returns the latest request recorded under k; found is false
	// if there is none.
	KeyRecord(ctx context.Context, k eventstore.Key) (rec eventstore.KeyRecord, found bool, err error)
	// MessageConversations returns what the read model applied from each
	// partition and the conversation of each of ids that is a message: an
	// id the cursor covers that is missing is not a message.
	MessageConversations(ctx context.Context, ids []int64) (applied eventstore.Cursor, convs map[int64]int64, err error)
	// MessageState returns message id as the read model holds it, with
	// user's reactions to it, and what it applied from each partition.
	MessageState(ctx context.Context, id int64, user string) (st eventstore.MessageState, found bool, applied eventstore.Cursor, err error)
	// WaitFor blocks until the read model has applied the event with id
	// (in its partition) or ctx ends.
	WaitFor(ctx context.Context, id uint64) error
}

// Defaults for zero Limits fields (see defaults, the one place they are set).
const (
	DefaultMaxText           = 4000
	DefaultMaxReadIDs        = 100
	DefaultTypingGap         = time.Second
	DefaultSettleTimeout     = 5 * time.Second
	DefaultIdempotencyWindow = 24 * time.Hour
)

// Limits configure a Service: what a client may send, and how long the
// service waits and remembers. Zero fields take the defaults (WithDefaults).
type Limits struct {
	MaxText        int           // characters in a message (default DefaultMaxText)
	MaxReadIDs     int           // message_ids in one receipt (default DefaultMaxReadIDs)
	TypingInterval time.Duration // the same typing state is appended about once per interval, ±25% at random (default: half of TypingTTL, at least TypingGap)
	TypingGap      time.Duration // at most one typing event per user and conversation per gap; a change of state sooner waits for it (default DefaultTypingGap)
	TypingTTL      time.Duration // a typing start expires this long after it was sent (default eventstore.DefaultTypingTTL; the stream's per-message TTL)
	SettleTimeout  time.Duration // how long an admin change waits to be visible locally (default DefaultSettleTimeout)
	// IdempotencyWindow is how long a request sent with a key (client_msg_id,
	// Idempotency-Key) is answered again instead of stored again (default
	// DefaultIdempotencyWindow). It needs a read model (Deps.ReadModel);
	// without one a key lasts as long as the stream's duplicate window.
	IdempotencyWindow time.Duration
	// DuplicateWindow is the stream's Nats-Msg-Id window (default
	// eventstore.DefaultDuplicateWindow; a node sets its store's).
	DuplicateWindow time.Duration
	// EditWindow is how long after sending a sender may edit or delete a
	// message (default DefaultEditWindow); the service API has none.
	EditWindow time.Duration
}

// WithDefaults returns l with every zero field set to its default: the
// limits New gives a Service.
func (l Limits) WithDefaults() Limits {
	if l.MaxText <= 0 {
		l.MaxText = DefaultMaxText
	}
	if l.MaxReadIDs <= 0 {
		l.MaxReadIDs = DefaultMaxReadIDs
	}
	if l.TypingTTL <= 0 {
		l.TypingTTL = eventstore.DefaultTypingTTL
	}
	if l.TypingGap <= 0 {
		l.TypingGap = DefaultTypingGap
	}
	if l.TypingInterval <= 0 {
		// A start holds for TypingTTL: re-announcing it at half of that keeps
		// the indicator on for a user who keeps typing, at a fraction of the
		// appends of one per second.
		l.TypingInterval = max(l.TypingGap, l.TypingTTL/2)
	}
	if l.SettleTimeout <= 0 {
		l.SettleTimeout = DefaultSettleTimeout
	}
	if l.IdempotencyWindow <= 0 {
		l.IdempotencyWindow = DefaultIdempotencyWindow
	}
	if l.DuplicateWindow <= 0 {
		l.DuplicateWindow = eventstore.DefaultDuplicateWindow
	}
	if l.EditWindow <= 0 {
		l.EditWindow = DefaultEditWindow
	}
	return l
}

// Service validates and appends.
type Service struct {
	store  Appender
	locate MessageLocator
	reads  ReadModel // nil: keys last the duplicate window, receipts are checked against the stream
	gate   Gate      // nil: nothing is shed
	dir    *Directory
	limits Limits
	now    func() time.Time
	rand   func() float64 // in [0, 1): spreads typing repeats (repeatAfter)
	log    *slog.Logger

	// The service's own goroutines (typing changes waiting for their gap,
	// typing.go) append with ctx; Close cancels it and waits for timers.
	ctx    context.Context
	cancel context.CancelFunc
	timers sync.WaitGroup

	typingMu sync.Mutex
	typing   map[typingKey]typingState

	lastWrite sync.Map // user id -> *eventstore.Cursor: the user's latest acknowledged append in each partition, on this node

	// Ids handed out by this node, so concurrent creations here never race for
	// the same id; another node's claim is caught by ExpectNew and retried.
	nextConv, nextJob atomic.Int64
}

// Deps are the parts a Service is built on. Store, Locator and Directory
// are required.
type Deps struct {
	Store     Appender
	Locator   MessageLocator
	Directory *Directory // membership, fed by the stream (feed)
	// ReadModel, if set, keeps idempotency keys for IdempotencyWindow and
	// checks read receipts in one query; nil: keys last the stream's
	// duplicate window and receipts are checked against the stream.
	ReadModel ReadModel
	// Gate, if set, sheds users' writes (messages, receipts, changes,
	// typing) at the door when the node cannot keep up (gate.go); nil:
	// every write is taken on.
	Gate Gate
	// Logger hears what no caller does (a typing event the service appends
	// by itself that fails); nil: discard.
	Logger *slog.Logger
}

// New returns a Service; zero limits take their defaults. It panics if a
// required dependency is missing: that is a wiring mistake, not a runtime
// condition.
func New(limits Limits, d Deps) *Service {
	switch {
	case d.Store == nil:
		panic("chat: no store")
	case d.Locator == nil:
		panic("chat: no message locator")
	case d.Directory == nil:
		panic("chat: no directory")
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Service{
		store: d.Store, locate: d.Locator, dir: d.Directory, reads: d.ReadModel, gate: d.Gate,
		limits: limits.WithDefaults(), now: time.Now, rand: rand.Float64,
		log: d.Logger, typing: make(map[typingKey]typingState),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s
}

// Close stops what the service runs by itself: typing changes still waiting
// for their gap are dropped, one being appended is cancelled, and Close
// returns once none is left. Call it before the store closes; requests are
// still served afterwards, but nothing is deferred any more. Close may be
// called more than once.
func (s *Service) Close() {
	s.cancel()
	s.closeTyping()
}

// Directory is the service's membership directory.
func (s *Service) Directory() *Directory { return s.dir }

// Limits are the service's limits, defaults filled in.
func (s *Service) Limits() Limits { return s.limits }

func (s *Service) append(ctx context.Context, ev eventstore.Event, opts ...eventstore.AppendOption) (uint64, error) {
	return appended(s.store.Append(ctx, ev, opts...))
}

// appended is an append's result as the service answers it.
func appended(seq uint64, err error) (uint64, error) {
	if err != nil {
		if errors.Is(err, eventstore.ErrExists) {
			return 0, err
		}
		return 0, &Error{Code: CodeUnavailable, Msg: "the event stream did not acknowledge; nothing was stored", Err: err}
	}
	return seq, nil
}

// appendSettled appends a membership-like event and waits (bounded) until this
// node's directory has applied it, so the caller's next request sees it.
func (s *Service) appendSettled(ctx context.Context, ev eventstore.Event, opts ...eventstore.AppendOption) (uint64, error) {
	seq, err := s.append(ctx, ev, opts...)
	if err != nil {
		return 0, err
	}
	wctx, cancel := context.WithTimeout(ctx, s.limits.SettleTimeout)
	defer cancel()
	if err := s.dir.WaitFor(wctx, seq); err != nil {
		return seq, &Error{Code: CodeUnavailable, Msg: "stored at seq " + strconv.FormatUint(seq, 10) + " but not yet visible on this node", Err: err}
	}
	return seq, nil
}
