// Package chat holds inbox's domain operations — send, type, read, create and
// change conversations, profiles and jobs — shared by the WebSocket edge and the
// HTTP API: one place validates input, checks membership against the in-memory
// Directory and appends the event.
package chat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"inbox/eventstore"
)

// Error codes, shared by the socket's ERROR frames and the HTTP API's error bodies.
const (
	CodeBadRequest  = "bad_request"
	CodeForbidden   = "forbidden"
	CodeNotFound    = "not_found"
	CodeConflict    = "conflict"
	CodeRateLimited = "rate_limited"
	CodeTooLarge    = "too_large"
	CodeUnavailable = "unavailable"
	CodeInternal    = "internal"
)

// Error is a coded, client-facing error.
type Error struct {
	Code string
	Msg  string
	Err  error // cause, not shown to clients
}

func (e *Error) Error() string { return e.Msg }
func (e *Error) Unwrap() error { return e.Err }

// Errorf returns a coded error.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// CodeOf returns err's code: its own if it is an *Error, else unavailable for
// an unreachable stream, else internal.
func CodeOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	if errors.Is(err, eventstore.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
		return CodeUnavailable
	}
	return CodeInternal
}

// Appender stores events; *eventstore.Store is one.
type Appender interface {
	Append(ctx context.Context, e eventstore.Event, opts ...eventstore.AppendOption) (uint64, error)
}

// MessageLocator reads single events back from the stream: which subject a
// sequence was stored under, so a read receipt can be checked against the
// stream itself, and the event a deduplicated append points at;
// *eventstore.Store is one.
type MessageLocator interface {
	SubjectOf(ctx context.Context, seq uint64) (string, error)
	Get(ctx context.Context, seq uint64) (eventstore.Stored, error)
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
	// MessageConversations returns the last sequence the read model applied
	// and the conversation of each of ids that is a message: an id at or
	// below applied that is missing is not a message.
	MessageConversations(ctx context.Context, ids []int64) (applied uint64, convs map[int64]int64, err error)
}

// DefaultIdempotencyWindow is how long a client's idempotency key is
// remembered by default (Limits.IdempotencyWindow).
const DefaultIdempotencyWindow = 24 * time.Hour

// Limits bound what a client may send.
type Limits struct {
	MaxText        int           // characters in a message (default 4000)
	MaxReadIDs     int           // message_ids in one receipt (default 100)
	TypingInterval time.Duration // the same typing state is appended about once per interval, ±25% at random (default: half of TypingTTL, at least TypingGap)
	TypingGap      time.Duration // at most one typing event per user and conversation per gap; a change of state sooner waits for it (default 1s)
	TypingTTL      time.Duration // a typing start expires this long after it was sent (default eventstore.DefaultTypingTTL; the stream's per-message TTL)
	SettleTimeout  time.Duration // how long an admin change waits to be visible locally (default 5s)
	// IdempotencyWindow is how long a request sent with a key (client_msg_id,
	// Idempotency-Key) is answered again instead of stored again (default
	// DefaultIdempotencyWindow). It needs a read model (SetReadModel);
	// without one a key lasts as long as the stream's duplicate window.
	IdempotencyWindow time.Duration
	// DuplicateWindow is the stream's Nats-Msg-Id window (default
	// eventstore.DefaultDuplicateWindow; a node sets its store's).
	DuplicateWindow time.Duration
}

func (l *Limits) defaults() {
	if l.MaxText <= 0 {
		l.MaxText = 4000
	}
	if l.MaxReadIDs <= 0 {
		l.MaxReadIDs = 100
	}
	if l.TypingTTL <= 0 {
		l.TypingTTL = eventstore.DefaultTypingTTL
	}
	if l.TypingGap <= 0 {
		l.TypingGap = time.Second
	}
	if l.TypingInterval <= 0 {
		// A start holds for TypingTTL: re-announcing it at half of that keeps
		// the indicator on for a user who keeps typing, at a fraction of the
		// appends of one per second.
		l.TypingInterval = max(l.TypingGap, l.TypingTTL/2)
	}
	if l.SettleTimeout <= 0 {
		l.SettleTimeout = 5 * time.Second
	}
	if l.IdempotencyWindow <= 0 {
		l.IdempotencyWindow = DefaultIdempotencyWindow
	}
	if l.DuplicateWindow <= 0 {
		l.DuplicateWindow = eventstore.DefaultDuplicateWindow
	}
}

