// Package erasure removes the content of messages and profiles from an
// append-only stream, for a right-to-erasure request or a secret pasted
// into a chat (docs/erasure.md).
//
// For each message it appends a tombstone (eventstore.Erased) on the
// message's lifecycle subject, expecting the message's last lifecycle event
// as the read model holds it, so no edit can slip in between; then it
// securely deletes the message's events (the message and every edit) from
// the stream: JetStream overwrites their stored bytes, on every replica.
// The tombstone holds no content, only what a read model needs to show the
// message as erased, so the projector and any rebuild agree. A user's
// profile events get one tombstone (eventstore.ProfileErased) the same way.
//
// Tombstone first, then the secure delete: an erasure cut short leaves
// content in the stream that no read model shows any more, and running it
// again deletes it. Running it again is always safe.
package erasure

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"inbox/chat"
	"inbox/eventstore"
)

// Stream is what an erasure needs of the event stream; *eventstore.Store is one.
type Stream interface {
	Append(ctx context.Context, e eventstore.Event, opts ...eventstore.AppendOption) (uint64, error)
	ReadAll(ctx context.Context, filters []string, fn func(eventstore.Stored) error) error
	SecureDelete(ctx context.Context, id uint64) (bool, error)
	Last(ctx context.Context) (eventstore.Cursor, error)
	LastSeqOf(ctx context.Context, filter string) (uint64, error)
}

// ReadModel is what an erasure asks the read model; *projections.Projector is one.
type ReadModel interface {
	MessageState(ctx context.Context, id int64, user string) (st eventstore.MessageState, found bool, applied eventstore.Cursor, err error)
	MessagesBy(ctx context.Context, sender string) (msgs []eventstore.MessageState, applied eventstore.Cursor, err error)
	WaitFor(ctx context.Context, id uint64) error
}

var _ Stream = (*eventstore.Store)(nil)

// DefaultSettle bounds how long an erasure waits for the read model: to
// hold the whole stream before it lists a user's messages, and to apply its
// tombstones before it answers.
const DefaultSettle = 10 * time.Second

// Eraser erases messages and profiles.
type Eraser struct {
	stream Stream
	reads  ReadModel
	log    *slog.Logger
	settle time.Duration
}

// New returns an Eraser; log may be nil.
func New(stream Stream, reads ReadModel, log *slog.Logger) *Eraser {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Eraser{stream: stream, reads: reads, log: log.With("component", "erasure"), settle: DefaultSettle}
}

// Report says what an erasure did.
type Report struct {
	UserID string `json:"user_id,omitempty"`
	// Messages are the messages erased by this request (one tombstone each).
	Messages []Message `json:"messages"`
	// ProfileEvents are the user's profile events erased by this request.
	ProfileEvents []uint64 `json:"profile_events"`
	// Tombstones are the sequences of the tombstones appended.
	Tombstones []uint64 `json:"tombstones"`
	// Deleted counts the events securely deleted from the stream now;
	// AlreadyGone the events to delete that the stream no longer held (an
	// earlier erasure deleted them).
	Deleted     int `json:"stream_events_deleted"`
	AlreadyGone int `json:"stream_events_already_gone"`
}

// Message is one erased message.
type Message struct {
	ConversationID int64 `json:"conversation_id"`
	MessageID      int64 `json:"message_id"`
	// Events are the erased events: the message and its edits.
	Events []uint64 `json:"events"`
}

// maxAttempts bounds how often one message's tombstone is tried again
// after a change of the message got in first.
const maxAttempts = 8

