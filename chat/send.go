package chat

import (
	"context"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"inbox/admission"
	"inbox/eventstore"
)

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
	if err := s.admit(ctx, admission.Message); err != nil {
		return Sent{}, err
	}
	w := s.begin(ctx)
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
	w.done(sent.ID)
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
		now := s.now()
		if err := s.keysCovered(ctx, now); err != nil {
			return Sent{}, err
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
	stored, err := s.storedKeyed(ctx, k, seq)
	if err != nil {
		return Sent{}, err
	}
	return s.replay(k, stored, seq)
}

// storedKeyed returns the request stored at seq, against which the stream
// deduplicated a request with key k: it is compared with this one.
func (s *Service) storedKeyed(ctx context.Context, k eventstore.Keyed, seq uint64) (eventstore.Keyed, error) {
	st, err := s.locate.Get(ctx, seq)
	if errors.Is(err, eventstore.ErrNotFound) {
		return eventstore.Keyed{}, erasedKey(k, seq)
	}
	if err != nil {
		return eventstore.Keyed{}, &Error{Code: CodeUnavailable, Msg: "the event stream did not answer; nothing was stored", Err: err}
	}
	ke, ok := st.Event.(eventstore.KeyedEvent)
	var stored eventstore.Keyed
	if ok {
		stored, ok = ke.Keyed()
	}
	if !ok || stored.Key != k.Key {
		return eventstore.Keyed{}, fmt.Errorf("message id %s was deduplicated against seq %d (%s), which is not that key's request", k.MsgID(), seq, st.Subject)
	}
	return stored, nil
}

// erasedKey refuses a retry whose key the stream's duplicate window still
// holds for an event that is gone (erased, expired): it is never answered
// with that event, nor stored again under the same key.
func erasedKey(k eventstore.Keyed, seq uint64) error {
	return Errorf(CodeConflict, "key %q was used in conversation %d for event %d, which has been erased; nothing was stored: use a new key",
		k.ClientKey, k.ConversationID, seq)
}

// keysCovered refuses a keyed request while the read model's record of keys
// cannot be trusted: its lookup is complete for every request stored before
// the read model's horizon; one stored after it is caught by the stream's
// duplicate window as long as the horizon is within half that window of now
// (the other half is for the append's own time and clock skew between nodes
// and the stream).
func (s *Service) keysCovered(ctx context.Context, now time.Time) error {
	covered, err := s.reads.Covers(ctx, now.Add(-s.limits.DuplicateWindow/2))
	if err != nil {
		return &Error{Code: CodeUnavailable, Msg: "the event stream did not answer; nothing was stored", Err: err}
	}
	if !covered {
		return Errorf(CodeUnavailable, "this node's read model is behind the event stream, so a retry could not be told from a new request; nothing was stored, retry shortly")
	}
	return nil
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

// LastWrite is, in each partition, the sequence of user's latest
// acknowledged message or receipt on this node (nil if none): a read that
// must see the user's own writes waits for the read model to reach it, in
// the partitions the read covers.
func (s *Service) LastWrite(user string) eventstore.Cursor {
	if v, ok := s.lastWrite.Load(user); ok {
		return *v.(*eventstore.Cursor)
	}
	return nil
}

func (s *Service) noteWrite(user string, id uint64) {
	for {
		old, loaded := s.lastWrite.Load(user)
		if loaded && old.(*eventstore.Cursor).Covers(id) {
			return
		}
		next := eventstore.NewCursor(s.dir.Partitions())
		if loaded {
			next = old.(*eventstore.Cursor).Clone()
		}
		next.Advance(id)
		if !loaded {
			if _, raced := s.lastWrite.LoadOrStore(user, &next); !raced {
				return
			}
			continue
		}
		if s.lastWrite.CompareAndSwap(user, old, &next) {
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
	if err := s.admit(ctx, admission.Message); err != nil {
		return 0, err
	}
	w := s.begin(ctx)
	var seq uint64
	defer func() { w.done(seq) }()
	// Ids the read model has applied are checked in one query; only newer
	// ones (sent since) are looked up in the stream, one by one.
	var applied eventstore.Cursor
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
func (s *Service) messageIn(ctx context.Context, id, conv int64, want string, applied eventstore.Cursor, convs map[int64]int64) (bool, error) {
	if applied != nil && applied.Covers(uint64(id)) {
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