// Service validates and appends.
type Service struct {
	store  Appender
	locate MessageLocator
	reads  ReadModel // nil: keys last the duplicate window, receipts are checked against the stream
	dir    *Directory
	limits Limits
	now    func() time.Time
	rand   func() float64 // in [0, 1): spreads typing repeats (repeatAfter)
	log    *slog.Logger

	typingMu     sync.Mutex
	typing       map[typingKey]typingState
	typingClosed bool // Close was called: no more deferred typing events

	lastWrite sync.Map // user id -> uint64: the user's latest acknowledged append on this node

	// Ids handed out by this node, so concurrent creations here never race for
	// the same id; another node's claim is caught by ExpectNew and retried.
	nextConv, nextJob atomic.Int64
}

type typingKey struct {
	user string
	conv int64
}

type typingState struct {
	at      time.Time      // when the last event was admitted
	on      bool           // its state
	repeat  time.Duration  // the same state again is admitted this long after at
	pending *pendingTyping // appends the other state once TypingGap has passed
}

type pendingTyping struct{ t *time.Timer }

// NewService returns a Service appending to store and checking membership in dir.
func NewService(store Appender, locate MessageLocator, dir *Directory, limits Limits) *Service {
	limits.defaults()
	return &Service{
		store: store, locate: locate, dir: dir, limits: limits, now: time.Now, rand: rand.Float64,
		log: slog.New(slog.DiscardHandler), typing: make(map[typingKey]typingState),
	}
}

// SetLogger sets where the service logs what no caller hears of (a typing
// event it appends by itself that fails). Call it before using the service.
func (s *Service) SetLogger(l *slog.Logger) { s.log = l }

// SetReadModel makes the service keep idempotency keys for
// IdempotencyWindow and check read receipts against rm. Call it before
// using the service.
func (s *Service) SetReadModel(rm ReadModel) { s.reads = rm }

// Directory is the service's membership directory.
func (s *Service) Directory() *Directory { return s.dir }

// Limits are the service's limits, defaults filled in.
func (s *Service) Limits() Limits { return s.limits }

// Sender is who sends a message: the authenticated user and the profile from the token.
type Sender struct {
	UserID string
	Name   string  // from the token; a profile set by the service API wins
	Avatar *string // likewise
}

// SendRequest is one message to send.
type SendRequest struct {
	ConversationID int64
	Text           string
	Type           string // TEXT (default), IMAGE, FILE
	ClientMsgID    string // optional idempotency key: see Send
}

// Sent is what Send stored, or found stored.
type Sent struct {
	ID             uint64 // the message's id: its stream sequence
	ConversationID int64  // the conversation the message is in
	Replayed       bool   // an earlier request with the same key stored it: nothing new was
}

// Send validates and appends a message.
//
// A ClientMsgID is an idempotency key scoped to the sender and the
// conversation. A request with a key already used there within
// IdempotencyWindow stores nothing: if it is the same request (type and
// text) Send answers with the first one's message (Replayed), else with a
// conflict error. The key is looked up in the read model, which holds it
// once it has applied the first request; until then the stream's duplicate
// window (Nats-Msg-Id) catches the retry, and a read model lagging too far
// behind for that to hold answers unavailable.
func (s *Service) Send(ctx context.Context, from Sender, req SendRequest) (Sent, error) {
	if req.Type == "" {
		req.Type = eventstore.TypeText
	}
	if err := s.checkText(req.Text); err != nil {
		return Sent{}, err
	}
	if !eventstore.ValidMessageType(req.Type) {
		return Sent{}, Errorf(CodeBadRequest, "unknown message type %q (want TEXT, IMAGE or FILE)", req.Type)
	}
	if len(req.ClientMsgID) > 128 {
		return Sent{}, Errorf(CodeBadRequest, "client_msg_id longer than 128 bytes")
	}
	if err := s.checkMember(req.ConversationID, from.UserID); err != nil {
		return Sent{}, err
	}
	name, avatar := from.Name, from.Avatar
	if p, ok := s.dir.Profile(from.UserID); ok {
		name, avatar = p.Name, p.Avatar
	}
	if name == "" {
		name = from.UserID
	}
	ev := &eventstore.Message{
		ConversationID: req.ConversationID,
		SenderID:       from.UserID,
		SenderName:     name,
		SenderAvatar:   avatar,
		Text:           req.Text,
		MsgType:        req.Type,
		ClientMsgID:    req.ClientMsgID,
	}
	var sent Sent
	var err error
	if k, ok := ev.Keyed(); ok {
		sent, err = s.appendKeyed(ctx, ev, k)
	} else {
		sent.ConversationID = req.ConversationID
		sent.ID, err = s.append(ctx, ev)
	}
	if err != nil {
		return Sent{}, err
	}
	s.noteWrite(from.UserID, sent.ID)
	s.typingEnded(from.UserID, req.ConversationID)
	return sent, nil
}

