package projections

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"inbox/eventstore"
	"inbox/internal/testutil"
)

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	corrupt := filepath.Join(dir, "corrupt.db")
	if err := os.WriteFile(corrupt, []byte(strings.Repeat("this is not sqlite ", 512)), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		path string
	}{
		{"corrupt file", corrupt},
		{"missing folder", filepath.Join(dir, "missing", "inbox.db")},
		{"folder", dir},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			db, err := Open(tc.path)
			if err == nil {
				db.Close()
				t.Fatal("Open succeeded")
			}
			if !strings.Contains(err.Error(), tc.path) {
				t.Fatalf("error %q does not name %s", err, tc.path)
			}
		})
	}
}

// readAll reads the whole stream.
func readAll(t *testing.T, e *env) []eventstore.Stored {
	t.Helper()
	var all []eventstore.Stored
	err := e.store.Read(context.Background(), 0, 1, e.lastSeq(t), nil, func(st eventstore.Stored) error {
		all = append(all, st)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return all
}

func TestApplyTwiceSameState(t *testing.T) {
	e := newEnv(t)
	e.append(t, created(1, "alice", "bob"))
	for i := range 50 {
		e.append(t, msg(1, []string{"alice", "bob"}[i%2], fmt.Sprint("m", i)))
	}
	e.append(t, &eventstore.Read{ConversationID: 1, UserID: "bob", UpTo: 20})
	e.append(t, &eventstore.MemberChanged{ConversationID: 1, Op: eventstore.OpAdd, UserID: "carol", Role: eventstore.RoleMember})
	e.append(t, msg(1, "alice", "hi carol"))
	e.append(t, &eventstore.Profile{UserID: "alice", Name: "Alice"})
	if err := e.nc.Publish("inbox.conv.1.msg", []byte("junk")); err != nil {
		t.Fatal(err)
	}
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if n := e.lastSeq(t); n != 56 {
			return fmt.Errorf("last seq %d", n)
		}
		return nil
	})
	events := readAll(t, e)

	once, twice := openDB(t, "once.db"), openDB(t, "twice.db")
	for _, db := range []*DB{once, twice} {
		if err := db.Bind(1); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	if _, err := newApplier(once, 0, testLogger(t)).apply(ctx, events); err != nil {
		t.Fatal(err)
	}
	a := newApplier(twice, 0, testLogger(t))
	for range 2 {
		if _, err := a.apply(ctx, events); err != nil {
			t.Fatal(err)
		}
	}
	// A fresh applier (no cache) replaying half of it again changes nothing either.
	if _, err := newApplier(twice, 0, testLogger(t)).apply(ctx, events[:30]); err != nil {
		t.Fatal(err)
	}
	requireSame(t, once, twice)
	if got := twice.skipped.Load(); got != 1 {
		t.Errorf("skipped %d, want 1", got)
	}
	if n, err := twice.Unread(ctx, 1, "bob"); err != nil || n != 16 {
		t.Errorf("bob unread %d (%v), want 16", n, err)
	}
	if n, err := twice.Unread(ctx, 1, "carol"); err != nil || n != 1 {
		t.Errorf("carol unread %d (%v), want 1", n, err)
	}
}

func TestProjectorResumesAfterCancel(t *testing.T) {
	e := newEnv(t)
	db := openDB(t, "live.db")
	const convs, perConv = 20, 150
	for c := range int64(convs) {
		e.append(t, created(c+1, "alice", fmt.Sprint("u", c)))
	}
	var wg sync.WaitGroup
	appendErr := make(chan error, 1)
	wg.Go(func() {
		for i := range convs * perConv {
			c := int64(i%convs) + 1
			if _, err := e.store.Append(context.Background(), msg(c, "alice", fmt.Sprint(i))); err != nil {
				appendErr <- err
				return
			}
		}
	})
	// Stop and restart the projector a few times while the messages pour in.
	for range 5 {
		p := NewProjector(ProjectorConfig{Name: "node1"}, ProjectorDeps{DB: db, Store: e.store, Logger: testLogger(t)})
		stop := startProjector(t, p)
		before := p.Applied()
		testutil.CheckFor(t, 10*time.Second, time.Millisecond, func() error {
			if slices.Equal(p.Applied(), before) {
				return errors.New("no progress")
			}
			return nil
		})
		stop()
	}
	wg.Wait()
	close(appendErr)
	if err := <-appendErr; err != nil {
		t.Fatal(err)
	}
	p := NewProjector(ProjectorConfig{Name: "node1"}, ProjectorDeps{DB: db, Store: e.store, Logger: testLogger(t)})
	startProjector(t, p)
	waitApplied(t, e, p)
	requireSame(t, db, rebuild(t, e))
	for c := range int64(convs) {
		n, err := db.Unread(context.Background(), c+1, fmt.Sprint("u", c))
		if err != nil || n != perConv {
			t.Errorf("conversation %d: unread %d (%v), want %d", c+1, n, err, perConv)
		}
	}
}

func TestProjectorRepositionsAfterRebuiltDB(t *testing.T) {
	e := newEnv(t)
	e.append(t, created(1, "alice", "bob"))
	e.append(t, msg(1, "alice", "one"))
	first := openDB(t, "first.db")
	p := NewProjector(ProjectorConfig{Name: "n"}, ProjectorDeps{DB: first, Store: e.store, Logger: testLogger(t)})
	stop := startProjector(t, p)
	waitApplied(t, e, p)
	stop()
	// A brand-new database under the same consumer name starts from sequence 1.
	fresh := openDB(t, "fresh.db")
	p = NewProjector(ProjectorConfig{Name: "n"}, ProjectorDeps{DB: fresh, Store: e.store, Logger: testLogger(t)})
	startProjector(t, p)
	e.append(t, msg(1, "bob", "two"))
	waitApplied(t, e, p)
	requireSame(t, fresh, rebuild(t, e))
	if n, _ := fresh.Unread(context.Background(), 1, "bob"); n != 1 {
		t.Errorf("bob unread %d, want 1", n)
	}
}

// model is a brute-force projection of the unread counts.
type model struct {
	convs map[int64]*modelConv
}

type modelConv struct {
	exists  bool
	members map[string]int64 // user → watermark
	msgs    []modelMsg
}

type modelMsg struct {
	id     int64
	sender string
}

func (m *model) conv(id int64) *modelConv {
	c := m.convs[id]
	if c == nil {
		c = &modelConv{members: map[string]int64{}}
		m.convs[id] = c
	}
	return c
}

func (m *model) apply(seq uint64, ev eventstore.Event) {
	switch ev := ev.(type) {
	case *eventstore.Created:
		c := m.conv(ev.ConversationID)
		if c.exists {
			return
		}
		c.exists = true
		for _, mb := range ev.Members {
			c.members[mb.UserID] = int64(seq) // joining reads what came before
		}
	case *eventstore.MemberChanged:
		c := m.conv(ev.ConversationID)
		if !c.exists {
			return
		}
		_, ok := c.members[ev.UserID]
		switch {
		case ev.Op == eventstore.OpRemove:
			delete(c.members, ev.UserID)
		case !ok:
			c.members[ev.UserID] = int64(seq)
		}
	case *eventstore.Message:
		c := m.conv(ev.ConversationID)
		c.msgs = append(c.msgs, modelMsg{int64(seq), ev.SenderID})
	case *eventstore.Read:
		c := m.conv(ev.ConversationID)
		wm, ok := c.members[ev.UserID]
		if !ok {
			return
		}
		// The receipt's numbers as they are (the service checked them),
		// never past the receipt itself.
		target := max(wm, ev.UpTo)
		for _, id := range ev.MessageIDs {
			target = max(target, id)
		}
		c.members[ev.UserID] = max(wm, min(target, int64(seq)))
	}
}

func (m *model) unread(conv int64, user string) int64 {
	c := m.convs[conv]
	var n int64
	for _, mm := range c.msgs {
		if mm.id > c.members[user] && mm.sender != user {
			n++
		}
	}
	return n
}

func TestRandomWorkloadReplayMatchesLive(t *testing.T) {
	events := 10_000
	if testing.Short() {
		events = 2_000
	}
	e := newEnv(t)
	live := openDB(t, "live.db")
	var (
		mu      sync.Mutex
		changes = map[[2]string]int64{}
		lastSeq = map[[2]string]uint64{}
		badSeq  []string
	)
	onApplied := func(batch uint64, cs []UnreadChange) {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range cs {
			k := [2]string{fmt.Sprint(c.ConversationID), c.UserID}
			changes[k] = c.Unread
			// The change names the event that made it: in this batch or
			// before, after the one that made the member's previous change.
			if c.Seq == 0 || c.Seq > batch || c.Seq <= lastSeq[k] {
				badSeq = append(badSeq, fmt.Sprintf("%v: seq %d in batch to %d, previous change at %d", k, c.Seq, batch, lastSeq[k]))
			}
			lastSeq[k] = c.Seq
		}
	}
	p := NewProjector(ProjectorConfig{Name: "live"}, ProjectorDeps{DB: live, Store: e.store, OnApplied: onApplied, Logger: testLogger(t)})
	startProjector(t, p)

	rng := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
	users := []string{"u1", "u2", "u3", "u4", "u5", "u6"}
	pick := func() string { return users[rng.IntN(len(users))] }
	m := &model{convs: map[int64]*modelConv{}}
	var msgIDs []int64
	junk := 0
	const nconv = 12
	for i := 0; i < events; i++ {
		conv := int64(rng.IntN(nconv) + 1)
		var ev eventstore.Event
		switch r := rng.IntN(100); {
		case r < 3:
			if m.convs[conv] != nil && m.convs[conv].exists && rng.IntN(20) > 0 {
				continue // a second creation is refused by the edge; let a few through
			}
			ev = created(conv, pick(), pick(), pick())
		case r < 8:
			ev = &eventstore.MemberChanged{ConversationID: conv, Op: eventstore.OpAdd, UserID: pick(), Role: eventstore.RoleMember}
		case r < 11:
			ev = &eventstore.MemberChanged{ConversationID: conv, Op: eventstore.OpRemove, UserID: pick()}
		case r < 20:
			rd := &eventstore.Read{ConversationID: conv, UserID: pick()}
			if len(msgIDs) > 0 && rng.IntN(2) == 0 {
				for range rng.IntN(3) + 1 {
					rd.MessageIDs = append(rd.MessageIDs, msgIDs[rng.IntN(len(msgIDs))]) // often stale or foreign
				}
				rd.MessageIDs = append(rd.MessageIDs, int64(e.lastSeq(t))+1000) // from the future
			} else if len(msgIDs) > 0 {
				rd.UpTo = msgIDs[max(0, len(msgIDs)-1-rng.IntN(40))]
			}
			ev = rd
		case r < 22:
			ev = &eventstore.Profile{UserID: pick(), Name: fmt.Sprint("name ", i)}
		case r < 23:
			ev = &eventstore.Typing{ConversationID: conv, UserID: pick(), IsTyping: true}
		case r < 25:
			junk++
			subj, data := "inbox.conv.1.msg", []byte("not json")
			switch rng.IntN(3) {
			case 1:
				subj = "inbox.conv.2.bogus"
				data = []byte(`{"v":1,"type":"bogus"}`)
			case 2:
				data = []byte(`{"v":99,"type":"msg","conversation_id":1,"sender_id":"u1","message":"from the future"}`)
			}
			if err := e.nc.Publish(subj, data); err != nil {
				t.Fatal(err)
			}
			if err := e.nc.Flush(); err != nil {
				t.Fatal(err)
			}
			continue
		default:
			m := msg(conv, pick(), fmt.Sprint("text ", i))
			if rng.IntN(3) == 0 { // keyed, keys often reused (an idempotency record per user, conversation and key)
				m.ClientMsgID = fmt.Sprint("k", rng.IntN(20))
			}
			ev = m
		}
		seq := e.append(t, ev)
		if _, ok := ev.(*eventstore.Message); ok {
			msgIDs = append(msgIDs, int64(seq))
		}
		m.apply(seq, ev)
	}
	waitApplied(t, e, p)
	rebuilt := rebuild(t, e)
	requireSame(t, live, rebuilt)
	if got := p.Skipped(); got != uint64(junk) {
		t.Errorf("skipped %d, want %d junk events", got, junk)
	}

	ctx := context.Background()
	checked := 0
	for id, c := range m.convs {
		if !c.exists {
			continue
		}
		for u := range c.members {
			checked++
			got, err := live.Unread(ctx, id, u)
			if want := m.unread(id, u); err != nil || got != want {
				t.Errorf("conversation %d user %s: unread %d (%v), brute force %d", id, u, got, err, want)
			}
			mu.Lock()
			reported, ok := changes[[2]string{fmt.Sprint(id), u}]
			mu.Unlock()
			if ok && reported != got {
				t.Errorf("conversation %d user %s: last UNREAD change %d, unread %d", id, u, reported, got)
			}
		}
	}
	if checked == 0 {
		t.Fatal("no members to check")
	}
	mu.Lock()
	defer mu.Unlock()
	for _, b := range badSeq[:min(len(badSeq), 5)] {
		t.Errorf("unread change %s", b)
	}
}

func TestQueries(t *testing.T) {
	e := newEnv(t)
	db := openDB(t, "q.db")
	p := NewProjector(ProjectorConfig{Name: "q"}, ProjectorDeps{DB: db, Store: e.store, Logger: testLogger(t)})
	startProjector(t, p)
	avatar := "https://example.com/a.png"
	e.append(t, created(1, "alice", "bob"))
	e.append(t, created(2, "alice", "carol"))
	e.append(t, &eventstore.Profile{UserID: "alice", Name: "Alice", Avatar: &avatar})
	m1 := e.append(t, &eventstore.Message{Header: eventstore.Header{At: time.Date(2025, 1, 15, 10, 30, 0, 123, time.UTC)},
		ConversationID: 1, SenderID: "alice", SenderName: "Alice", SenderAvatar: &avatar, Text: "Hello", MsgType: "TEXT", ClientMsgID: "c-1"})
	m2 := e.append(t, msg(2, "carol", "hey"))
	m3 := e.append(t, msg(1, "bob", "yo"))
	e.append(t, &eventstore.Job{JobID: 7, Members: []string{"alice", "bob"}})
	e.append(t, &eventstore.JobStatus{JobID: 7, Status: "accepted", Detail: json.RawMessage(`{"x":1}`)})
	waitApplied(t, e, p)
	ctx := context.Background()

	convs, err := db.Conversations(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if len(convs) != 2 || convs[0].ID != 1 || convs[1].ID != 2 {
		t.Fatalf("conversations %+v", convs)
	}
	if convs[0].Unread != 1 || convs[1].Unread != 1 || convs[0].LastMessage.ID != int64(m3) || convs[1].LastMessage.ID != int64(m2) {
		t.Errorf("conversations %+v", convs)
	}
	if want := []Member{{"alice", "client"}, {"bob", "worker"}}; !slices.Equal(convs[0].Members, want) {
		t.Errorf("members %+v, want %+v", convs[0].Members, want)
	}

	msgs, err := db.Messages(ctx, 1, 0, 10)
	if err != nil || len(msgs) != 2 || msgs[0].ID != int64(m3) {
		t.Fatalf("messages %+v (%v)", msgs, err)
	}
	older, err := db.Messages(ctx, 1, int64(m3), 10)
	if err != nil || len(older) != 1 || older[0].ID != int64(m1) {
		t.Fatalf("messages before %d: %+v (%v)", m3, older, err)
	}
	got, _ := json.Marshal(older[0])
	want := fmt.Sprintf(`{"id":%d,"conversation_id":1,"sender_id":"alice","sender_name":"Alice","sender_avatar":"https://example.com/a.png",`+
		`"message":"Hello","type":"TEXT","created_at":"2025-01-15T10:30:00Z","message_id":%[1]d,"seq":%[1]d,"client_msg_id":"c-1","is_read":false,`+
		`"edited_at":null,"deleted":false,"reactions":{}}`, m1)
	if string(got) != want {
		t.Errorf("wire shape\n got %s\nwant %s", got, want)
	}
	got, _ = json.Marshal(msgs[0])
	if !strings.Contains(string(got), `"sender_avatar":null`) || strings.Contains(string(got), "client_msg_id") {
		t.Errorf("wire shape %s", got)
	}

	// bob reads by id; alice's message becomes read, his count drops.
	e.append(t, &eventstore.Read{ConversationID: 1, UserID: "bob", MessageIDs: []int64{int64(m1)}})
	waitApplied(t, e, p)
	if n, err := db.Unread(ctx, 1, "bob"); err != nil || n != 0 {
		t.Errorf("bob unread %d (%v)", n, err)
	}
	if msgs, _ := db.Messages(ctx, 1, 0, 10); !msgs[1].IsRead || msgs[0].IsRead {
		t.Errorf("is_read %v %v", msgs[1].IsRead, msgs[0].IsRead)
	}
	if ok, _ := db.IsMember(ctx, 1, "carol"); ok {
		t.Error("carol is a member of 1")
	}
	if _, err := db.Unread(ctx, 1, "carol"); !errors.Is(err, ErrNotFound) {
		t.Errorf("carol unread: %v", err)
	}
	if pr, err := db.Profile(ctx, "alice"); err != nil || pr.Name != "Alice" || *pr.Avatar != avatar {
		t.Errorf("profile %+v (%v)", pr, err)
	}
	snap, err := db.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(snap.Applied, p.Applied()) || len(snap.Conversations) != 2 || len(snap.Conversations[2]) != 2 ||
		!slices.Equal(snap.Jobs[7], []string{"alice", "bob"}) || snap.Profiles["alice"].Name != "Alice" {
		t.Errorf("snapshot %+v", snap)
	}
	if seq, err := db.AppliedSeqs(ctx); err != nil || !slices.Equal(seq, snap.Applied) {
		t.Errorf("applied %v (%v)", seq, err)
	}
}

func TestDiffReportsDifferences(t *testing.T) {
	a, b := openDB(t, "a.db"), openDB(t, "b.db")
	ctx := context.Background()
	for i := range 60 {
		if _, err := a.w.ExecContext(ctx, `INSERT INTO profiles VALUES (?, 'x', NULL, 1)`, fmt.Sprint("u", i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.w.ExecContext(ctx, `INSERT INTO profiles VALUES ('u0', 'y', NULL, 1)`); err != nil {
		t.Fatal(err)
	}
	diffs, err := Diff(ctx, a, b)
	if err != nil {
		t.Fatal(err)
	}
	if len(diffs) != maxDiffs+1 || !strings.Contains(diffs[0], `name is "x"`) || !strings.Contains(diffs[maxDiffs], "10 more") {
		t.Errorf("diffs: %q", diffs)
	}
}

func TestVerify(t *testing.T) {
	e := newEnv(t)
	live := openDB(t, "live.db")
	p := NewProjector(ProjectorConfig{Name: "v"}, ProjectorDeps{DB: live, Store: e.store, Logger: testLogger(t)})
	stop := startProjector(t, p)
	e.append(t, created(1, "alice", "bob"))
	for i := range 20 {
		e.append(t, msg(1, "alice", fmt.Sprint(i)))
	}
	waitApplied(t, e, p)
	stop()
	ctx := context.Background()
	scratch := filepath.Join(t.TempDir(), "scratch.db")
	diffs, err := Verify(ctx, e.store, live, scratch, nil)
	if err != nil || len(diffs) != 0 {
		t.Fatalf("verify: %q (%v)", diffs, err)
	}
	if _, err := os.Stat(scratch); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("scratch database left behind: %v", err)
	}
	if _, err := live.w.ExecContext(ctx, `UPDATE members SET unread = 3 WHERE user_id = 'bob'`); err != nil {
		t.Fatal(err)
	}
	diffs, err = Verify(ctx, e.store, live, scratch, nil)
	if err != nil || len(diffs) != 1 || !strings.Contains(diffs[0], "unread is 3") {
		t.Fatalf("verify after tampering: %q (%v)", diffs, err)
	}
}

// TestBatchSizer: a batch lingers Linger while events are few, longer as
// they come faster, at most MaxLinger, and back to Linger once they stop.
func TestBatchSizer(t *testing.T) {
	var b batchSizer
	now := time.Unix(1e9, 0)
	if got := b.linger(now); got != Linger {
		t.Fatalf("first batch lingers %v, want %v", got, Linger)
	}
	// 20 events/s: one event per batch every 50 ms.
	for range 20 {
		b.applied(1)
		now = now.Add(50 * time.Millisecond)
		if got := b.linger(now); got != Linger {
			t.Fatalf("at 20 events/s a batch lingers %v, want %v", got, Linger)
		}
	}
	// 1,000 events/s, then 10,000: longer, then the most.
	var got time.Duration
	for range 20 {
		b.applied(10)
		now = now.Add(10 * time.Millisecond)
		got = b.linger(now)
	}
	if got <= Linger || got >= MaxLinger {
		t.Fatalf("at 1,000 events/s a batch lingers %v, want between %v and %v", got, Linger, MaxLinger)
	}
	for range 20 {
		b.applied(500)
		now = now.Add(50 * time.Millisecond)
		got = b.linger(now)
	}
	if got != MaxLinger {
		t.Fatalf("at 10,000 events/s a batch lingers %v, want %v", got, MaxLinger)
	}
	// Quiet again: a second between single events.
	for range 20 {
		b.applied(1)
		now = now.Add(time.Second)
		got = b.linger(now)
	}
	if got != Linger {
		t.Fatalf("after the load a batch lingers %v, want %v", got, Linger)
	}
}

// TestWaitForCutsLinger: a batch lingering for more events is applied as
// soon as it holds an event someone waits for, so read-your-writes (a
// conversation created through the HTTP API waits for its row) never pays
// for the linger. Here every batch would linger an hour; WaitFor returns all
// the same, for an event already appended and for one appended while it waits.
func TestWaitForCutsLinger(t *testing.T) {
	e := newEnv(t)
	db := openDB(t, "p.db")
	p := NewProjector(ProjectorConfig{Name: "linger"}, ProjectorDeps{DB: db, Store: e.store, Logger: testLogger(t)})
	p.linger = time.Hour
	startProjector(t, p)
	wait := func(id uint64) error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return p.WaitFor(ctx, id)
	}
	e.append(t, created(1, "a", "b"))
	for i := range 3 {
		id := e.append(t, msg(1, "a", fmt.Sprint("appended first ", i)))
		if err := wait(id); err != nil {
			t.Fatalf("message %d appended before the wait: %v", i, err)
		}
	}
	next := e.lastSeq(t) + 1
	errc := make(chan error, 1)
	go func() { errc <- wait(next) }()
	e.append(t, msg(1, "b", "appended while waited for"))
	if err := <-errc; err != nil {
		t.Fatalf("message appended during the wait: %v", err)
	}
	if got := db.Applied()[0]; got < next {
		t.Fatalf("applied %d after the wait for %d", got, next)
	}
}

// TestUnreadChangeThatEndsWhereItBegan: a batch in which a member's count
// went up and back down (a message, then its deletion) still reports the
// count, with the event that last changed it: the live feed may have told
// the client the step between.
func TestUnreadChangeThatEndsWhereItBegan(t *testing.T) {
	e := newEnv(t)
	db := openDB(t, "p.db")
	var (
		mu      sync.Mutex
		changes []UnreadChange
	)
	onApplied := func(_ uint64, cs []UnreadChange) {
		mu.Lock()
		defer mu.Unlock()
		changes = append(changes, cs...)
	}
	p := NewProjector(ProjectorConfig{Name: "net-zero"}, ProjectorDeps{DB: db, Store: e.store, OnApplied: onApplied, Logger: testLogger(t)})
	p.linger = time.Hour // a batch ends only at an event waited for
	startProjector(t, p)
	wait := func(id uint64) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := p.WaitFor(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	wait(e.append(t, created(1, "a", "b")))
	m := e.append(t, msg(1, "a", "oops"))
	d := e.append(t, &eventstore.Delete{ConversationID: 1, MessageID: int64(m), UserID: "a"})
	wait(d)
	mu.Lock()
	defer mu.Unlock()
	want := UnreadChange{ConversationID: 1, UserID: "b", Unread: 0, Seq: d}
	if len(changes) == 0 || changes[len(changes)-1] != want {
		t.Fatalf("changes %+v, want the last %+v", changes, want)
	}
}
