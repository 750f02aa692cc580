package projections

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"inbox/eventstore"
	"inbox/internal/testutil"
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
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
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

// TestPartitionedProjection (issue 16): with 3 partitions, each applied by
// its own consumer with its own applied sequence, the read model equals a
// rebuild, per partition and whole; a damaged row of one partition is
// found by verifying that partition (and not another), and replaying that
// partition alone repairs it, leaving the others' rows as they were.
func TestPartitionedProjection(t *testing.T) {
	e := newEnvN(t, 3)
	db := openDB(t, "live.db")
	p := NewProjector(ProjectorConfig{Name: "p3", KeyWindow: time.Hour}, ProjectorDeps{DB: db, Store: e.store, Logger: testLogger(t)})
	startProjector(t, p)
	e.append(t, &eventstore.Profile{UserID: "alice", Name: "Alice"})
	byPart := map[int][]int64{}
	for id := int64(1); id <= 12; id++ {
		e.append(t, created(id, "alice", "bob"))
		byPart[eventstore.Partition(id, 3)] = append(byPart[eventstore.Partition(id, 3)], id)
	}
	if len(byPart) != 3 {
		t.Fatalf("12 conversations in partitions %v", byPart)
	}
	var last uint64
	for i := range 60 {
		conv := int64(i%12 + 1)
		last = e.append(t, keyedMsg(conv, []string{"alice", "bob"}[i%2], fmt.Sprint("k", i), fmt.Sprint("text ", i), time.Time{}))
		if i%7 == 0 {
			e.append(t, &eventstore.Read{ConversationID: conv, UserID: "bob", UpTo: int64(last)})
		}
	}
	// A message's lifecycle, in its conversation's partition.
	for k, ids := range byPart {
		m := e.append(t, msg(ids[0], "alice", fmt.Sprint("to change in ", k)))
		e.append(t, &eventstore.Edit{ConversationID: ids[0], MessageID: int64(m), UserID: "alice", Text: "changed"})
		e.append(t, &eventstore.React{ConversationID: ids[0], MessageID: int64(m), UserID: "bob", Emoji: "👍", On: true})
	}
	// Read-your-writes waits on the write's partition.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.WaitFor(ctx, last); err != nil {
		t.Fatal(err)
	}
	if msgs, err := db.Messages(ctx, int64(60-1)%12+1, 0, 1); err != nil || len(msgs) != 1 || uint64(msgs[0].ID) != last {
		t.Fatalf("the last message right after WaitFor: %v, %v; want id %d", msgs, err, last)
	}
	waitApplied(t, e, p)
	if db.Partitions() != 3 || len(p.Applied()) != 3 {
		t.Fatalf("bound to %d partitions, applied %v", db.Partitions(), p.Applied())
	}
	for k := range 3 {
		if p.Applied()[k] == 0 {
			t.Fatalf("partition %d applied nothing: %v", k, p.Applied())
		}
	}
	requireSame(t, db, rebuild(t, e))
	verify := func(k int) []string {
		t.Helper()
		var opts []Option
		if k >= 0 {
			opts = append(opts, Only(k))
		}
		diffs, err := Verify(ctx, e.store, db, filepath.Join(t.TempDir(), "scratch.db"), nil, opts...)
		if err != nil {
			t.Fatal(err)
		}
		return diffs
	}
	for k := -1; k < 3; k++ {
		if d := verify(k); len(d) > 0 {
			t.Fatalf("verify partition %d of a healthy read model: %v", k, d)
		}
	}

	// Damage a row of a conversation in partition 1.
	victim := byPart[1][0]
	if _, err := db.w.ExecContext(ctx, `UPDATE members SET unread = 99 WHERE conversation_id = ? AND user_id = 'bob'`, victim); err != nil {
		t.Fatal(err)
	}
	if d := verify(1); len(d) != 1 || !strings.Contains(d[0], fmt.Sprintf("conversation_id=%d", victim)) {
		t.Fatalf("verify partition 1 of a damaged read model: %v", d)
	}
	for _, k := range []int{0, 2} {
		if d := verify(k); len(d) > 0 {
			t.Fatalf("verify partition %d found another partition's damage: %v", k, d)
		}
	}
	if d := verify(-1); len(d) != 1 {
		t.Fatalf("verify every partition: %v", d)
	}

	// Replay partition 1 alone into a copy: repaired, the rest untouched.
	out := filepath.Join(t.TempDir(), "replayed.db")
	stats, err := RebuildPartition(ctx, e.store, db, out, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if stats.Events == 0 || !slices.Equal(stats.Applied, p.Applied()) {
		t.Fatalf("replay of partition 1: %+v (live applied %v)", stats, p.Applied())
	}
	replayed, err := Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer replayed.Close()
	requireSame(t, replayed, rebuild(t, e))
	if _, err := RebuildPartition(ctx, e.store, db, filepath.Join(t.TempDir(), "x.db"), 3, nil); err == nil || !strings.Contains(err.Error(), "0 to 2") {
		t.Fatalf("replay of partition 3 of 3: %v", err)
	}
	if _, err := Verify(ctx, e.store, db, filepath.Join(t.TempDir(), "y.db"), nil, Only(5)); err == nil {
		t.Fatal("verify of partition 5 of 3 answered")
	}
}