// appendKeyed appends ev, sent with key k, unless a request with k was
// stored within the window: then it answers with that one (see Send).
func (s *Service) appendKeyed(ctx context.Context, ev eventstore.KeyedEvent, k eventstore.Keyed) (Sent, error) {
	if s.reads != nil {
		// The lookup below is complete for every request stored before the
		// read model's horizon; one stored after it is caught by the
		// stream's duplicate window as long as the horizon is within half
		// that window of now (the other half is for the append's own time
		// and clock skew between nodes and the stream).
		now := s.now()
		covered, err := s.reads.Covers(ctx, now.Add(-s.limits.DuplicateWindow/2))
		if err != nil {
			return Sent{}, &Error{Code: CodeUnavailable, Msg: "the event stream did not answer; nothing was stored", Err: err}
		}
		if !covered {
			return Sent{}, Errorf(CodeUnavailable, "this node's read model is behind the event stream, so a retry could not be told from a new request; nothing was stored, retry shortly")
		}
		rec, found, err := s.reads.KeyRecord(ctx, k.Key)
		if err != nil {
			return Sent{}, fmt.Errorf("look up idempotency key: %w", err)
		}
		if found && now.Sub(rec.At) < s.limits.IdempotencyWindow {
			sent, err := s.replay(k, rec.Keyed, rec.Seq)
			if err != nil {
				return Sent{}, err
			}
			// The answer names the conversation the message itself is in, so
			// the caller's check holds even against a wrong record.
			_, convs, err := s.reads.MessageConversations(ctx, []int64{int64(rec.Seq)})
			if err != nil {
				return Sent{}, fmt.Errorf("look up message %d of idempotency key: %w", rec.Seq, err)
			}
			sent.ConversationID = convs[int64(rec.Seq)]
			return sent, nil
		}
	}
	var dup bool
	seq, err := s.append(ctx, ev, eventstore.WithMsgID(k.MsgID()), eventstore.ReportDuplicate(&dup))
	if err != nil {
		return Sent{}, err
	}
	if !dup {
		return Sent{ID: seq, ConversationID: k.ConversationID}, nil
	}
	// The stream already holds an event with this key's message id: compare
	// it with this request.
	st, err := s.locate.Get(ctx, seq)
	if err != nil {
		return Sent{}, &Error{Code: CodeUnavailable, Msg: "the event stream did not answer; nothing was stored", Err: err}
	}
	ke, ok := st.Event.(eventstore.KeyedEvent)
	var stored eventstore.Keyed
	if ok {
		stored, ok = ke.Keyed()
	}
	if !ok || stored.Key != k.Key {
		return Sent{}, fmt.Errorf("message id %s was deduplicated against seq %d (%s), which is not that key's request", k.MsgID(), seq, st.Subject)
	}
	return s.replay(k, stored, seq)
}

// replay answers a request with key k from the request stored at seq with
// the same key: the same message, or a conflict if the request differs.
func (s *Service) replay(k, stored eventstore.Keyed, seq uint64) (Sent, error) {
	if stored.Op != k.Op || stored.Fingerprint != k.Fingerprint {
		return Sent{}, Errorf(CodeConflict, "key %q was already used in conversation %d for a different request (message %d); nothing was stored: use a new key",
			k.ClientKey, k.ConversationID, seq)
	}
	return Sent{ID: seq, ConversationID: stored.ConversationID, Replayed: true}, nil
}

// LastWrite is the sequence of user's latest acknowledged message or receipt on
// this node (0 if none): a read that must see the user's own writes waits for
// the read model to reach it.
func (s *Service) LastWrite(user string) uint64 {
	if v, ok := s.lastWrite.Load(user); ok {
		return v.(uint64)
	}
	return 0
}

