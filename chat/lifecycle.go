package chat

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"inbox/admission"
	"inbox/eventstore"
)

// DefaultEditWindow is how long after sending a sender may edit or delete a
// message by default (Limits.EditWindow).
const DefaultEditWindow = 48 * time.Hour

// Actor is who asks for a change to a message: a user, or the service API
// (Admin), which may edit or delete any message at any time and is not a
// member of anything.
type Actor struct {
	UserID string
	Admin  bool
}

// Admin is the service API acting: its events carry eventstore.SystemSender.
var Admin = Actor{UserID: eventstore.SystemSender, Admin: true}

// EditRequest replaces the text of a message.
type EditRequest struct {
	ConversationID int64
	MessageID      int64
	Text           string
	ClientMsgID    string // optional idempotency key, as for a send
}

// DeleteRequest deletes a message.
type DeleteRequest struct {
	ConversationID int64
	MessageID      int64
	ClientMsgID    string
}

// ReactRequest adds (On) or removes a reaction.
type ReactRequest struct {
	ConversationID int64
	MessageID      int64
	Emoji          string
	On             bool
	ClientMsgID    string
}

// Changed is what a change to a message stored, or found stored.
type Changed struct {
	Seq            uint64 // the event's stream sequence
	ConversationID int64
	MessageID      int64
	At             time.Time // when it was made (an edit's edited_at)
	Replayed       bool      // an earlier request with the same key stored it
}

// Edit replaces the text of a message: its sender may, within EditWindow of
// sending it; the service API may edit any message. A deleted message
// cannot be edited.
func (s *Service) Edit(ctx context.Context, by Actor, req EditRequest) (Changed, error) {
	if err := s.checkText(req.Text); err != nil {
		return Changed{}, err
	}
	ev := &eventstore.Edit{ConversationID: req.ConversationID, MessageID: req.MessageID, UserID: by.UserID, Text: req.Text, ClientMsgID: req.ClientMsgID}
	return s.change(ctx, by, ev, &ev.Header, func(st eventstore.MessageState) error {
		return s.mayChange(by, st, "edit")
	})
}

// Delete deletes a message: readers see it without text from then on. The
// same rules as Edit hold.
func (s *Service) Delete(ctx context.Context, by Actor, req DeleteRequest) (Changed, error) {
	ev := &eventstore.Delete{ConversationID: req.ConversationID, MessageID: req.MessageID, UserID: by.UserID, ClientMsgID: req.ClientMsgID}
	return s.change(ctx, by, ev, &ev.Header, func(st eventstore.MessageState) error {
		return s.mayChange(by, st, "delete")
	})
}

// React adds or removes user's reaction to a message of a conversation user
// is in: one emoji (ValidEmoji), at most eventstore.MaxReactionsPerUser
// distinct ones per user and message; not on a deleted message.
func (s *Service) React(ctx context.Context, user string, req ReactRequest) (Changed, error) {
	if !ValidEmoji(req.Emoji) {
		return Changed{}, Errorf(CodeBadRequest, "emoji %.40q is not one emoji (one grapheme cluster of emoji code points, at most 32 bytes)", req.Emoji)
	}
	ev := &eventstore.React{ConversationID: req.ConversationID, MessageID: req.MessageID, UserID: user, Emoji: req.Emoji, On: req.On, ClientMsgID: req.ClientMsgID}
	return s.change(ctx, Actor{UserID: user}, ev, &ev.Header, func(st eventstore.MessageState) error {
		if st.Deleted {
			return Errorf(CodeNotFound, "message %d was deleted", st.ID)
		}
		if req.On && !slices.Contains(st.Reactions, req.Emoji) && len(st.Reactions) >= eventstore.MaxReactionsPerUser {
			return Errorf(CodeBadRequest, "at most %d different reactions per user on one message; remove one first", eventstore.MaxReactionsPerUser)
		}
		return nil
	})
}

