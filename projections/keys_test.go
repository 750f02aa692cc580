package projections

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"inbox/eventstore"
	"inbox/internal/testutil"
)

func keyedMsg(conv int64, sender, key, text string, at time.Time) *eventstore.Message {
	m := msg(conv, sender, text)
	m.ClientMsgID, m.At = key, at
	return m
}

func TestKeyRecordFollowsTheStream(t *testing.T) {
	e := newEnv(t)
	db := openDB(t, "k.db")
	p := NewProjector(ProjectorConfig{Name: "k"}, ProjectorDeps{DB: db, Store: e.store, Logger: testLogger(t)})
	startProjector(t, p)
	at := time.Date(2025, 1, 15, 10, 30, 0, 0, time.UTC)
	e.append(t, created(1, "alice", "bob"))
	e.append(t, created(2, "alice", "bob"))
	s1 := e.append(t, keyedMsg(1, "alice", "c-1", "one", at))
	s2 := e.append(t, keyedMsg(2, "alice", "c-1", "two", at.Add(time.Second)))
	e.append(t, keyedMsg(1, "bob", "c-1", "three", at))
	e.append(t, msg(1, "alice", "no key"))
	waitApplied(t, e, p)
	ctx := context.Background()
	lookup := func(user string, conv int64, key string) (eventstore.KeyRecord, bool) {
		t.Helper()
		rec, found, err := p.KeyRecord(ctx, eventstore.Key{UserID: user, ConversationID: conv, ClientKey: key})
		if err != nil {
			t.Fatal(err)
		}
		return rec, found
	}
	rec, found := lookup("alice", 1, "c-1")
	want := eventstore.KeyRecord{Keyed: eventstore.Keyed{Key: eventstore.Key{UserID: "alice", ConversationID: 1, ClientKey: "c-1"},
		Op: eventstore.OpSend, Fingerprint: eventstore.Fingerprint("TEXT", "one")}, Seq: s1, At: at}
	if !found || rec != want {
		t.Fatalf("record of alice's c-1 in 1 = %+v (found %v), want %+v", rec, found, want)
	}
	if rec, found := lookup("alice", 2, "c-1"); !found || rec.Seq != s2 || rec.ConversationID != 2 {
		t.Fatalf("record of alice's c-1 in 2 = %+v (found %v), want seq %d", rec, found, s2)
	}
	if _, found := lookup("alice", 1, "c-2"); found {
		t.Fatal("a key never sent has a record")
	}
	// A key sent again (after its window) names the newest message.
	s4 := e.append(t, keyedMsg(1, "alice", "c-1", "one again", at.Add(48*time.Hour)))
	waitApplied(t, e, p)
	if rec, _ := lookup("alice", 1, "c-1"); rec.Seq != s4 || rec.Fingerprint != eventstore.Fingerprint("TEXT", "one again") {
		t.Fatalf("record after a reuse = %+v, want seq %d", rec, s4)
	}
	requireSame(t, db, rebuild(t, e))
}