func (s *Service) noteWrite(user string, seq uint64) {
	for {
		old, loaded := s.lastWrite.LoadOrStore(user, seq)
		if !loaded || old.(uint64) >= seq || s.lastWrite.CompareAndSwap(user, old, seq) {
			return
		}
	}
}

func (s *Service) checkText(text string) error {
	if text == "" {
		return Errorf(CodeBadRequest, "message text is empty")
	}
	if !utf8.ValidString(text) {
		return Errorf(CodeBadRequest, "message text is not valid UTF-8")
	}
	if n := utf8.RuneCountInString(text); n > s.limits.MaxText {
		return Errorf(CodeTooLarge, "message text is %d characters, the limit is %d", n, s.limits.MaxText)
	}
	return nil
}

func (s *Service) checkMember(conv int64, user string) error {
	if !eventstore.ValidID(conv) {
		return Errorf(CodeBadRequest, "conversation_id must be a positive integer up to %d (2^53−1)", int64(eventstore.MaxID))
	}
	if !s.dir.IsMember(conv, user) {
		if !s.dir.Exists(conv) {
			return Errorf(CodeNotFound, "conversation %d not found", conv)
		}
		return Errorf(CodeForbidden, "not a member of conversation %d", conv)
	}
	return nil
}

// Typing appends a typing event unless the user sent the same state for this
// conversation too recently (repeatAfter); then it returns 0 and no error.
// It is AdmitTyping followed by AppendTyping.
func (s *Service) Typing(ctx context.Context, user string, conv int64, isTyping bool) (uint64, error) {
	ev, err := s.AdmitTyping(user, conv, isTyping)
	if ev == nil || err != nil {
		return 0, err
	}
	return s.AppendTyping(ctx, ev)
}

// AdmitTyping checks a typing frame and applies the throttle without blocking:
// it returns the event to append now, or nil. At most one event per user and
// conversation is admitted per TypingGap, and the same state again only after
// TypingInterval ±25% (repeatAfter). A change of state (started → stopped)
// sooner than TypingGap is appended by the service itself once the gap has
// passed, unless the user changes back meanwhile: the latest state wins and
// none is lost.
//
// A start carries ExpiresAt (now + TypingTTL): receivers treat the user as
// stopped from then on unless a later start extends it, so a start with no
// follow-up ends by itself. A client that keeps typing re-sends starts; about
// one per TypingInterval (by default half the expiry) is admitted, each
// pushing the expiry forward.
func (s *Service) AdmitTyping(user string, conv int64, isTyping bool) (*eventstore.Typing, error) {
	if err := s.checkMember(conv, user); err != nil {
		return nil, err
	}
	k := typingKey{user, conv}
	now := s.now()
	s.typingMu.Lock()
	defer s.typingMu.Unlock()
	last, ok := s.typing[k]
	switch {
	case ok && last.pending != nil:
		if isTyping == last.on { // changed back: nothing to announce
			last.pending.t.Stop()
			last.pending = nil
			s.typing[k] = last
		}
		return nil, nil
	case ok && last.on == isTyping && now.Sub(last.at) < last.repeat:
		return nil, nil
	case ok && now.Sub(last.at) < s.limits.TypingGap:
		if s.typingClosed {
			return nil, nil
		}
		p := &pendingTyping{}
		p.t = time.AfterFunc(s.limits.TypingGap-now.Sub(last.at), func() { s.typingDue(k, p) })
		last.pending = p
		s.typing[k] = last
		return nil, nil
	}
	if len(s.typing) > 100_000 {
		s.pruneTypingLocked(now)
	}
	return s.admitTypingLocked(k, isTyping, now), nil
}

func (s *Service) admitTypingLocked(k typingKey, isTyping bool, now time.Time) *eventstore.Typing {
	s.typing[k] = typingState{at: now, on: isTyping, repeat: s.repeatAfter()}
	ev := &eventstore.Typing{ConversationID: k.conv, UserID: k.user, IsTyping: isTyping}
	if isTyping {
		ev.ExpiresAt = now.Add(s.limits.TypingTTL).UTC()
	}
	return ev
}

