package projections

import (
	"bytes"
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"strings"
)

// maxDiffs caps the differences Diff lists.
const maxDiffs = 50

// diffTables lists every table with its key columns, in key order, and the
// partition its rows belong to (partitionTables).
// idempotency_pruned is bookkeeping: it bounds what idempotency compares.
var diffTables = []struct {
	name   string
	keys   []string
	pruned bool // rows older than either database's prune horizon are not compared
}{
	{"meta", []string{"id"}, false},
	{"applied", []string{"k"}, false},
	{"conversations", []string{"id"}, false},
	{"members", []string{"conversation_id", "user_id"}, false},
	{"messages", []string{"id"}, false},
	{"reactions", []string{"message_id", "emoji", "user_id"}, false},
	{"profiles", []string{"user_id"}, false},
	{"jobs", []string{"id"}, false},
	{"job_members", []string{"job_id", "user_id"}, false},
	{"job_status", []string{"job_id"}, false},
	{"idempotency", []string{"user_id", "conversation_id", "key"}, true},
}

// Diff compares two projection databases table by table, row by row in key
// order, and describes each difference; nil means identical. At most 50 are
// listed, then a line says how many more there were. With Only, the rows of
// those partitions are compared (and meta, which counts for every
// partition, is not).
func Diff(ctx context.Context, a, b *DB, opts ...Option) ([]string, error) {
	o := buildOptions(opts)
	n := max(a.n, b.n)
	if o.only != nil {
		if a.n != b.n {
			return nil, fmt.Errorf("diff: %s holds %d partitions, %s %d", a.path, a.n, b.path, b.n)
		}
		if _, err := o.partitions(n); err != nil {
			return nil, fmt.Errorf("diff: %w", err)
		}
	}
	ta, err := a.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("diff: read %s: %w", a.path, err)
	}
	defer ta.Rollback()
	tb, err := b.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("diff: read %s: %w", b.path, err)
	}
	defer tb.Rollback()
	d := &differ{a: a.path, b: b.path, n: n, only: o.only}
	// A live database prunes idempotency records older than its window; a
	// rebuilt one holds them all until it prunes too.
	var horizonA, horizonB string
	if err := ta.QueryRowContext(ctx, `SELECT before FROM idempotency_pruned WHERE id = 1`).Scan(&horizonA); err != nil {
		return nil, fmt.Errorf("diff: read %s: %w", a.path, err)
	}
	if err := tb.QueryRowContext(ctx, `SELECT before FROM idempotency_pruned WHERE id = 1`).Scan(&horizonB); err != nil {
		return nil, fmt.Errorf("diff: read %s: %w", b.path, err)
	}
	horizon := max(horizonA, horizonB)
	for _, t := range diffTables {
		if o.only != nil && partitionTables[t.name].scope == scopeAll {
			continue
		}
		var since *string
		if t.pruned {
			since = &horizon
		}
		if err := d.table(ctx, ta, tb, t.name, t.keys, since); err != nil {
			return nil, fmt.Errorf("diff table %s: %w", t.name, err)
		}
	}
	if d.more > 0 {
		d.out = append(d.out, fmt.Sprintf("... and %d more differences", d.more))
	}
	return d.out, nil
}

type differ struct {
	a, b string
	n    int   // partitions
	only []int // compare only rows of these partitions (nil: all)
	out  []string
	more int
}

func (d *differ) add(format string, args ...any) {
	if len(d.out) < maxDiffs {
		d.out = append(d.out, fmt.Sprintf(format, args...))
		return
	}
	d.more++
}

// tableRows iterates over a table's rows in key order.
type tableRows struct {
	rows *sql.Rows
	cols []string
	cur  []any
	ok   bool
	keep func(row []any) bool // nil: every row
}

// scanTable reads table in key order; since, if set, keeps the rows whose
// at is not older.
func scanTable(ctx context.Context, tx *sql.Tx, table string, keys []string, since *string) (*tableRows, error) {
	q, args := "SELECT * FROM "+table, []any(nil)
	if since != nil {
		q, args = q+" WHERE at >= ?", []any{*since}
	}
	rows, err := tx.QueryContext(ctx, q+" ORDER BY "+strings.Join(keys, ", "), args...)
	if err != nil {
		return nil, err
	}
	cols, err := rows.Columns()
	if err != nil {
		rows.Close()
		return nil, err
	}
	t := &tableRows{rows: rows, cols: cols}
	return t, t.next()
}

