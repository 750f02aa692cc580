package projections

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"inbox/eventstore"
)

// downgradeMeta turns a one-partition database's bookkeeping back into its
// version 3 shape: one applied_seq, skipped count and expiry horizon in meta.
func downgradeMeta(t testing.TB, db *DB) {
	t.Helper()
	for _, q := range []string{
		`CREATE TABLE meta_v3 (id INTEGER PRIMARY KEY CHECK (id = 1), applied_seq INTEGER NOT NULL, skipped INTEGER NOT NULL,
			expired_before INTEGER NOT NULL DEFAULT 0)`,
		`INSERT INTO meta_v3 (id, applied_seq, skipped, expired_before) SELECT 1, seq, skipped, expired_before FROM applied WHERE k = 0`,
		`DROP TABLE meta`,
		`DROP TABLE applied`,
		`ALTER TABLE meta_v3 RENAME TO meta`,
		`PRAGMA user_version = 3`,
	} {
		if _, err := db.w.ExecContext(context.Background(), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// TestMigrateVersion3Database: a read model written before partitions
// existed keeps its data and its one applied sequence (now partition 0's,
// with its skipped count), and the projector resumes right after it.
func TestMigrateVersion3Database(t *testing.T) {
	e := newEnv(t)
	path := filepath.Join(t.TempDir(), "v3.db")
	db, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	p := NewProjector(ProjectorConfig{Name: "v3"}, ProjectorDeps{DB: db, Store: e.store, Logger: testLogger(t)})
	stop := startProjector(t, p)
	e.append(t, created(1, "alice", "bob"))
	for i := range 10 {
		e.append(t, msg(1, "alice", fmt.Sprint("m", i)))
	}
	if err := e.nc.Publish("inbox.conv.1.msg", []byte("junk")); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if n := e.lastSeq(t); n != 12 {
			return fmt.Errorf("last seq %d", n)
		}
		return nil
	})
	waitApplied(t, e, p)
	stop()
	downgradeMeta(t, db)
	db.Close()

	db, err = Open(path)
	if err != nil {
		t.Fatalf("open a version 3 database: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	if db.RebuiltFrom() != 0 || db.Partitions() != 1 || db.Applied().String() != "12" || db.skipped.Load() != 1 {
		t.Fatalf("migrated: %d partitions, applied %s, skipped %d; want 1, 12, 1", db.Partitions(), db.Applied(), db.skipped.Load())
	}
	var cols int
	if err := db.r.QueryRow(`SELECT count(*) FROM pragma_table_info('meta') WHERE name IN ('applied_seq', 'skipped', 'expired_before')`).Scan(&cols); err != nil || cols != 0 {
		t.Fatalf("meta keeps %d old columns (%v)", cols, err)
	}
	p = NewProjector(ProjectorConfig{Name: "v3"}, ProjectorDeps{DB: db, Store: e.store, Logger: testLogger(t)})
	startProjector(t, p)
	e.append(t, msg(1, "bob", "after"))
	waitApplied(t, e, p)
	if n, err := db.Unread(context.Background(), 1, "alice"); err != nil || n != 1 {
		t.Fatalf("alice unread %d (%v), want 1: the migrated database was applied again or not resumed", n, err)
	}
	requireSame(t, db, rebuild(t, e))
}

// TestBindRefusesAnotherCount: a database keeps the partition count it
// was first bound to.
func TestBindRefusesAnotherCount(t *testing.T) {
	db := openDB(t, "bound.db")
	if db.Partitions() != 0 {
		t.Fatalf("a new database has %d partitions", db.Partitions())
	}
	if err := db.Bind(3); err != nil {
		t.Fatal(err)
	}
	if err := db.Bind(3); err != nil {
		t.Fatalf("bind to the same count again: %v", err)
	}
	err := db.Bind(1)
	if err == nil || !errors.Is(err, ErrPartitions) {
		t.Fatalf("bind a 3-partition database to 1: %v, want ErrPartitions", err)
	}
	path := db.Path()
	db.Close()
	again, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if again.Partitions() != 3 || !slices.Equal(again.Applied(), eventstore.Cursor{0, 0, 0}) {
		t.Fatalf("reopened: %d partitions, applied %v", again.Partitions(), again.Applied())
	}
}
