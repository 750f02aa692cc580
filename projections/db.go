// Package projections keeps inbox's SQLite read models — conversations,
// members with read watermarks and unread counts, message history, profiles
// and jobs — derived from the INBOX event stream. The stream is the truth: a
// projection can be deleted and rebuilt from sequence 1 at any time.
package projections

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"sync/atomic"

	_ "github.com/mattn/go-sqlite3" // database/sql driver "sqlite3"

	"inbox/eventstore"
	"inbox/internal/private"
)

// schemaVersion is stored in PRAGMA user_version. Version 2 added the
// idempotency record; version 3 a message's lifecycle (edits, deletions,
// reactions, erasure, retention) and read watermarks that no longer depend
// on which messages exist; version 4 an applied sequence per partition
// (the applied table). A version 3 database is migrated in place (one
// partition: its meta row moves to the applied table); one older than that
// is emptied when opened and rebuilt from the stream by the projector
// (RebuiltFrom).
const schemaVersion = 4

// ErrNotFound is returned by lookups of a row that does not exist.
var ErrNotFound = errors.New("not found")

const schema = `
CREATE TABLE IF NOT EXISTS conversations (
	id                INTEGER PRIMARY KEY,
	created_seq       INTEGER NOT NULL,
	created_at        TEXT    NOT NULL,
	last_message_id   INTEGER NOT NULL DEFAULT 0,
	last_activity_seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS members (
	conversation_id INTEGER NOT NULL,
	user_id         TEXT    NOT NULL,
	role            TEXT    NOT NULL,
	joined_seq      INTEGER NOT NULL,
	read_up_to      INTEGER NOT NULL DEFAULT 0,
	unread          INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (conversation_id, user_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS members_by_user ON members (user_id, conversation_id);
CREATE TABLE IF NOT EXISTS messages (
	id              INTEGER PRIMARY KEY,
	conversation_id INTEGER NOT NULL,
	sender_id       TEXT    NOT NULL,
	sender_name     TEXT    NOT NULL,
	sender_avatar   TEXT,
	text            TEXT    NOT NULL,
	type            TEXT    NOT NULL,
	client_msg_id   TEXT    NOT NULL DEFAULT '',
	created_at      TEXT    NOT NULL,
	is_read         INTEGER NOT NULL DEFAULT 0,
	edited_at       TEXT,
	deleted         INTEGER NOT NULL DEFAULT 0,
	erased          INTEGER NOT NULL DEFAULT 0,
	life_seq        INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages (conversation_id, id);
CREATE INDEX IF NOT EXISTS messages_by_sender ON messages (sender_id, id);
CREATE TABLE IF NOT EXISTS reactions (
	message_id INTEGER NOT NULL,
	emoji      TEXT    NOT NULL,
	user_id    TEXT    NOT NULL,
	seq        INTEGER NOT NULL,
	PRIMARY KEY (message_id, emoji, user_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS profiles (
	user_id     TEXT PRIMARY KEY,
	name        TEXT NOT NULL,
	avatar      TEXT,
	updated_seq INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS jobs (
	id          INTEGER PRIMARY KEY,
	created_seq INTEGER NOT NULL,
	created_at  TEXT    NOT NULL
);
CREATE TABLE IF NOT EXISTS job_members (
	job_id  INTEGER NOT NULL,
	user_id TEXT    NOT NULL,
	PRIMARY KEY (job_id, user_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS job_status (
	job_id     INTEGER PRIMARY KEY,
	status     TEXT    NOT NULL,
	detail     TEXT,
	seq        INTEGER NOT NULL,
	updated_at TEXT    NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency (
	user_id         TEXT    NOT NULL,
	conversation_id INTEGER NOT NULL,
	key             TEXT    NOT NULL,
	op              TEXT    NOT NULL,
	fingerprint     TEXT    NOT NULL,
	seq             INTEGER NOT NULL,
	at              TEXT    NOT NULL,
	PRIMARY KEY (user_id, conversation_id, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idempotency_by_at ON idempotency (at);
CREATE INDEX IF NOT EXISTS idempotency_by_seq ON idempotency (seq);
CREATE TABLE IF NOT EXISTS idempotency_pruned (
	id     INTEGER PRIMARY KEY CHECK (id = 1),
	before TEXT    NOT NULL
);
INSERT OR IGNORE INTO idempotency_pruned (id, before) VALUES (1, '');
CREATE TABLE IF NOT EXISTS meta (
	id         INTEGER PRIMARY KEY CHECK (id = 1),
	partitions INTEGER NOT NULL DEFAULT 0
);
INSERT OR IGNORE INTO meta (id) VALUES (1);
CREATE TABLE IF NOT EXISTS applied (
	k              INTEGER PRIMARY KEY,
	seq            INTEGER NOT NULL,
	skipped        INTEGER NOT NULL DEFAULT 0,
	expired_before INTEGER NOT NULL DEFAULT 0
);
`

