package projections

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"inbox/eventstore"
)

// KeyRecord returns the latest request recorded under k; found is false if
// there is none (never sent, or pruned).
func (db *DB) KeyRecord(ctx context.Context, k eventstore.Key) (rec eventstore.KeyRecord, found bool, err error) {
	if !db.keys.mayHold(k) {
		return eventstore.KeyRecord{}, false, nil // never recorded (keyfilter.go)
	}
	var seq int64
	var at string
	err = db.r.QueryRowContext(ctx, `SELECT user_id, conversation_id, key, op, fingerprint, seq, at FROM idempotency
		WHERE user_id = ? AND conversation_id = ? AND key = ?`, k.UserID, k.ConversationID, k.ClientKey).
		Scan(&rec.UserID, &rec.ConversationID, &rec.ClientKey, &rec.Op, &rec.Fingerprint, &seq, &at)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return eventstore.KeyRecord{}, false, nil
	case err != nil:
		return eventstore.KeyRecord{}, false, fmt.Errorf("idempotency key of %s in conversation %d: %w", k.UserID, k.ConversationID, err)
	}
	if rec.At, err = time.Parse(time.RFC3339, at); err != nil {
		return eventstore.KeyRecord{}, false, fmt.Errorf("idempotency key of %s in conversation %d: time %q: %w", k.UserID, k.ConversationID, at, err)
	}
	rec.Seq = uint64(seq)
	return rec, true, nil
}

// PruneKeys deletes the idempotency records created before t and returns
// how many it deleted. The horizon is kept (idempotency_pruned), so Diff
// compares only what both databases still hold.
func (db *DB) PruneKeys(ctx context.Context, t time.Time) (n int64, err error) {
	before := t.UTC().Format(time.RFC3339)
	tx, err := db.w.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("prune idempotency keys: %w", err)
	}
	defer func() {
		if err != nil {
			tx.Rollback()
		}
	}()
	res, err := tx.ExecContext(ctx, `DELETE FROM idempotency WHERE at < ?`, before)
	if err != nil {
		return 0, fmt.Errorf("prune idempotency keys: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE idempotency_pruned SET before = max(before, ?) WHERE id = 1`, before); err != nil {
		return 0, fmt.Errorf("prune idempotency keys: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("prune idempotency keys: %w", err)
	}
	return res.RowsAffected()
}

// MessageConversations returns what the database has applied from each
// partition and, in the same read, the conversation of each of ids that is
// a message: an id the cursor covers that is missing is not a message.
func (db *DB) MessageConversations(ctx context.Context, ids []int64) (applied eventstore.Cursor, convs map[int64]int64, err error) {
	tx, err := db.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, nil, fmt.Errorf("look up messages: %w", err)
	}
	defer tx.Rollback()
	if applied, err = db.appliedIn(ctx, tx); err != nil {
		return nil, nil, fmt.Errorf("look up messages: %w", err)
	}
	convs = make(map[int64]int64, len(ids))
	if len(ids) == 0 {
		return applied, convs, nil
	}
	args := make([]any, len(ids))
	for i, id := range ids {
		args[i] = id
	}
	q := `SELECT id, conversation_id FROM messages WHERE id IN (?` + strings.Repeat(", ?", len(ids)-1) + `)`
	err = each(ctx, tx, q, func(rows *sql.Rows) error {
		var id, conv int64
		if err := rows.Scan(&id, &conv); err != nil {
			return err
		}
		convs[id] = conv
		return nil
	}, args...)
	if err != nil {
		return nil, nil, fmt.Errorf("look up messages: %w", err)
	}
	return applied, convs, nil
}

// KeyRecord is the database's KeyRecord.
func (p *Projector) KeyRecord(ctx context.Context, k eventstore.Key) (eventstore.KeyRecord, bool, error) {
	return p.db.KeyRecord(ctx, k)
}

// MessageConversations is the database's MessageConversations.
func (p *Projector) MessageConversations(ctx context.Context, ids []int64) (eventstore.Cursor, map[int64]int64, error) {
	return p.db.MessageConversations(ctx, ids)
}

// caughtUpWait bounds how long Covers waits for the projector to apply what
// the stream holds before it says no.
const caughtUpWait = time.Second

// Covers reports whether the database holds every event the stream stored
// before t (in the partitions this projector applies). It does when the last applied event is no older than t (stream
// time), or when the projector had applied everything the stream held at a
// moment no earlier than t. Otherwise Covers asks the stream for its newest
// stored event and waits (at most a second) for the projector to apply it:
// so a node that is merely idle answers yes, at the cost of one request to
// the stream per call while idle, and a lagging or stalled one answers no.
//
// Callers that arrive while a check runs wait for it and take its answer,
// so a lagging projector costs each of them at most one wait, not one each.
func (p *Projector) Covers(ctx context.Context, t time.Time) (bool, error) {
	if !p.Horizon().Before(t) {
		return true, nil
	}
	called := time.Now()
	p.checkMu.Lock()
	defer p.checkMu.Unlock()
	if !p.Horizon().Before(t) { // a check since the call found it caught up
		return true, nil
	}
	if !p.checkedAt.Before(called) { // a check since the call found it behind
		return false, nil
	}
	start := time.Now()
	p.checkedAt = start
	last, err := p.store.LastStored(ctx)
	if err != nil {
		return false, err
	}
	if !p.reaches(last) {
		wctx, cancel := context.WithTimeout(ctx, caughtUpWait)
		err := p.WaitForAll(wctx, last)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return false, ctx.Err()
			}
			return false, nil
		}
	}
	if n := start.UnixNano(); n > p.caughtUpAt.Load() {
		p.caughtUpAt.Store(n)
	}
	return !start.Before(t), nil
}

// reaches reports whether the database has applied last in every partition
// this projector applies.
func (p *Projector) reaches(last eventstore.Cursor) bool {
	for _, k := range p.parts {
		if k < len(last) && p.db.applied[k].Load() < last[k] {
			return false
		}
	}
	return true
}

// Horizon is the moment up to which the database is known to hold every
// event (of the partitions this projector applies): the oldest of the partitions' last applied events (each partition
// holds everything it stored up to its own), or the last check that found
// every partition caught up.
func (p *Projector) Horizon() time.Time {
	applied := p.appliedAt[p.parts[0]].Load()
	for _, k := range p.parts {
		applied = min(applied, p.appliedAt[k].Load())
	}
	return time.Unix(0, max(applied, p.caughtUpAt.Load()))
}

// prune deletes idempotency records older than the key window, at most once
// per pruneEvery; it runs on a partition's goroutine, between batches (one
// partition's at a time; the others skip it meanwhile).
func (p *Projector) prune(ctx context.Context) {
	if p.keyWindow <= 0 || !p.pruneMu.TryLock() {
		return
	}
	defer p.pruneMu.Unlock()
	now := time.Now()
	if now.Sub(p.prunedAt) < min(max(p.keyWindow/8, time.Second), time.Hour) {
		return
	}
	p.prunedAt = now
	n, err := p.db.PruneKeys(context.WithoutCancel(ctx), now.Add(-p.keyWindow))
	if err != nil {
		p.log.Warn("prune idempotency records", "err", err)
		return
	}
	if n > 0 || p.db.keys.full() {
		if err := p.db.buildKeyFilter(context.WithoutCancel(ctx)); err != nil {
			p.log.Warn("rebuild idempotency key filter", "err", err)
		}
		p.log.Debug("pruned idempotency records", "deleted", n, "window", p.keyWindow)
	}
}