// mayChange checks an edit or a deletion (what) of the message in st by by.
func (s *Service) mayChange(by Actor, st eventstore.MessageState, what string) error {
	switch {
	case st.Deleted:
		return Errorf(CodeNotFound, "message %d was deleted", st.ID)
	case by.Admin:
		return nil
	case st.SenderID != by.UserID:
		return Errorf(CodeForbidden, "only its sender may %s message %d", what, st.ID)
	case s.now().Sub(st.SentAt) > s.limits.EditWindow:
		return Errorf(CodeForbidden, "message %d was sent more than %s ago: too late to %s it", st.ID, s.limits.EditWindow, what)
	}
	return nil
}

// maxChangeAttempts bounds how often a change is tried again after another
// change of the same message got in first.
const maxChangeAttempts = 8

// change appends ev, a change to one message, once check passes against the
// message's state, and answers a retried keyed request with the first one.
//
// The state comes from the read model, and the stream decides: ev is
// appended expecting the last event of the message's lifecycle to be the
// one the read model applied last (eventstore.ExpectLast over
// inbox.conv.<id>.msg.<m>.*). If another change got in since (an edit
// racing a delete, two deletes, a 21st reaction), JetStream refuses the
// append and nothing is stored; the service waits for the read model to
// apply what got in and checks again. So a change is checked against the
// message's state as it is when it is stored, on any node.
func (s *Service) change(ctx context.Context, by Actor, ev eventstore.KeyedEvent, h *eventstore.Header, check func(eventstore.MessageState) error) (ch Changed, err error) {
	conv, id := lifecycleIDs(ev)
	if !eventstore.ValidID(conv) || !eventstore.ValidID(id) {
		return Changed{}, Errorf(CodeBadRequest, "conversation_id and message_id must be positive integers up to %d (2^53−1)", int64(eventstore.MaxID))
	}
	k, keyed := ev.Keyed()
	if keyed && len(k.ClientKey) > 128 {
		return Changed{}, Errorf(CodeBadRequest, "client_msg_id longer than 128 bytes")
	}
	if by.Admin {
		if !s.dir.Exists(conv) {
			return Changed{}, Errorf(CodeNotFound, "conversation %d not found", conv)
		}
	} else {
		if err := s.checkMember(conv, by.UserID); err != nil {
			return Changed{}, err
		}
		if err := s.admit(ctx, admission.Message); err != nil {
			return Changed{}, err
		}
		w := s.begin(ctx)
		defer func() { w.done(ch.Seq) }()
	}
	if s.reads == nil {
		return Changed{}, Errorf(CodeUnavailable, "this node keeps no read model: messages cannot be changed here")
	}
	filter := eventstore.LifecycleFilter(conv, id)
	for range maxChangeAttempts {
		now := s.now()
		if keyed {
			if err := s.keysCovered(ctx, now); err != nil {
				return Changed{}, err
			}
		}
		st, found, applied, err := s.reads.MessageState(ctx, id, by.UserID)
		if err != nil {
			return Changed{}, fmt.Errorf("look up message %d: %w", id, err)
		}
		if !found && !applied.Covers(uint64(id)) {
			// Sent, perhaps, but not applied yet: wait for it if it is a
			// message of conv.
			if err := s.awaitMessage(ctx, conv, id); err != nil {
				return Changed{}, err
			}
			continue
		}
		if keyed { // after the state: a request applied by then is recorded by then
			rec, found, err := s.reads.KeyRecord(ctx, k.Key)
			if err != nil {
				return Changed{}, fmt.Errorf("look up idempotency key: %w", err)
			}
			if found && now.Sub(rec.At) < s.limits.IdempotencyWindow {
				return s.replayChange(k, rec.Keyed, rec.Seq, id)
			}
		}
		if !found || st.ConversationID != conv {
			return Changed{}, Errorf(CodeNotFound, "message %d not found in conversation %d", id, conv)
		}
		if err := check(st); err != nil {
			// A refusal must stand on the message's current state: if the
			// read model has not applied its last change yet, wait and look again.
			last, lerr := s.locate.LastSeqOf(ctx, filter)
			if lerr != nil {
				return Changed{}, &Error{Code: CodeUnavailable, Msg: "the event stream did not answer; nothing was stored", Err: lerr}
			}
			if last == st.LifeSeq {
				return Changed{}, err
			}
			if err := s.awaitRead(ctx, last); err != nil {
				return Changed{}, err
			}
			continue
		}
		h.At = now.UTC()
		opts := []eventstore.AppendOption{eventstore.ExpectLast(st.LifeSeq, filter)}
		var dup bool
		if keyed {
			opts = append(opts, eventstore.WithMsgID(k.MsgID()), eventstore.ReportDuplicate(&dup))
		}
		seq, err := s.store.Append(ctx, ev, opts...)
		switch {
		case errors.Is(err, eventstore.ErrStale):
			if err := s.awaitLifecycle(ctx, filter); err != nil {
				return Changed{}, err
			}
			continue
		case err != nil:
			return Changed{}, &Error{Code: CodeUnavailable, Msg: "the event stream did not acknowledge; nothing was stored", Err: err}
		case dup:
			return s.replayStored(ctx, k, seq, id)
		}
		s.noteWrite(by.UserID, seq)
		return Changed{Seq: seq, ConversationID: conv, MessageID: id, At: h.At}, nil
	}
	return Changed{}, Errorf(CodeUnavailable, "message %d kept changing while this change was checked; nothing was stored, retry", id)
}