// TestOlderSchemaRebuilt: a read model of an older schema (version 2:
// watermarks and activity that followed which messages existed) is emptied
// when opened, and its projector rebuilds it from the stream to what a
// fresh rebuild holds.
func TestOlderSchemaRebuilt(t *testing.T) {
	e := newEnv(t)
	path := filepath.Join(t.TempDir(), "v2.db")
	db, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	p := NewProjector(ProjectorConfig{Name: "v2"}, ProjectorDeps{DB: db, Store: e.store, Logger: testLogger(t)})
	stop := startProjector(t, p)
	e.append(t, created(1, "alice", "bob"))
	for i := range 10 {
		e.append(t, keyedMsg(1, "alice", fmt.Sprint("k", i%4), fmt.Sprint("text ", i), time.Time{}))
		e.append(t, msg(1, "bob", fmt.Sprint("reply ", i)))
	}
	waitApplied(t, e, p)
	stop()
	ctx := context.Background()
	for _, q := range []string{`UPDATE members SET read_up_to = 1`, `PRAGMA user_version = 2`} {
		if _, err := db.w.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()

	db, err = Open(path)
	if err != nil {
		t.Fatalf("open a version 2 database: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	var v int
	if err := db.r.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&v); err != nil || v != schemaVersion {
		t.Fatalf("user_version %d (%v), want %d", v, err, schemaVersion)
	}
	if db.RebuiltFrom() != 2 || db.Partitions() != 0 {
		t.Fatalf("RebuiltFrom %d, %d partitions; want 2 and 0 (emptied)", db.RebuiltFrom(), db.Partitions())
	}
	p = NewProjector(ProjectorConfig{Name: "v2"}, ProjectorDeps{DB: db, Store: e.store, Logger: testLogger(t)})
	startProjector(t, p)
	waitApplied(t, e, p)
	requireSame(t, db, rebuild(t, e))
}

// TestPruneKeys: records older than the window go; Diff compares only what
// both databases still hold, so a pruned live database still verifies.
func TestPruneKeys(t *testing.T) {
	e := newEnv(t)
	db := openDB(t, "p.db")
	p := NewProjector(ProjectorConfig{Name: "p", KeyWindow: time.Hour}, ProjectorDeps{DB: db, Store: e.store, Logger: testLogger(t)})
	startProjector(t, p)
	now := time.Now().UTC()
	e.append(t, created(1, "alice"))
	e.append(t, keyedMsg(1, "alice", "old", "x", now.Add(-3*time.Hour)))
	e.append(t, keyedMsg(1, "alice", "recent", "x", now.Add(-10*time.Minute)))
	waitApplied(t, e, p) // the first batch prunes
	ctx := context.Background()
	count := func(d *DB) int {
		var n int
		if err := d.r.QueryRowContext(ctx, `SELECT count(*) FROM idempotency`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if n := count(db); n != 1 {
			return fmt.Errorf("%d records, want 1", n)
		}
		return nil
	})
	if _, found, _ := db.KeyRecord(ctx, eventstore.Key{UserID: "alice", ConversationID: 1, ClientKey: "recent"}); !found {
		t.Fatal("a record within the window was pruned")
	}
	rebuilt := rebuild(t, e)
	if n := count(rebuilt); n != 2 {
		t.Fatalf("rebuilt database holds %d records, want 2 (it has not pruned)", n)
	}
	requireSame(t, db, rebuilt)
	if _, err := db.w.ExecContext(ctx, `UPDATE idempotency SET fingerprint = 'tampered'`); err != nil {
		t.Fatal(err)
	}
	if diffs, err := Diff(ctx, db, rebuilt); err != nil || len(diffs) != 1 {
		t.Fatalf("diff of a tampered record: %q (%v)", diffs, err)
	}
}

func TestMessageConversations(t *testing.T) {
	e := newEnv(t)
	db := openDB(t, "m.db")
	p := NewProjector(ProjectorConfig{Name: "m"}, ProjectorDeps{DB: db, Store: e.store, Logger: testLogger(t)})
	stop := startProjector(t, p)
	e.append(t, created(1, "alice"))
	e.append(t, created(2, "alice"))
	m1 := e.append(t, msg(1, "alice", "one"))
	m2 := e.append(t, msg(2, "alice", "two"))
	rd := e.append(t, &eventstore.Read{ConversationID: 1, UserID: "alice", UpTo: int64(m1)})
	waitApplied(t, e, p)
	stop()
	later := e.append(t, msg(1, "alice", "not applied"))
	applied, convs, err := p.MessageConversations(context.Background(), []int64{int64(m1), int64(m2), int64(rd), int64(later), int64(m1)})
	if err != nil {
		t.Fatal(err)
	}
	if applied.String() != fmt.Sprint(rd) || len(convs) != 2 || convs[int64(m1)] != 1 || convs[int64(m2)] != 2 {
		t.Fatalf("MessageConversations = %d, %v; want applied %d and {%d:1 %d:2}", applied, convs, rd, m1, m2)
	}
}

// TestCovers: the read model covers a moment when its last applied event is
// no older, or when it has applied all the stream held then; a stalled
// projector does not cover now.
func TestCovers(t *testing.T) {
	e := newEnv(t)
	db := openDB(t, "c.db")
	p := NewProjector(ProjectorConfig{Name: "c"}, ProjectorDeps{DB: db, Store: e.store, Logger: testLogger(t)})
	ctx := context.Background()
	covers := func(at time.Time) bool {
		t.Helper()
		ok, err := p.Covers(ctx, at)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if !covers(time.Now()) {
		t.Fatal("an empty stream and database: not covered")
	}
	e.append(t, created(1, "alice"))
	if covers(time.Now()) {
		t.Fatal("a projector that never ran covers now")
	}
	stop := startProjector(t, p)
	if !covers(time.Now()) {
		t.Fatal("a running projector does not cover now")
	}
	idle := time.Now()
	if !covers(idle) {
		t.Fatal("an idle, caught-up projector does not cover now")
	}
	stop()
	e.append(t, msg(1, "alice", "not applied"))
	if !covers(idle.Add(-time.Millisecond)) {
		t.Fatal("a stalled projector does not cover a moment before it stalled")
	}
	if covers(time.Now()) {
		t.Fatal("a stalled projector covers now")
	}
	// Callers at once share one check: each waits about a second, not one
	// second per caller before it.
	began := time.Now()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if ok, err := p.Covers(ctx, time.Now()); ok || err != nil {
				t.Errorf("a stalled projector: Covers = %v, %v", ok, err)
			}
		})
	}
	wg.Wait()
	if took := time.Since(began); took > 4*caughtUpWait {
		t.Fatalf("8 callers on a stalled projector took %s", took)
	}
	startProjector(t, p)
	if !covers(time.Now()) {
		t.Fatal("a restarted projector does not cover now")
	}
}