// Close cancels the typing changes still waiting for their gap. Call it
// before the store closes; the service stays usable otherwise.
func (s *Service) Close() {
	s.typingMu.Lock()
	defer s.typingMu.Unlock()
	s.typingClosed = true
	for k, st := range s.typing {
		if st.pending != nil {
			st.pending.t.Stop()
			st.pending = nil
			s.typing[k] = st
		}
	}
}

// repeatAfter is how long after an admitted typing event the same state is
// admitted again: TypingInterval ±25% at random, never under TypingGap.
// Without the spread, users who start typing together (a reconnect wave, a
// storm) would repeat together every interval forever: one burst of appends
// each interval instead of an even flow. The latest repeat, 1.25 intervals
// (6.25 s by default), still extends a start well before its TTL (10 s).
func (s *Service) repeatAfter() time.Duration {
	i := s.limits.TypingInterval
	return max(s.limits.TypingGap, i*3/4+time.Duration(s.rand()*float64(i/2)))
}

// typingDue appends a change of state that waited for TypingGap (p).
func (s *Service) typingDue(k typingKey, p *pendingTyping) {
	s.typingMu.Lock()
	last, ok := s.typing[k]
	if !ok || last.pending != p || s.typingClosed {
		s.typingMu.Unlock()
		return // cancelled
	}
	ev := s.admitTypingLocked(k, !last.on, s.now())
	s.typingMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), s.limits.SettleTimeout)
	defer cancel()
	if _, err := s.append(ctx, ev); err != nil {
		s.log.Warn("deferred typing event not appended", "user_id", k.user, "conversation_id", k.conv, "is_typing", ev.IsTyping, "err", err)
	}
}

// typingEnded notes that user's message in conv ended its typing indicator
// there (receivers clear it on a message, docs/protocol.md). So the next
// start is a change of state, announced within TypingGap, and not a repeat
// held back for TypingInterval while receivers show nobody typing. A change
// still waiting for its gap is moot and dropped.
func (s *Service) typingEnded(user string, conv int64) {
	k := typingKey{user, conv}
	s.typingMu.Lock()
	defer s.typingMu.Unlock()
	last, ok := s.typing[k]
	if !ok || (!last.on && last.pending == nil) {
		return
	}
	if last.pending != nil {
		last.pending.t.Stop()
		last.pending = nil
	}
	last.on = false
	s.typing[k] = last
}

// AppendTyping appends a typing event AdmitTyping returned.
func (s *Service) AppendTyping(ctx context.Context, ev *eventstore.Typing) (uint64, error) {
	return s.append(ctx, ev)
}

func (s *Service) pruneTypingLocked(now time.Time) {
	for k, st := range s.typing {
		if st.pending == nil && now.Sub(st.at) >= st.repeat {
			delete(s.typing, k)
		}
	}
}

// Read appends a read receipt. upTo and every id in ids must be messages of
// conv; the receipt's watermark is the highest of them.
func (s *Service) Read(ctx context.Context, user string, conv int64, upTo int64, ids []int64) (uint64, error) {
	if err := s.checkMember(conv, user); err != nil {
		return 0, err
	}
	if upTo == 0 && len(ids) == 0 {
		return 0, Errorf(CodeBadRequest, "a READ needs up_to or message_ids")
	}
	if len(ids) > s.limits.MaxReadIDs {
		return 0, Errorf(CodeBadRequest, "%d message_ids in one receipt, the limit is %d", len(ids), s.limits.MaxReadIDs)
	}
	check := append([]int64{}, ids...)
	if upTo != 0 {
		check = append(check, upTo)
	}
	for _, id := range check {
		if !eventstore.ValidID(id) {
			return 0, Errorf(CodeBadRequest, "message id %d is not a positive integer up to %d (2^53−1)", id, int64(eventstore.MaxID))
		}
	}
	// Ids the read model has applied are checked in one query; only newer
	// ones (sent since) are looked up in the stream, one by one.
	var applied uint64
	var convs map[int64]int64
	if s.reads != nil {
		var err error
		if applied, convs, err = s.reads.MessageConversations(ctx, check); err != nil {
			return 0, fmt.Errorf("check read receipt: %w", err)
		}
	}
	want := eventstore.ConvSubject(conv, eventstore.KindMessage)
	mark := upTo
	for _, id := range check {
		in, err := s.messageIn(ctx, id, conv, want, applied, convs)
		if err != nil {
			return 0, err
		}
		if !in {
			return 0, Errorf(CodeNotFound, "message %d is not in conversation %d", id, conv)
		}
		mark = max(mark, id)
	}
	seq, err := s.append(ctx, &eventstore.Read{ConversationID: conv, UserID: user, UpTo: mark, MessageIDs: ids})
	if err == nil {
		s.noteWrite(user, seq)
	}
	return seq, err
}