// Message erases message id of conversation conv.
func (e *Eraser) Message(ctx context.Context, conv, id int64) (Report, error) {
	if !eventstore.ValidID(conv) || !eventstore.ValidID(id) {
		return Report{}, chat.Errorf(chat.CodeBadRequest, "conversation and message ids must be positive integers up to %d (2^53−1)", int64(eventstore.MaxID))
	}
	rep := Report{Messages: []Message{}, ProfileEvents: []uint64{}, Tombstones: []uint64{}}
	var doomed []uint64
	for attempt := 0; ; attempt++ {
		st, found, applied, err := e.reads.MessageState(ctx, id, "")
		if err != nil {
			return Report{}, fmt.Errorf("erase message %d: %w", id, err)
		}
		if !found && !applied.Covers(uint64(id)) {
			if err := e.caughtUp(ctx); err != nil {
				return Report{}, err
			}
			if _, found, _, err = e.reads.MessageState(ctx, id, ""); err == nil && !found {
				return Report{}, chat.Errorf(chat.CodeNotFound, "message %d not found in conversation %d", id, conv)
			}
			continue
		}
		if !found || st.ConversationID != conv {
			return Report{}, chat.Errorf(chat.CodeNotFound, "message %d not found in conversation %d", id, conv)
		}
		edits, err := e.edits(ctx, conv, eventstore.MessageSubject(conv, id, eventstore.KindEdit))
		if err != nil {
			return Report{}, err
		}
		seqs := append([]uint64{uint64(id)}, edits[id]...)
		if st.Erased {
			doomed = seqs // erased before: finish its secure delete
			break
		}
		seq, err := e.tombstone(ctx, st, seqs)
		if errors.Is(err, eventstore.ErrStale) && attempt < maxAttempts {
			if err := e.await(ctx, eventstore.LifecycleFilter(conv, id)); err != nil {
				return Report{}, err
			}
			continue
		}
		if err != nil {
			return Report{}, err
		}
		rep.Messages = append(rep.Messages, Message{ConversationID: conv, MessageID: id, Events: seqs})
		rep.Tombstones = append(rep.Tombstones, seq)
		doomed = seqs
		break
	}
	return rep, e.finish(ctx, &rep, doomed)
}

// User erases every message user sent (each with its edits) and every
// profile event of user, as the stream holds them when User starts.
// Messages sent meanwhile are not: disconnect the user first, or run it
// again.
func (e *Eraser) User(ctx context.Context, user string) (Report, error) {
	if !eventstore.ValidUserID(user) {
		return Report{}, chat.Errorf(chat.CodeBadRequest, "user id %q must match [A-Za-z0-9_-]{1,64}", user)
	}
	rep := Report{UserID: user, Messages: []Message{}, ProfileEvents: []uint64{}, Tombstones: []uint64{}}
	if err := e.caughtUp(ctx); err != nil {
		return Report{}, err
	}
	msgs, _, err := e.reads.MessagesBy(ctx, user)
	if err != nil {
		return Report{}, fmt.Errorf("erase %s: %w", user, err)
	}
	var doomed []uint64
	byConv := map[int64][]eventstore.MessageState{}
	for _, m := range msgs {
		byConv[m.ConversationID] = append(byConv[m.ConversationID], m)
	}
	for _, conv := range slices.Sorted(maps.Keys(byConv)) {
		edits, err := e.edits(ctx, conv, eventstore.EditsFilter(conv))
		if err != nil {
			return Report{}, err
		}
		for _, st := range byConv[conv] {
			seqs := append([]uint64{uint64(st.ID)}, edits[st.ID]...)
			if st.Erased {
				doomed = append(doomed, seqs...)
				continue
			}
			seq, err := e.tombstone(ctx, st, seqs)
			if errors.Is(err, eventstore.ErrStale) {
				// The message changed since it was listed: erase it alone.
				one, err := e.Message(ctx, conv, st.ID)
				if err != nil {
					return Report{}, err
				}
				rep.merge(one)
				continue
			}
			if err != nil {
				return Report{}, err
			}
			rep.Messages = append(rep.Messages, Message{ConversationID: conv, MessageID: st.ID, Events: seqs})
			rep.Tombstones = append(rep.Tombstones, seq)
			doomed = append(doomed, seqs...)
		}
	}
	profiles, seq, err := e.profiles(ctx, user)
	if err != nil {
		return Report{}, err
	}
	if seq != 0 {
		rep.ProfileEvents = profiles
		rep.Tombstones = append(rep.Tombstones, seq)
		doomed = append(doomed, profiles...)
	}
	return rep, e.finish(ctx, &rep, doomed)
}

// merge adds what another erasure did.
func (r *Report) merge(o Report) {
	r.Messages = append(r.Messages, o.Messages...)
	r.Tombstones = append(r.Tombstones, o.Tombstones...)
	r.Deleted += o.Deleted
	r.AlreadyGone += o.AlreadyGone
}

// tombstone appends the tombstone of the message in st, whose events are
// seqs, expecting the message's last lifecycle event.
func (e *Eraser) tombstone(ctx context.Context, st eventstore.MessageState, seqs []uint64) (uint64, error) {
	ev := &eventstore.Erased{ConversationID: st.ConversationID, MessageID: st.ID, SenderID: st.SenderID, MsgType: st.MsgType, SentAt: st.SentAt, Seqs: seqs}
	seq, err := e.stream.Append(ctx, ev, eventstore.ExpectLast(st.LifeSeq, eventstore.LifecycleFilter(st.ConversationID, st.ID)))
	switch {
	case errors.Is(err, eventstore.ErrStale):
		return 0, err
	case err != nil:
		return 0, &chat.Error{Code: chat.CodeUnavailable, Msg: fmt.Sprintf("the event stream did not store the tombstone of message %d; run the erasure again", st.ID), Err: err}
	}
	return seq, nil
}