// TestKeyFilter: the filter that answers most lookups of new keys never
// hides a stored one: not after the batch that stored it, not after the
// database is opened again (built from the table), not after a prune
// rebuilt it; and a key never stored is not found.
func TestKeyFilter(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f.db")
	db, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Bind(1); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	a := newApplier(db, 0, testLogger(t))
	now := time.Now().UTC()
	var events []eventstore.Stored
	for i := range 200 {
		m := keyedMsg(1, "u", fmt.Sprint("k", i), "hello", now.Add(-time.Duration(i)*time.Minute))
		events = append(events, eventstore.Stored{Seq: uint64(i + 1), Subject: m.Subject(), Time: now, Event: m})
	}
	if _, err := a.apply(ctx, events); err != nil {
		t.Fatal(err)
	}
	check := func(db *DB, stored func(i int) bool) {
		t.Helper()
		for i := range 200 {
			_, found, err := db.KeyRecord(ctx, eventstore.Key{UserID: "u", ConversationID: 1, ClientKey: fmt.Sprint("k", i)})
			if err != nil || found != stored(i) {
				t.Fatalf("key k%d: found %v (%v), want %v", i, found, err, stored(i))
			}
		}
		for _, k := range []eventstore.Key{{UserID: "u", ConversationID: 1, ClientKey: "new"}, {UserID: "u", ConversationID: 2, ClientKey: "k1"}, {UserID: "v", ConversationID: 1, ClientKey: "k1"}} {
			if _, found, err := db.KeyRecord(ctx, k); err != nil || found {
				t.Fatalf("key %+v never stored: found %v (%v)", k, found, err)
			}
		}
	}
	all := func(int) bool { return true }
	check(db, all)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if db, err = Open(path); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	check(db, all)
	// Prune the older half; the filter is built again from what is left.
	if _, err := db.PruneKeys(ctx, now.Add(-99*time.Minute-30*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := db.buildKeyFilter(ctx); err != nil {
		t.Fatal(err)
	}
	check(db, func(i int) bool { return i < 100 })
}