// messageIn reports whether message id is in conv: from convs if the read
// model has applied id, else from the stream's subject for it (want).
func (s *Service) messageIn(ctx context.Context, id, conv int64, want string, applied uint64, convs map[int64]int64) (bool, error) {
	if uint64(id) <= applied {
		c, ok := convs[id]
		return ok && c == conv, nil
	}
	subj, err := s.locate.SubjectOf(ctx, uint64(id))
	if errors.Is(err, eventstore.ErrNotFound) {
		return false, Errorf(CodeNotFound, "message %d not found", id)
	}
	if err != nil {
		return false, &Error{Code: CodeUnavailable, Msg: "the event stream did not answer", Err: err}
	}
	return subj == want, nil
}

// CreateConversation creates a conversation with id, or with the next free id
// when id is 0, and returns the id and the event's sequence. An id that exists
// is ErrExists (code conflict).
func (s *Service) CreateConversation(ctx context.Context, id int64, members []eventstore.Member) (int64, uint64, error) {
	if id < 0 || id > eventstore.MaxID {
		return 0, 0, Errorf(CodeBadRequest, "conversation id %d must be a positive integer up to %d (2^53−1)", id, int64(eventstore.MaxID))
	}
	if err := checkMembers(members); err != nil {
		return 0, 0, err
	}
	return s.claim(ctx, "conversation", id, &s.nextConv, s.dir.MaxConversationID, func(cid int64) eventstore.Event {
		return &eventstore.Created{ConversationID: cid, Members: members}
	})
}

// claim appends the creation event that ev makes for id, or for the next free
// id when id is 0, with ExpectNew: a taken explicit id is a conflict; a taken
// assigned id (another node got there first) is retried with the next one.
func (s *Service) claim(ctx context.Context, what string, id int64, next *atomic.Int64, seen func() int64, ev func(int64) eventstore.Event) (int64, uint64, error) {
	for attempt := 0; ; attempt++ {
		cid := id
		if cid == 0 {
			var ok bool
			if cid, ok = nextID(next, seen()); !ok {
				return 0, 0, Errorf(CodeConflict, "the highest %s id is already %d (2^53−1), the largest allowed; create with an explicit free id", what, int64(eventstore.MaxID))
			}
		}
		seq, err := s.appendSettled(ctx, ev(cid), eventstore.ExpectNew())
		switch {
		case err == nil:
			return cid, seq, nil
		case errors.Is(err, eventstore.ErrExists) && id == 0 && attempt < 20:
			continue
		case errors.Is(err, eventstore.ErrExists):
			return 0, 0, &Error{Code: CodeConflict, Msg: fmt.Sprintf("%s %d already exists", what, cid), Err: err}
		default:
			return 0, 0, err
		}
	}
}

// nextID hands out an id above both seen (the highest id in the directory) and
// every id this node handed out before. It reports false, and never wraps,
// once that would pass eventstore.MaxID.
func nextID(next *atomic.Int64, seen int64) (int64, bool) {
	for {
		cur := next.Load()
		last := max(cur, seen)
		if last >= eventstore.MaxID {
			return 0, false
		}
		if next.CompareAndSwap(cur, last+1) {
			return last + 1, true
		}
	}
}

// checkUserID refuses a malformed user id and a reserved one (system
// messages' sender): what names it ("member id") starts the error.
func checkUserID(what, id string) error {
	if !eventstore.ValidUserID(id) {
		return Errorf(CodeBadRequest, "%s %q must match [A-Za-z0-9_-]{1,64}", what, id)
	}
	if eventstore.ReservedUserID(id) {
		return Errorf(CodeBadRequest, "%s %q is reserved for the service", what, id)
	}
	return nil
}