func (t *tableRows) next() error {
	t.ok = t.rows.Next()
	if !t.ok {
		return t.rows.Err()
	}
	t.cur = make([]any, len(t.cols))
	ptrs := make([]any, len(t.cols))
	for i := range t.cur {
		ptrs[i] = &t.cur[i]
	}
	if err := t.rows.Scan(ptrs...); err != nil {
		return err
	}
	return t.skip()
}

// skip moves past the rows keep leaves out.
func (t *tableRows) skip() error {
	if t.keep == nil || !t.ok || t.keep(t.cur) {
		return nil
	}
	return t.next()
}

func (d *differ) table(ctx context.Context, ta, tb *sql.Tx, table string, keys []string, since *string) error {
	ra, err := scanTable(ctx, ta, table, keys, since)
	if err != nil {
		return err
	}
	defer ra.rows.Close()
	rb, err := scanTable(ctx, tb, table, keys, since)
	if err != nil {
		return err
	}
	defer rb.rows.Close()
	if strings.Join(ra.cols, ",") != strings.Join(rb.cols, ",") {
		d.add("%s: columns %v in %s, %v in %s", table, ra.cols, d.a, rb.cols, d.b)
		return nil
	}
	if d.only != nil {
		keep, err := rowFilter(table, ra.cols, d.n, d.only)
		if err != nil {
			return err
		}
		ra.keep, rb.keep = keep, keep
		if err := ra.skip(); err != nil {
			return err
		}
		if err := rb.skip(); err != nil {
			return err
		}
	}
	nk := len(keys)
	for ra.ok || rb.ok {
		c := 0
		switch {
		case !ra.ok:
			c = 1
		case !rb.ok:
			c = -1
		default:
			for i := 0; i < nk && c == 0; i++ {
				c = compareValues(ra.cur[i], rb.cur[i])
			}
		}
		switch {
		case c < 0:
			d.add("%s %s: only in %s", table, describeKey(keys, ra.cur), d.a)
			err = ra.next()
		case c > 0:
			d.add("%s %s: only in %s", table, describeKey(keys, rb.cur), d.b)
			err = rb.next()
		default:
			for i := nk; i < len(ra.cols); i++ {
				if compareValues(ra.cur[i], rb.cur[i]) != 0 {
					d.add("%s %s: %s is %s in %s, %s in %s", table, describeKey(keys, ra.cur), ra.cols[i],
						describe(ra.cur[i]), d.a, describe(rb.cur[i]), d.b)
				}
			}
			if err = ra.next(); err == nil {
				err = rb.next()
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func describeKey(keys []string, row []any) string {
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + describe(row[i])
	}
	return strings.Join(parts, " ")
}

func describe(v any) string {
	switch v := v.(type) {
	case nil:
		return "NULL"
	case string:
		return fmt.Sprintf("%q", v)
	case []byte:
		return fmt.Sprintf("%q", v)
	}
	return fmt.Sprint(v)
}

// compareValues orders SQLite values as SQLite does: NULL, numbers, text/blob.
func compareValues(a, b any) int {
	rank := func(v any) int {
		switch v.(type) {
		case nil:
			return 0
		case int64, float64, bool:
			return 1
		}
		return 2
	}
	if c := cmp.Compare(rank(a), rank(b)); c != 0 {
		return c
	}
	switch a := a.(type) {
	case nil:
		return 0
	case int64:
		if b, ok := b.(int64); ok {
			return cmp.Compare(a, b)
		}
		return cmp.Compare(number(a), number(b))
	case float64, bool:
		return cmp.Compare(number(a), number(b))
	}
	return bytes.Compare(raw(a), raw(b))
}

func number(v any) float64 {
	switch v := v.(type) {
	case int64:
		return float64(v)
	case float64:
		return v
	case bool:
		if v {
			return 1
		}
	}
	return 0
}

func raw(v any) []byte {
	switch v := v.(type) {
	case string:
		return []byte(v)
	case []byte:
		return v
	}
	return []byte(fmt.Sprint(v))
}