// oldTables are every table a database of an older schema may hold.
var oldTables = []string{"conversations", "members", "messages", "reactions", "profiles", "jobs", "job_members",
	"job_status", "idempotency", "idempotency_pruned", "meta", "applied"}

// DB is an open projection database: one writer connection (the projector's)
// and a pool of readers that see committed state through WAL.
//
// It holds the events of a stream of some number of partitions (Bind), and
// the last stream sequence applied from each: applying a partition's batch
// stores that partition's sequence in the same transaction.
type DB struct {
	path string
	w    *sql.DB // single connection, BEGIN IMMEDIATE
	r    *sql.DB // readers, deferred transactions

	n       int             // partitions (0: not bound yet)
	applied []atomic.Uint64 // per partition: last applied stream sequence, as committed
	skipped atomic.Uint64   // undecodable events skipped in every partition, as committed

	rebuiltFrom int // the schema version of the database emptied on open (0: none)

	keys keyFilter // the idempotency keys the table may hold (keyfilter.go)
}

// Open opens (creating if missing) the projection database at path in WAL
// mode with synchronous=NORMAL. A file that is not a usable SQLite database,
// or a folder that cannot be written, fails with an error naming path.
func Open(path string) (*DB, error) {
	return open(path, "WAL", "NORMAL")
}

