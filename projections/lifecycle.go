package projections

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"inbox/eventstore"
)

// A message's lifecycle in the read model: edits, deletions, reactions,
// erasure (a tombstone per message) and retention (Expired). Each is
// applied so that the final state depends only on the events that remain
// in the stream, never on whether a deleted, erased or expired message was
// seen before it went: a live read model and a rebuild agree (inbox verify).
//
//   - A deleted message keeps its row: text "", deleted, no reactions, no
//     edited_at. It leaves the unread count of every member it counted for
//     (one who had not read past it, not its sender) and, if it was the
//     conversation's last message, the one before it becomes the last.
//   - An erased message is a deleted one that also loses its sender's name
//     and avatar and its client_msg_id, and the idempotency records of its
//     erased events. A rebuild that no longer finds the message in the
//     stream inserts the same row from the tombstone.
//   - Expired removes every row below a sequence, with its reactions and
//     idempotency records, and the unread counts they made.
//
// life_seq is the last lifecycle event applied to a message (whatever it
// did): the service appends the next one expecting it (eventstore.ExpectLast).

// msgRow is what a lifecycle event needs of a message's row.
type msgRow struct {
	conv    int64
	sender  string
	deleted bool
	erased  bool
}

func (a *applier) msgRow(ctx context.Context, id int64) (msgRow, bool, error) {
	var r msgRow
	err := a.st[qMsgState].QueryRowContext(ctx, id).Scan(&r.conv, &r.sender, &r.deleted, &r.erased)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return msgRow{}, false, nil
	case err != nil:
		return msgRow{}, false, fmt.Errorf("look up message %d: %w", id, err)
	}
	return r, true, nil
}

// lifecycle applies an edit, a deletion, a reaction or an erasure.
func (a *applier) lifecycle(ctx context.Context, st *eventstore.Stored) error {
	seq := st.Seq
	var conv, id int64
	var h *eventstore.Header
	switch e := st.Event.(type) {
	case *eventstore.Edit:
		conv, id, h = e.ConversationID, e.MessageID, &e.Header
	case *eventstore.Delete:
		conv, id, h = e.ConversationID, e.MessageID, &e.Header
	case *eventstore.React:
		conv, id, h = e.ConversationID, e.MessageID, &e.Header
	case *eventstore.Erased:
		conv, id, h = e.ConversationID, e.MessageID, &e.Header
	}
	// A keyed request is recorded whatever it did, as the service answers it.
	if ke, ok := st.Event.(eventstore.KeyedEvent); ok {
		if err := a.recordKey(ctx, ke, seq, at(h, st)); err != nil {
			return err
		}
	}
	row, found, err := a.msgRow(ctx, id)
	if err != nil {
		return err
	}
	if e, ok := st.Event.(*eventstore.Erased); ok {
		return a.erase(ctx, e, seq, row, found)
	}
	if !found || row.conv != conv {
		return nil // no such message here: never was, or expired
	}
	done := false
	switch e := st.Event.(type) {
	case *eventstore.Edit:
		if !row.deleted && mayChange(e.UserID, row.sender) {
			if _, err := a.st[qEditMsg].ExecContext(ctx, e.Text, at(h, st), int64(seq), id); err != nil {
				return fmt.Errorf("edit message %d: %w", id, err)
			}
			done = true
		}
	case *eventstore.Delete:
		if !row.deleted && mayChange(e.UserID, row.sender) {
			if err := a.deleteRow(ctx, id, row, seq, qDeleteMsg); err != nil {
				return err
			}
			done = true
		}
	case *eventstore.React:
		if !row.deleted {
			if err := a.react(ctx, e, seq); err != nil {
				return err
			}
		}
	}
	if !done {
		if _, err := a.st[qLifeSeq].ExecContext(ctx, int64(seq), id); err != nil {
			return fmt.Errorf("message %d: %w", id, err)
		}
	}
	return nil
}

// mayChange reports whether user may edit or delete sender's message: its
// sender, or the service. The service checks this before appending; an
// event published by other means is held to it here.
func mayChange(user, sender string) bool { return user == sender || user == eventstore.SystemSender }

// react adds or removes a reaction; the 21st distinct emoji of one user on
// one message is ignored.
func (a *applier) react(ctx context.Context, e *eventstore.React, seq uint64) error {
	if e.On {
		var n int
		if err := a.st[qCountReactions].QueryRowContext(ctx, e.MessageID, e.UserID).Scan(&n); err != nil {
			return fmt.Errorf("count reactions on message %d: %w", e.MessageID, err)
		}
		if n < eventstore.MaxReactionsPerUser {
			if _, err := a.st[qAddReaction].ExecContext(ctx, e.MessageID, e.Emoji, e.UserID, int64(seq)); err != nil {
				return fmt.Errorf("add reaction to message %d: %w", e.MessageID, err)
			}
		}
	} else if _, err := a.st[qDelReaction].ExecContext(ctx, e.MessageID, e.Emoji, e.UserID); err != nil {
		return fmt.Errorf("remove reaction from message %d: %w", e.MessageID, err)
	}
	if _, err := a.st[qLifeSeq].ExecContext(ctx, int64(seq), e.MessageID); err != nil {
		return fmt.Errorf("message %d: %w", e.MessageID, err)
	}
	return nil
}