func checkMembers(members []eventstore.Member) error {
	if len(members) == 0 {
		return Errorf(CodeBadRequest, "a conversation needs at least one member")
	}
	seen := make(map[string]bool, len(members))
	for _, m := range members {
		if err := checkUserID("member id", m.UserID); err != nil {
			return err
		}
		if !eventstore.ValidRole(m.Role) {
			return Errorf(CodeBadRequest, "role %q of %s must be client, worker or member", m.Role, m.UserID)
		}
		if seen[m.UserID] {
			return Errorf(CodeBadRequest, "member %s listed twice", m.UserID)
		}
		seen[m.UserID] = true
	}
	return nil
}

// AddMember adds user to conv with role (or changes its role).
func (s *Service) AddMember(ctx context.Context, conv int64, m eventstore.Member) (uint64, error) {
	if err := checkMembers([]eventstore.Member{m}); err != nil {
		return 0, err
	}
	if !s.dir.Exists(conv) {
		return 0, Errorf(CodeNotFound, "conversation %d not found", conv)
	}
	return s.appendSettled(ctx, &eventstore.MemberChanged{ConversationID: conv, Op: eventstore.OpAdd, UserID: m.UserID, Role: m.Role})
}

// RemoveMember removes user from conv.
func (s *Service) RemoveMember(ctx context.Context, conv int64, user string) (uint64, error) {
	if !s.dir.Exists(conv) {
		return 0, Errorf(CodeNotFound, "conversation %d not found", conv)
	}
	if !s.dir.IsMember(conv, user) {
		return 0, Errorf(CodeNotFound, "%s is not a member of conversation %d", user, conv)
	}
	return s.appendSettled(ctx, &eventstore.MemberChanged{ConversationID: conv, Op: eventstore.OpRemove, UserID: user})
}

// SetProfile sets a user's display name and avatar URL.
func (s *Service) SetProfile(ctx context.Context, user, name string, avatar *string) (uint64, error) {
	if err := checkUserID("user id", user); err != nil {
		return 0, err
	}
	if name == "" || utf8.RuneCountInString(name) > 200 || !utf8.ValidString(name) {
		return 0, Errorf(CodeBadRequest, "name must be 1 to 200 characters")
	}
	if avatar != nil && len(*avatar) > 2048 {
		return 0, Errorf(CodeBadRequest, "avatar URL longer than 2048 bytes")
	}
	return s.appendSettled(ctx, &eventstore.Profile{UserID: user, Name: name, Avatar: avatar})
}

// PostSystem appends a system message (sender "system", type SYSTEM) to conv.
func (s *Service) PostSystem(ctx context.Context, conv int64, text string) (uint64, error) {
	if err := s.checkText(text); err != nil {
		return 0, err
	}
	if !s.dir.Exists(conv) {
		return 0, Errorf(CodeNotFound, "conversation %d not found", conv)
	}
	return s.append(ctx, &eventstore.Message{
		ConversationID: conv, SenderID: eventstore.SystemSender, SenderName: "System",
		Text: text, MsgType: eventstore.TypeSystem,
	})
}

// CreateJob creates a job followed by members, with id or the next free one.
func (s *Service) CreateJob(ctx context.Context, id int64, members []string) (int64, uint64, error) {
	if id < 0 || id > eventstore.MaxID {
		return 0, 0, Errorf(CodeBadRequest, "job id %d must be a positive integer up to %d (2^53−1)", id, int64(eventstore.MaxID))
	}
	for _, u := range members {
		if err := checkUserID("member id", u); err != nil {
			return 0, 0, err
		}
	}
	return s.claim(ctx, "job", id, &s.nextJob, s.dir.MaxJobID, func(jid int64) eventstore.Event {
		return &eventstore.Job{JobID: jid, Members: members}
	})
}

// PostJobStatus appends a job status update.
func (s *Service) PostJobStatus(ctx context.Context, job int64, status string, detail json.RawMessage) (uint64, error) {
	if !s.dir.JobExists(job) {
		return 0, Errorf(CodeNotFound, "job %d not found", job)
	}
	if status == "" || len(status) > 64 {
		return 0, Errorf(CodeBadRequest, "status must be 1 to 64 bytes")
	}
	if len(detail) > 0 && !json.Valid(detail) {
		return 0, Errorf(CodeBadRequest, "detail is not valid JSON")
	}
	return s.append(ctx, &eventstore.JobStatus{JobID: job, Status: status, Detail: detail})
}

func (s *Service) append(ctx context.Context, ev eventstore.Event, opts ...eventstore.AppendOption) (uint64, error) {
	seq, err := s.store.Append(ctx, ev, opts...)
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