// lifecycleIDs returns the conversation and message a change is about.
func lifecycleIDs(ev eventstore.Event) (conv, id int64) {
	switch e := ev.(type) {
	case *eventstore.Edit:
		return e.ConversationID, e.MessageID
	case *eventstore.Delete:
		return e.ConversationID, e.MessageID
	case *eventstore.React:
		return e.ConversationID, e.MessageID
	}
	return 0, 0
}

// awaitMessage waits (at most SettleTimeout) for the read model to apply
// message id, if the stream holds it as a message of conv; else not_found.
func (s *Service) awaitMessage(ctx context.Context, conv, id int64) error {
	subj, err := s.locate.SubjectOf(ctx, uint64(id))
	switch {
	case errors.Is(err, eventstore.ErrNotFound):
		return Errorf(CodeNotFound, "message %d not found in conversation %d", id, conv)
	case err != nil:
		return &Error{Code: CodeUnavailable, Msg: "the event stream did not answer; nothing was stored", Err: err}
	case subj != eventstore.ConvSubject(conv, eventstore.KindMessage):
		return Errorf(CodeNotFound, "message %d not found in conversation %d", id, conv)
	}
	return s.awaitRead(ctx, uint64(id))
}

// awaitLifecycle waits for the read model to apply the last event on filter.
func (s *Service) awaitLifecycle(ctx context.Context, filter string) error {
	last, err := s.locate.LastSeqOf(ctx, filter)
	if err != nil {
		return &Error{Code: CodeUnavailable, Msg: "the event stream did not answer; nothing was stored", Err: err}
	}
	return s.awaitRead(ctx, last)
}

func (s *Service) awaitRead(ctx context.Context, seq uint64) error {
	wctx, cancel := context.WithTimeout(ctx, s.limits.SettleTimeout)
	defer cancel()
	if err := s.reads.WaitFor(wctx, seq); err != nil {
		return &Error{Code: CodeUnavailable, Msg: "this node's read model is behind the event stream; nothing was stored, retry shortly", Err: err}
	}
	return nil
}

// replayChange answers a change with key k from the request recorded at
// seq: the same change, or a conflict.
func (s *Service) replayChange(k, stored eventstore.Keyed, seq uint64, id int64) (Changed, error) {
	if stored.Op != k.Op || stored.Fingerprint != k.Fingerprint {
		return Changed{}, Errorf(CodeConflict, "key %q was already used in conversation %d for a different request (event %d); nothing was stored: use a new key",
			k.ClientKey, k.ConversationID, seq)
	}
	return Changed{Seq: seq, ConversationID: k.ConversationID, MessageID: id, Replayed: true}, nil
}

// replayStored answers a change whose append the stream deduplicated
// against the event at seq.
func (s *Service) replayStored(ctx context.Context, k eventstore.Keyed, seq uint64, id int64) (Changed, error) {
	stored, err := s.storedKeyed(ctx, k, seq)
	if err != nil {
		return Changed{}, err
	}
	return s.replayChange(k, stored, seq, id)
}