// deleteRow marks a message deleted (q: qDeleteMsg or qEraseMsg) at seq:
// it leaves the unread counts it was in, loses its reactions and, if it was
// the last message, hands that place to the one before it.
func (a *applier) deleteRow(ctx context.Context, id int64, row msgRow, seq uint64, q stmtID) error {
	c, err := a.conv(ctx, row.conv)
	if err != nil {
		return err
	}
	if !row.deleted {
		for uid, m := range c.members {
			if m.removed || uid == row.sender || m.readUpTo >= id || m.unread == 0 {
				continue
			}
			m.unread--
			m.dirty, m.changed = true, seq
			a.touch(c, false)
		}
	}
	if _, err := a.st[qDelReactions].ExecContext(ctx, id); err != nil {
		return fmt.Errorf("remove reactions of message %d: %w", id, err)
	}
	if _, err := a.st[q].ExecContext(ctx, int64(seq), id); err != nil {
		return fmt.Errorf("delete message %d: %w", id, err)
	}
	if c.lastMsg == id {
		if err := a.st[qSelLastMsg].QueryRowContext(ctx, c.id).Scan(&c.lastMsg); err != nil {
			return fmt.Errorf("last message of conversation %d: %w", c.id, err)
		}
		a.touch(c, true)
	}
	return nil
}

// erase applies a message's tombstone: the row becomes an erased one, or,
// when the stream no longer held the message (a rebuild after the secure
// delete), is inserted as one. The idempotency records of the erased
// events go either way.
func (a *applier) erase(ctx context.Context, e *eventstore.Erased, seq uint64, row msgRow, found bool) error {
	a.forget = true
	for _, s := range e.Seqs {
		if _, err := a.st[qDelKeyAt].ExecContext(ctx, int64(s)); err != nil {
			return fmt.Errorf("forget the idempotency record of seq %d: %w", s, err)
		}
	}
	id := e.MessageID
	switch {
	case found && row.conv != e.ConversationID:
		return nil // a tombstone published on another conversation's subject
	case found && row.erased:
		_, err := a.st[qLifeSeq].ExecContext(ctx, int64(seq), id)
		return err
	case found:
		return a.deleteRow(ctx, id, row, seq, qEraseMsg)
	}
	var expired int64
	if err := a.st[qSelExpired].QueryRowContext(ctx, a.k).Scan(&expired); err != nil {
		return fmt.Errorf("read the expiry horizon: %w", err)
	}
	if id < expired {
		return nil // retention removed it; it stays removed
	}
	typ := e.MsgType
	if typ == "" {
		typ = eventstore.TypeText
	}
	if _, err := a.st[qInsErased].ExecContext(ctx, id, e.ConversationID, e.SenderID, typ,
		e.SentAt.UTC().Format(time.RFC3339), int64(seq)); err != nil {
		return fmt.Errorf("insert erased message %d: %w", id, err)
	}
	return nil
}

// profileErased removes a profile whose event was erased.
func (a *applier) profileErased(ctx context.Context, e *eventstore.ProfileErased) error {
	a.forget = true
	for _, s := range e.Seqs {
		if _, err := a.st[qDelProfileAt].ExecContext(ctx, e.UserID, int64(s)); err != nil {
			return fmt.Errorf("erase profile of %s: %w", e.UserID, err)
		}
	}
	return nil
}

// expire removes every message below e.Before, and what it counted.
func (a *applier) expire(ctx context.Context, e *eventstore.Expired, seq uint64) error {
	a.forget = true
	before := int64(min(e.Before, eventstore.MaxID))
	var ids []int64
	rows, err := a.st[qExpiringConvs].QueryContext(ctx, before, a.mask(), a.k)
	if err != nil {
		return fmt.Errorf("conversations with expiring messages: %w", err)
	}
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return fmt.Errorf("conversations with expiring messages: %w", err)
		}
		ids = append(ids, id)
	}
	if err := rows.Close(); err != nil {
		return fmt.Errorf("conversations with expiring messages: %w", err)
	}
	convs := make([]*convState, 0, len(ids))
	for _, id := range ids {
		c, err := a.conv(ctx, id)
		if err != nil {
			return err
		}
		convs = append(convs, c)
		for uid, m := range c.members {
			if m.removed || m.readUpTo >= before-1 {
				continue
			}
			var n int64
			if err := a.st[qCountOthers].QueryRowContext(ctx, c.id, m.readUpTo, before-1, uid).Scan(&n); err != nil {
				return fmt.Errorf("count expiring messages: %w", err)
			}
			if n > 0 {
				m.unread -= n
				m.dirty, m.changed = true, seq
				a.touch(c, false)
			}
		}
	}
	for _, q := range []stmtID{qExpireReactions, qExpireMessages, qExpireKeys} {
		if _, err := a.st[q].ExecContext(ctx, before, a.mask(), a.k); err != nil {
			return fmt.Errorf("expire messages below %d: %w", before, err)
		}
	}
	if _, err := a.st[qSetExpired].ExecContext(ctx, before, a.k); err != nil {
		return fmt.Errorf("expire messages below %d: %w", before, err)
	}
	for _, c := range convs {
		if c.lastMsg < before {
			if err := a.st[qSelLastMsg].QueryRowContext(ctx, c.id).Scan(&c.lastMsg); err != nil {
				return fmt.Errorf("last message of conversation %d: %w", c.id, err)
			}
			a.touch(c, true)
		}
	}
	return nil
}

// checkpoint moves the write-ahead log into the database file and truncates
// it, so pages holding erased content do not linger there. Readers holding
// an old snapshot make it busy: it is tried again for about a second.
func (db *DB) checkpoint(ctx context.Context) error {
	for attempt := 0; ; attempt++ {
		var busy, logPages, done int
		if err := db.w.QueryRowContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &logPages, &done); err != nil {
			return fmt.Errorf("checkpoint %s: %w", db.path, err)
		}
		if busy == 0 {
			return nil
		}
		if attempt == 20 {
			return fmt.Errorf("checkpoint %s: busy (readers) after %d attempts", db.path, attempt+1)
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