// TestConversationListOrderAcrossPartitions: with more than one partition
// the list is newest activity first by time, not by id: a conversation in a
// busy partition (high sequences) with old messages comes after one in a
// quiet partition with a newer message.
func TestConversationListOrderAcrossPartitions(t *testing.T) {
	e := newEnvN(t, 3)
	db := openDB(t, "order.db")
	p := NewProjector(ProjectorConfig{Name: "o"}, ProjectorDeps{DB: db, Store: e.store, Logger: testLogger(t)})
	startProjector(t, p)
	busy, quiet := int64(1), int64(1)
	for eventstore.Partition(quiet, 3) == eventstore.Partition(busy, 3) {
		quiet++
	}
	old := time.Date(2025, 1, 15, 10, 0, 0, 0, time.UTC)
	for _, id := range []int64{busy, quiet} {
		c := created(id, "alice", "bob")
		c.At = old
		e.append(t, c)
	}
	for i := range 40 {
		m := msg(busy, "bob", fmt.Sprint("old ", i))
		m.At = old.Add(time.Duration(i) * time.Second)
		e.append(t, m)
	}
	newer := msg(quiet, "bob", "newer")
	newer.At = old.Add(time.Hour)
	e.append(t, newer)
	waitApplied(t, e, p)
	convs, err := db.Conversations(context.Background(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	if len(convs) != 2 || convs[0].ID != quiet || convs[1].ID != busy {
		var got []int64
		for _, c := range convs {
			got = append(got, c.ID)
		}
		t.Fatalf("alice's list %v, want %d (newer message) before %d (busier partition, older messages)", got, quiet, busy)
	}
}

// TestProjectorOfOnePartition: a projector of one partition (as --role
// projector runs one per partition, each with its own database) applies
// only that partition's events, is judged on it alone (read-your-writes,
// Covers), and its database verifies clean on its partition.
func TestProjectorOfOnePartition(t *testing.T) {
	e := newEnvN(t, 3)
	one := make([]*Projector, 3)
	for k := range one {
		one[k] = NewProjector(ProjectorConfig{Name: "one", Partitions: []int{k}}, ProjectorDeps{DB: openDB(t, fmt.Sprint("p", k, ".db")), Store: e.store, Logger: testLogger(t)})
		startProjector(t, one[k])
	}
	e.append(t, &eventstore.Profile{UserID: "alice", Name: "Alice"})
	var last uint64
	for conv := int64(1); conv <= 12; conv++ {
		e.append(t, created(conv, "alice", "bob"))
		last = e.append(t, msg(conv, "alice", "hello"))
		e.append(t, &eventstore.React{ConversationID: conv, MessageID: int64(last), UserID: "bob", Emoji: "👍", On: true})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	mine, _ := eventstore.Split(3, last)
	if err := one[mine].WaitFor(ctx, last); err != nil {
		t.Fatal(err)
	}
	for k, p := range one {
		if got := p.Partitions(); !slices.Equal(got, []int{k}) {
			t.Fatalf("projector %d applies %v", k, got)
		}
		waitApplied(t, e, p)
		if ok, err := p.Covers(ctx, time.Now().Add(-time.Second)); err != nil || !ok {
			t.Fatalf("projector of partition %d: Covers = %v, %v", k, ok, err)
		}
		for j, seq := range p.Applied() {
			if (j == k) != (seq > 0) {
				t.Fatalf("projector of partition %d applied %v", k, p.Applied())
			}
		}
		convs, err := p.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for id := range convs.Conversations {
			if eventstore.Partition(id, 3) != k {
				t.Fatalf("projector of partition %d holds conversation %d of partition %d", k, id, eventstore.Partition(id, 3))
			}
		}
		if _, ok := convs.Profiles["alice"]; ok != (k == 0) {
			t.Fatalf("projector of partition %d holds alice's profile: %v", k, ok)
		}
		diffs, err := Verify(ctx, e.store, p.db, filepath.Join(t.TempDir(), "scratch.db"), nil, Only(k))
		if err != nil || len(diffs) > 0 {
			t.Fatalf("verify the database of partition %d: %v %v", k, err, diffs)
		}
	}
}
