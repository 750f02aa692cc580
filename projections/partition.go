package projections

import (
	"context"
	"database/sql"
	"fmt"
	"slices"

	"inbox/eventstore"
)

// Which partition a row belongs to. A conversation's rows (its own, its
// members, its messages and their reactions, the idempotency keys sent to
// it) are in the conversation's partition; profiles and jobs are in
// partition 0, like their events; meta counts for every partition. A table added to the
// schema is added here, or verify and replay of one partition fail on it.

type scope uint8

const (
	scopeConv    scope = iota // the column col holds a conversation id
	scopeEvent                // the column col holds an event id (a message's)
	scopeZero                 // partition 0
	scopeApplied              // the applied table: its k column
	scopeAll                  // every partition's: compared only when all are
)

var partitionTables = map[string]struct {
	scope scope
	col   string // the conversation or event id column (scopeConv, scopeEvent)
}{
	"meta":          {scope: scopeAll},
	"applied":       {scope: scopeApplied},
	"conversations": {scopeConv, "id"},
	"members":       {scopeConv, "conversation_id"},
	"messages":      {scopeConv, "conversation_id"},
	"reactions":     {scopeEvent, "message_id"},
	"idempotency":   {scopeConv, "conversation_id"},
	"profiles":      {scope: scopeZero},
	"jobs":          {scope: scopeZero},
	"job_members":   {scope: scopeZero},
	"job_status":    {scope: scopeZero},
}

// rowFilter keeps the rows of table (with columns cols) that are in one of
// partitions ks of n.
func rowFilter(table string, cols []string, n int, ks []int) (func(row []any) bool, error) {
	pt, ok := partitionTables[table]
	if !ok {
		return nil, fmt.Errorf("table %s has no partition: add it to partitionTables", table)
	}
	in := func(k int) bool { return slices.Contains(ks, k) }
	switch pt.scope {
	case scopeZero:
		keep := in(0)
		return func([]any) bool { return keep }, nil
	case scopeAll:
		return func([]any) bool { return false }, nil
	}
	col := "k"
	if pt.scope != scopeApplied {
		col = pt.col
	}
	i := slices.Index(cols, col)
	if i < 0 {
		return nil, fmt.Errorf("table %s has no column %s", table, col)
	}
	return func(row []any) bool {
		v, _ := row[i].(int64)
		switch pt.scope {
		case scopeApplied:
			return in(int(v))
		case scopeEvent:
			k, _ := eventstore.Split(n, uint64(v))
			return in(k)
		}
		return in(eventstore.Partition(v, n))
	}, nil
}

// clearPartition deletes every row of partition k (of the database's n) and
// sets its applied sequence to 0, in one transaction: what replaying that
// partition alone starts from.
func (db *DB) clearPartition(ctx context.Context, k int) (err error) {
	tx, err := db.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("clear partition %d: %w", k, err)
	}
	defer func() {
		if err != nil {
			tx.Rollback()
		}
	}()
	var convs []int64
	err = each(ctx, tx, `SELECT id FROM conversations UNION SELECT conversation_id FROM members
		UNION SELECT conversation_id FROM messages UNION SELECT conversation_id FROM idempotency`, func(rows *sql.Rows) error {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return err
		}
		if eventstore.Partition(id, db.n) == k {
			convs = append(convs, id)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("clear partition %d: list its conversations: %w", k, err)
	}
	// With one partition every row is its; with more an event id has
	// the partition in its low 8 bits.
	var mask int64
	if db.n > 1 {
		mask = eventstore.MaxPartitions - 1
	}
	for table, pt := range partitionTables {
		var q string
		var args []any
		switch {
		case pt.scope == scopeConv:
			q = "DELETE FROM " + table + " WHERE " + pt.col + " = ?"
		case pt.scope == scopeEvent:
			q, args = "DELETE FROM "+table+" WHERE ("+pt.col+" & ?) = ?", []any{mask, k}
		case pt.scope == scopeZero && k == 0:
			q = "DELETE FROM " + table
		default:
			continue
		}
		if pt.scope != scopeConv {
			if _, err := tx.ExecContext(ctx, q, args...); err != nil {
				return fmt.Errorf("clear partition %d: %s: %w", k, table, err)
			}
			continue
		}
		st, err := tx.PrepareContext(ctx, q)
		if err != nil {
			return fmt.Errorf("clear partition %d: %s: %w", k, table, err)
		}
		for _, id := range convs {
			if _, err := st.ExecContext(ctx, id); err != nil {
				st.Close()
				return fmt.Errorf("clear partition %d: %s of conversation %d: %w", k, table, id, err)
			}
		}
		st.Close()
	}
	var skipped uint64
	if err = tx.QueryRowContext(ctx, `SELECT skipped FROM applied WHERE k = ?`, k).Scan(&skipped); err != nil {
		return fmt.Errorf("clear partition %d: %w", k, err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE applied SET seq = 0, skipped = 0 WHERE k = ?`, k); err != nil {
		return fmt.Errorf("clear partition %d: %w", k, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("clear partition %d: %w", k, err)
	}
	db.applied[k].Store(0)
	db.skipped.Add(-skipped)
	return nil
}