// profiles erases user's profile events, if the stream holds any: it
// returns them and the tombstone's sequence (0: there were none).
func (e *Eraser) profiles(ctx context.Context, user string) ([]uint64, uint64, error) {
	subject := eventstore.UserSubject(user, eventstore.KindProfile)
	for attempt := 0; ; attempt++ {
		var seqs []uint64
		if err := e.stream.ReadAll(ctx, []string{subject}, func(st eventstore.Stored) error {
			seqs = append(seqs, st.Seq)
			return nil
		}); err != nil {
			return nil, 0, unavailable(err)
		}
		if len(seqs) == 0 {
			return nil, 0, nil
		}
		seq, err := e.stream.Append(ctx, &eventstore.ProfileErased{UserID: user, Seqs: seqs}, eventstore.ExpectLast(seqs[len(seqs)-1], subject))
		switch {
		case errors.Is(err, eventstore.ErrStale) && attempt < maxAttempts:
			continue // a profile was set meanwhile: erase it too
		case err != nil:
			return nil, 0, unavailable(err)
		}
		return seqs, seq, nil
	}
}

// edits returns the edits on filter (one message's, or a conversation's),
// by message.
func (e *Eraser) edits(ctx context.Context, conv int64, filter string) (map[int64][]uint64, error) {
	out := map[int64][]uint64{}
	err := e.stream.ReadAll(ctx, []string{filter}, func(st eventstore.Stored) error {
		// inbox.conv.<conv>.msg.<id>.edit: the message id is in the subject,
		// so an edit that does not decode is found too.
		parts := strings.Split(st.Subject, ".")
		if len(parts) == 6 {
			if id, err := strconv.ParseInt(parts[4], 10, 64); err == nil {
				out[id] = append(out[id], st.Seq)
			}
		}
		return nil
	})
	if err != nil {
		return nil, unavailable(err)
	}
	return out, nil
}

// finish securely deletes seqs and waits for the read model to apply the
// tombstones, so what the node answers next no longer shows the content.
func (e *Eraser) finish(ctx context.Context, rep *Report, seqs []uint64) error {
	for _, s := range seqs {
		ok, err := e.stream.SecureDelete(ctx, s)
		if err != nil {
			return &chat.Error{Code: chat.CodeUnavailable, Msg: fmt.Sprintf("tombstones stored, but the event stream did not delete event %d: run the erasure again", s), Err: err}
		}
		if ok {
			rep.Deleted++
		} else {
			rep.AlreadyGone++
		}
	}
	if len(rep.Tombstones) > 0 {
		if err := e.waitRead(ctx, "erased from the stream, but this node's read model has not applied it yet", rep.Tombstones...); err != nil {
			return err
		}
	}
	e.log.Info("erased", "user_id", rep.UserID, "messages", len(rep.Messages), "profile_events", len(rep.ProfileEvents),
		"deleted", rep.Deleted, "already_gone", rep.AlreadyGone)
	return nil
}

// caughtUp waits for the read model to apply everything the stream holds now.
func (e *Eraser) caughtUp(ctx context.Context) error {
	last, err := e.stream.Last(ctx)
	if err != nil {
		return unavailable(err)
	}
	ids := make([]uint64, len(last))
	for k := range last {
		ids[k] = last.ID(k)
	}
	return e.waitRead(ctx, "this node's read model is behind the event stream; nothing was erased, retry shortly", ids...)
}

// await waits for the read model to apply the last event on filter.
func (e *Eraser) await(ctx context.Context, filter string) error {
	last, err := e.stream.LastSeqOf(ctx, filter)
	if err != nil {
		return unavailable(err)
	}
	return e.waitRead(ctx, "this node's read model is behind the event stream; retry shortly", last)
}

// waitRead waits, at most the settle time, for the read model to apply
// seq; else it answers unavailable with msg.
func (e *Eraser) waitRead(ctx context.Context, msg string, ids ...uint64) error {
	wctx, cancel := context.WithTimeout(ctx, e.settle)
	defer cancel()
	for _, id := range ids { // each in its partition
		if err := e.reads.WaitFor(wctx, id); err != nil {
			return &chat.Error{Code: chat.CodeUnavailable, Msg: msg, Err: err}
		}
	}
	return nil
}

func unavailable(err error) error {
	return &chat.Error{Code: chat.CodeUnavailable, Msg: "the event stream did not answer; run the erasure again", Err: err}
}