// open opens path with the given journal mode and sync level (the rebuild
// loads a fresh file without a journal, then switches it to WAL).
func open(path, journal, sync string) (*DB, error) {
	if path == "" {
		return nil, errors.New("open projection database: empty path")
	}
	if err := ownerOnly(path); err != nil {
		return nil, fmt.Errorf("open projection database %s: %w", path, err)
	}
	dsn := func(txlock string) string {
		q := url.Values{}
		q.Set("_journal_mode", journal)
		q.Set("_synchronous", sync)
		q.Set("_busy_timeout", "5000")
		q.Set("_txlock", txlock)
		// Deleted and overwritten content is zeroed in the file, not left
		// in free space: an erased message must leave no trace (docs/erasure.md).
		q.Set("_secure_delete", "on")
		q.Set("_stmt_cache_size", "32") // a connection keeps its statements prepared
		return "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
	}
	// The writer keeps more pages in memory than a reader: a batch touches
	// pages all over the tables, and each one it must read back costs a
	// system call.
	w, err := sql.Open("sqlite3", dsn("immediate")+"&_cache_size="+strconv.Itoa(-writerCacheKiB))
	if err != nil {
		return nil, fmt.Errorf("open projection database %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	db := &DB{path: path, w: w}
	if err := db.init(); err != nil {
		w.Close()
		return nil, fmt.Errorf("open projection database %s: %w", path, err)
	}
	if err := db.buildKeyFilter(context.Background()); err != nil {
		w.Close()
		return nil, fmt.Errorf("open projection database %s: %w", path, err)
	}
	r, err := sql.Open("sqlite3", dsn("deferred")+"&_query_only=1")
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("open projection database %s: %w", path, err)
	}
	// A bounded pool that stays open: with many concurrent lookups (a
	// keyed send each) a pool whose idle connections are dropped opens and
	// closes SQLite connections all the time, and prepares every query
	// again on each.
	n := readers()
	r.SetMaxOpenConns(n)
	r.SetMaxIdleConns(n)
	db.r = r
	return db, nil
}

// writerCacheKiB is the writer connection's page cache.
const writerCacheKiB = 32 << 10

// walCheckpointPages is how many pages the WAL grows to before the writer
// copies them into the database (SQLite's default is 1,000). A page changed
// by many batches in between is copied once, and the copies, each a system
// call and each checkpoint ending with an fsync, were most of a batch's cost
// under load; the WAL file takes up to 40 MB.
const walCheckpointPages = 10_000

// readers is how many reading connections a database keeps: enough for the
// cores, a few more for queries that wait on I/O.
func readers() int { return max(4, 2*runtime.GOMAXPROCS(0)) }

// init checks the file, creates the schema if missing and loads the meta row.
func (db *DB) init() error {
	ctx := context.Background()
	// The writer has one connection, kept open: a setting made on it stays.
	if _, err := db.w.ExecContext(ctx, fmt.Sprintf("PRAGMA wal_autocheckpoint = %d", walCheckpointPages)); err != nil {
		return err
	}
	var v int
	if err := db.w.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return err
	}
	if v > schemaVersion {
		return fmt.Errorf("schema version %d is newer than this build's %d", v, schemaVersion)
	}
	if v < schemaVersion {
		if err := db.migrate(ctx, v); err != nil {
			return err
		}
	}
	if err := db.w.QueryRowContext(ctx, "SELECT partitions FROM meta WHERE id = 1").Scan(&db.n); err != nil {
		return fmt.Errorf("read meta: %w", err)
	}
	db.applied = make([]atomic.Uint64, db.n)
	rows, err := db.w.QueryContext(ctx, "SELECT k, seq, skipped FROM applied")
	if err != nil {
		return fmt.Errorf("read applied sequences: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var k int
		var seq, skipped uint64
		if err := rows.Scan(&k, &seq, &skipped); err != nil {
			return fmt.Errorf("read applied sequences: %w", err)
		}
		if k < 0 || k >= db.n {
			return fmt.Errorf("applied sequence of partition %d in a database of %d partitions", k, db.n)
		}
		db.applied[k].Store(seq)
		db.skipped.Add(skipped)
	}
	return rows.Err()
}

// ErrPartitions: the database holds the events of another number of
// partitions than the stream has.
var ErrPartitions = errors.New("read model of another partition count")

// Bind ties the database to a stream of n partitions: a new one records n;
// one that holds another count is refused with ErrPartitions (its ids mean
// other events: rebuild it with inbox replay). Call it once, before any
// other use.
func (db *DB) Bind(n int) error {
	n = max(n, 1)
	switch db.n {
	case n:
		return nil
	case 0:
	default:
		return fmt.Errorf("%w: %s holds the events of %d partition(s), the stream has %d: rebuild it from the stream (inbox replay)", ErrPartitions, db.path, db.n, n)
	}
	ctx := context.Background()
	tx, err := db.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("record %d partitions in %s: %w", n, db.path, err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, "UPDATE meta SET partitions = ? WHERE id = 1", n); err != nil {
		return fmt.Errorf("record %d partitions in %s: %w", n, db.path, err)
	}
	for k := range n {
		if _, err := tx.ExecContext(ctx, "INSERT OR IGNORE INTO applied (k, seq) VALUES (?, 0)", k); err != nil {
			return fmt.Errorf("record %d partitions in %s: %w", n, db.path, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("record %d partitions in %s: %w", n, db.path, err)
	}
	db.n, db.applied = n, make([]atomic.Uint64, n)
	return nil
}

// Partitions is the number of partitions the database holds (0: not bound).
func (db *DB) Partitions() int { return db.n }

// Applied is the last stream sequence applied from each partition, as
// committed.
func (db *DB) Applied() eventstore.Cursor {
	c := eventstore.NewCursor(db.n)
	for k := range db.applied {
		c[k] = db.applied[k].Load()
	}
	return c
}

// migrate creates the schema in one transaction. A version 3 database gets
// its bookkeeping per partition (it holds one). One of an older version is
// emptied first: the read model is derived, and the projector rebuilds it
// from the stream (its consumer restarts from sequence 1).
func (db *DB) migrate(ctx context.Context, from int) (err error) {
	tx, err := db.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrate schema from version %d: %w", from, err)
	}
	defer func() {
		if err != nil {
			tx.Rollback()
		}
	}()
	if from > 0 && from < 3 {
		for _, t := range oldTables {
			if _, err := tx.ExecContext(ctx, "DROP TABLE IF EXISTS "+t); err != nil {
				return fmt.Errorf("empty a version %d database: %w", from, err)
			}
		}
		db.rebuiltFrom = from
	}
	if _, err := tx.ExecContext(ctx, schema); err != nil {
		return fmt.Errorf("create schema: %w", err)
	}
	if from == 3 {
		// Written before partitions existed: one partition, whose applied
		// sequence, skipped count and expiry horizon move from meta to the
		// applied table.
		for _, q := range []string{
			`ALTER TABLE meta ADD COLUMN partitions INTEGER NOT NULL DEFAULT 0`,
			`INSERT INTO applied (k, seq, skipped, expired_before) SELECT 0, applied_seq, skipped, expired_before FROM meta WHERE id = 1`,
			`UPDATE meta SET partitions = 1 WHERE id = 1`,
			`ALTER TABLE meta DROP COLUMN applied_seq`,
			`ALTER TABLE meta DROP COLUMN skipped`,
			`ALTER TABLE meta DROP COLUMN expired_before`,
		} {
			if _, err := tx.ExecContext(ctx, q); err != nil {
				return fmt.Errorf("migrate schema from version 3: %s: %w", q, err)
			}
		}
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", schemaVersion)); err != nil {
		return fmt.Errorf("set schema version: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("migrate schema from version %d: %w", from, err)
	}
	return nil
}

// RebuiltFrom is the schema version of a database that Open found older
// than this build's and emptied, to be rebuilt from the stream; 0 if none.
func (db *DB) RebuiltFrom() int { return db.rebuiltFrom }

// Path is the database file's path.
func (db *DB) Path() string { return db.path }

// Close closes the database.
func (db *DB) Close() error {
	return errors.Join(db.r.Close(), db.w.Close())
}

// ownerOnly makes the database file (created here if missing, so that
// SQLite gives its -wal and -shm files the same mode) and its -wal and -shm
// files readable by their owner only.
func ownerOnly(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, private.FileMode)
	if err != nil {
		return err
	}
	f.Close()
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if _, err := private.File(p); err != nil {
			return err
		}
	}
	return nil
}
