package projections

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"sync"

	"github.com/bits-and-blooms/bloom/v3"

	"inbox/eventstore"
)

// The idempotency record is asked about every keyed send, and the answer is
// almost always "never seen": a new client_msg_id. A Bloom filter of every
// key the table holds answers most of those in memory; only a key the
// filter may hold (one seen before, or about 1% of new ones) is looked up.
//
// The filter holds a superset of the table's keys at all times: it is built
// from the table with the writer's lock held (no batch is applied
// meanwhile), and a batch adds its keys before it commits. Keys pruned or
// erased stay until the next build, which only costs lookups; the filter is
// built again after a prune, and when it has taken twice the keys it was
// sized for.

// Sizes of the filter: at least minFilterKeys, room for twice the keys the
// table held when it was built, a false positive rate of filterFP.
const (
	minFilterKeys = 1 << 20
	filterFP      = 0.01
)

// keyFilter is the DB's filter of its idempotency keys.
type keyFilter struct {
	mu    sync.RWMutex
	f     *bloom.BloomFilter
	keys  uint // the keys it was sized for
	added uint // keys added since it was built
}

// keyBytes is the filter's form of k: user and conversation end with a byte
// neither can hold, and the client's key, any bytes, comes last.
func keyBytes(b []byte, k eventstore.Key) []byte {
	b = append(b, k.UserID...)
	b = append(b, 0)
	b = strconv.AppendInt(b, k.ConversationID, 10)
	b = append(b, 0)
	return append(b, k.ClientKey...)
}

// mayHold reports whether the table may hold k: false means it does not.
func (kf *keyFilter) mayHold(k eventstore.Key) bool {
	var buf [256]byte
	b := keyBytes(buf[:0], k)
	kf.mu.RLock()
	defer kf.mu.RUnlock()
	return kf.f == nil || kf.f.Test(b)
}

// add records that a batch is storing k.
func (kf *keyFilter) add(k eventstore.Key) {
	var buf [256]byte
	b := keyBytes(buf[:0], k)
	kf.mu.Lock()
	defer kf.mu.Unlock()
	if kf.f != nil {
		kf.f.Add(b)
		kf.added++
	}
}

// full reports whether the filter has taken twice the keys it was sized for.
func (kf *keyFilter) full() bool {
	kf.mu.RLock()
	defer kf.mu.RUnlock()
	return kf.f != nil && kf.added > 2*kf.keys
}

// buildKeyFilter builds the filter from every key the table holds, in a
// writer transaction: no batch adds a key meanwhile.
func (db *DB) buildKeyFilter(ctx context.Context) error {
	tx, err := db.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("build idempotency key filter: %w", err)
	}
	defer tx.Rollback()
	var n uint
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM idempotency`).Scan(&n); err != nil {
		return fmt.Errorf("build idempotency key filter: %w", err)
	}
	keys := max(minFilterKeys, 2*n)
	f := bloom.NewWithEstimates(keys, filterFP)
	var b []byte
	err = each(ctx, tx, `SELECT user_id, conversation_id, key FROM idempotency`, func(rows *sql.Rows) error {
		var k eventstore.Key
		if err := rows.Scan(&k.UserID, &k.ConversationID, &k.ClientKey); err != nil {
			return err
		}
		b = keyBytes(b[:0], k)
		f.Add(b)
		return nil
	})
	if err != nil {
		return fmt.Errorf("build idempotency key filter: %w", err)
	}
	db.keys.mu.Lock()
	db.keys.f, db.keys.keys, db.keys.added = f, keys, 0
	db.keys.mu.Unlock()
	return nil
}
