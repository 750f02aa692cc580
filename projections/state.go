package projections

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"inbox/eventstore"
)

// MessageState returns message id as the database holds it, with user's
// reactions to it, and what it applied from each partition, in one read:
// found is false when no message id is held (never was, or expired) at
// applied.
func (db *DB) MessageState(ctx context.Context, id int64, user string) (st eventstore.MessageState, found bool, applied eventstore.Cursor, err error) {
	tx, err := db.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return st, false, nil, fmt.Errorf("message %d: %w", id, err)
	}
	defer tx.Rollback()
	if applied, err = db.appliedIn(ctx, tx); err != nil {
		return st, false, nil, fmt.Errorf("message %d: %w", id, err)
	}
	states, err := messageStates(ctx, tx, `WHERE id = ?`, id)
	if err != nil || len(states) == 0 {
		return st, false, applied, err
	}
	st = states[0]
	rows, err := tx.QueryContext(ctx, `SELECT emoji FROM reactions WHERE message_id = ? AND user_id = ? ORDER BY seq`, id, user)
	if err != nil {
		return st, false, nil, fmt.Errorf("reactions of %s on message %d: %w", user, id, err)
	}
	defer rows.Close()
	for rows.Next() {
		var e string
		if err := rows.Scan(&e); err != nil {
			return st, false, nil, fmt.Errorf("reactions of %s on message %d: %w", user, id, err)
		}
		st.Reactions = append(st.Reactions, e)
	}
	if err := rows.Err(); err != nil {
		return st, false, nil, fmt.Errorf("reactions of %s on message %d: %w", user, id, err)
	}
	return st, true, applied, nil
}

// MessagesBy returns every message sender sent that the database holds
// (deleted and erased ones too), in id order (oldest first within a
// partition), and what it applied from each partition, in one read.
func (db *DB) MessagesBy(ctx context.Context, sender string) (_ []eventstore.MessageState, applied eventstore.Cursor, err error) {
	tx, err := db.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, nil, fmt.Errorf("messages of %s: %w", sender, err)
	}
	defer tx.Rollback()
	if applied, err = db.appliedIn(ctx, tx); err != nil {
		return nil, nil, fmt.Errorf("messages of %s: %w", sender, err)
	}
	states, err := messageStates(ctx, tx, `WHERE sender_id = ? ORDER BY id`, sender)
	if err != nil {
		return nil, nil, fmt.Errorf("messages of %s: %w", sender, err)
	}
	return states, applied, nil
}

func messageStates(ctx context.Context, tx *sql.Tx, where string, args ...any) ([]eventstore.MessageState, error) {
	var out []eventstore.MessageState
	err := each(ctx, tx, `SELECT id, conversation_id, sender_id, type, created_at, edited_at IS NOT NULL, deleted, erased, life_seq
		FROM messages `+where, func(rows *sql.Rows) error {
		var st eventstore.MessageState
		var sent string
		if err := rows.Scan(&st.ID, &st.ConversationID, &st.SenderID, &st.MsgType, &sent, &st.Edited, &st.Deleted, &st.Erased, &st.LifeSeq); err != nil {
			return err
		}
		t, err := time.Parse(time.RFC3339, sent)
		if err != nil {
			return fmt.Errorf("message %d: created_at %q: %w", st.ID, sent, err)
		}
		st.SentAt = t
		out = append(out, st)
		return nil
	}, args...)
	return out, err
}

// MessageState is the database's MessageState.
func (p *Projector) MessageState(ctx context.Context, id int64, user string) (eventstore.MessageState, bool, eventstore.Cursor, error) {
	return p.db.MessageState(ctx, id, user)
}

// MessagesBy is the database's MessagesBy.
func (p *Projector) MessagesBy(ctx context.Context, sender string) ([]eventstore.MessageState, eventstore.Cursor, error) {
	return p.db.MessagesBy(ctx, sender)
}
