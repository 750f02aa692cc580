package wsedge

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"inbox/chat"
	"inbox/eventstore"
	"inbox/internal/testutil"
	"inbox/internal/wstest"
)

// TestSinceBeyondLastSeq (issue 15, item 7): a since beyond the stream's
// last sequence, on connect or in a RESUME frame, is answered with ERROR
// bad_request and the socket stays live. It used to drop every live event
// up to since without a word.
func TestSinceBeyondLastSeq(t *testing.T) { eachReader(t, testSinceBeyondLastSeq) }

func testSinceBeyondLastSeq(t *testing.T, goroutines bool) {
	n := newNode(t, nodeOptions{cfg: Config{goroutineReaders: goroutines}})
	n.create(t, 1, "alice", "bob")
	head := n.send(t, "alice", 1, "before")

	b := n.dial(t, "bob", fmt.Sprintf("/ws/inbox/?since=%d", head+1000))
	if e := b.Expect("ERROR"); e["code"] != chat.CodeBadRequest {
		t.Fatalf("connect with since beyond the stream: %v", e)
	}
	live := n.send(t, "alice", 1, "live after a bad since")
	if f := b.Expect(wstest.Message); uint64(testutil.Int(t, f, "seq")) != live {
		t.Fatalf("after a bad since on connect: %v, want the live message %d", f, live)
	}

	b.Send(map[string]any{"type": "RESUME", "since": live + 1000})
	if e := b.Expect("ERROR"); e["code"] != chat.CodeBadRequest {
		t.Fatalf("RESUME beyond the stream: %v", e)
	}
	live = n.send(t, "alice", 1, "live after a bad RESUME")
	if f := b.Expect(wstest.Message); uint64(testutil.Int(t, f, "seq")) != live {
		t.Fatalf("after a bad RESUME: %v, want the live message %d", f, live)
	}

	// The stream's last sequence itself is a good since.
	b.Send(map[string]any{"type": "RESUME", "since": live})
	if s := b.Expect("SYNCED"); uint64(testutil.Int(t, s, "seq")) != live {
		t.Fatalf("RESUME from the last sequence: %v", s)
	}
}

// TestRemovedMemberResumeRefused (issue 15, item 5): a member removed while
// its legacy chat socket is open cannot RESUME there (ERROR forbidden, and
// no history), and an inbox catch-up replays no message of a conversation
// the user has left, only its own leaving.
func TestRemovedMemberResumeRefused(t *testing.T) {
	n := newNode(t, nodeOptions{})
	ctx := context.Background()
	n.create(t, 1, "alice", "bob")
	n.create(t, 2, "alice", "bob")
	for i := range 3 {
		n.send(t, "alice", 1, fmt.Sprint("history ", i))
	}
	legacy := n.dial(t, "bob", "/ws/chat/1/")
	legacy.Ping()
	left, err := n.svc.RemoveMember(ctx, 1, "bob")
	if err != nil {
		t.Fatal(err)
	}
	if l := legacy.Expect("CONVERSATION_LEFT"); uint64(testutil.Int(t, l, "seq")) != left {
		t.Fatalf("left: %v", l)
	}
	legacy.Send(map[string]any{"type": "RESUME", "since": 0})
	if e := legacy.Expect("ERROR"); e["code"] != chat.CodeForbidden {
		t.Fatalf("RESUME after removal: %v", e)
	}
	legacy.Ping() // nothing came between the ERROR and the PONG

	mine := n.send(t, "alice", 2, "still shared")
	b := n.dial(t, "bob", "/ws/inbox/?since=0")
	var got []string
	for {
		f := b.Next()
		typ := frameType(f)
		if typ == "SYNCED" {
			break
		}
		got = append(got, fmt.Sprintf("%s %v", typ, f["conversation_id"]))
		if typ == "" && testutil.Int(t, f, "conversation_id") == 1 {
			t.Fatalf("inbox catch-up replayed a message of a conversation bob left: %v", f)
		}
		if typ == "" && uint64(testutil.Int(t, f, "seq")) != mine {
			t.Fatalf("unexpected message %v", f)
		}
	}
	want := []string{"CONVERSATION_JOINED 1", "CONVERSATION_JOINED 2", "CONVERSATION_LEFT 1", " 2"}
	if !slices.Equal(got, want) {
		t.Fatalf("inbox catch-up after leaving 1:\n got %q\nwant %q", got, want)
	}
}

// TestResumePointInTimeMembers (issue 15, item 6): a replayed
// CONVERSATION_JOINED carries the members as of its event, not today's: a
// former member does not learn who joined after it left.
func TestResumePointInTimeMembers(t *testing.T) {
	n := newNode(t, nodeOptions{})
	ctx := context.Background()
	n.create(t, 1, "alice", "bob")
	add := func(user string) uint64 {
		t.Helper()
		seq, err := n.svc.AddMember(ctx, 1, eventstore.Member{UserID: user, Role: eventstore.RoleMember})
		if err != nil {
			t.Fatal(err)
		}
		return seq
	}
	joined := add("carol")
	n.send(t, "alice", 1, "while carol is in")
	left, err := n.svc.RemoveMember(ctx, 1, "carol")
	if err != nil {
		t.Fatal(err)
	}
	daveJoined := add("dave")
	// Changing an existing member's role is no join: no frame, live or replayed.
	add("dave")
	n.send(t, "alice", 1, "after carol left")

	c := n.dial(t, "carol", "/ws/inbox/?since=0")
	j := c.Expect("CONVERSATION_JOINED")
	if uint64(testutil.Int(t, j, "seq")) != joined || fmt.Sprint(j["members"]) != "[alice bob carol]" {
		t.Fatalf("carol's replayed join: %v, want seq %d with members [alice bob carol]", j, joined)
	}
	if l := c.Expect("CONVERSATION_LEFT"); uint64(testutil.Int(t, l, "seq")) != left {
		t.Fatalf("carol's replayed leave: %v", l)
	}
	c.Expect("SYNCED") // and no message: carol is no longer a member

	d := n.dial(t, "dave", fmt.Sprintf("/ws/inbox/?since=%d", left))
	j = d.Expect("CONVERSATION_JOINED")
	if uint64(testutil.Int(t, j, "seq")) != daveJoined || fmt.Sprint(j["members"]) != "[alice bob dave]" {
		t.Fatalf("dave's replayed join: %v", j)
	}
	if f := d.Expect(wstest.Message); f["message"] != "after carol left" {
		t.Fatalf("dave after joining: %v", f)
	}
	d.Expect("SYNCED")
}

// resumeAll follows c's catch-up to its end. It asks for the first page
// with RESUME, field (since or cursor) from, unless from is nil (the socket
// was opened with ?since), and after each SYNCED with more for the next
// page from that SYNCED: its seq, or with field cursor its cursor. A RESUME
// refused as over the budget is sent again after wait (nil: it fails the
// test). It returns every frame before the last SYNCED, that SYNCED, the
// number of pages, and how many RESUMEs were refused as over the budget.
func resumeAll(t *testing.T, c *client, field string, from any, wait func()) (frames []map[string]any, last wstest.Frame, pages, limited int) {
	t.Helper()
	for {
		var f wstest.Frame
		for from != nil {
			c.Send(map[string]any{"type": "RESUME", field: from})
			if f = c.Next(); f["code"] != chat.CodeRateLimited || wait == nil {
				break
			}
			limited++
			wait()
		}
		if from == nil {
			f = c.Next()
		}
		for ; frameType(f) != "SYNCED"; f = c.Next() {
			if frameType(f) == "ERROR" {
				t.Fatalf("RESUME %s %v: %v", field, from, f)
			}
			frames = append(frames, f)
		}
		pages++
		if field == "cursor" && f.Str("cursor") == "" {
			t.Fatalf("SYNCED without a cursor: %v", f)
		}
		if f["more"] != true {
			return frames, f, pages, limited
		}
		from = testutil.Int(t, f, "seq")
		if field == "cursor" {
			from = f.Str("cursor")
		}
	}
}

// fakeClock is a clock that moves only when told.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// TestResumeAmplification (issue 15, item 3): 40 RESUME since=0 on a socket
// in a large conversation used to make the server send the whole
// conversation 40 times. One catch-up runs at a time, a catch-up is paged,
// and what it sends draws from the socket's budget: the bytes sent stay
// within the budget (the budget's clock stands still), and a client that
// pages through the whole conversation gets every message once, in order,
// refused with rate_limited until the budget refills.
func TestResumeAmplification(t *testing.T) {
	const pageBytes, budget, rate = 256 << 10, 1 << 20, 512 << 10
	clock := &fakeClock{now: time.Now()}
	n := newNode(t, nodeOptions{cfg: Config{
		ResumePageBytes: pageBytes, ResumeBudgetBytes: budget, ResumeBudgetRate: rate, RateBurst: 100,
		now: clock.Now,
	}})
	n.create(t, 1, "alice", "bob")
	text := strings.Repeat("x", 1000)
	var sent []uint64
	for range 1600 {
		msg, err := n.svc.Send(context.Background(), chat.Sender{UserID: "alice"}, chat.SendRequest{ConversationID: 1, Text: text})
		if err != nil {
			t.Fatal(err)
		}
		sent = append(sent, msg.ID)
	}
	n.settle(t, sent[len(sent)-1])
	b := n.dial(t, "bob", "/ws/inbox/")
	b.Ping()

	before := b.Bytes()
	for range 40 {
		b.SendRaw(`{"type":"RESUME","since":0}`)
	}
	codes := map[string]int{}
	for answers := 0; answers < 40; {
		switch f := b.Next(); frameType(f) {
		case "SYNCED":
			answers++
			codes["SYNCED"]++
		case "ERROR":
			answers++
			codes[f["code"].(string)]++
		}
	}
	limit := int64(budget + 2*pageBytes + 40*256)
	if got := b.Bytes() - before; got > limit {
		t.Fatalf("40 RESUME since=0 made the server send %d bytes (answers %v), want at most %d", got, codes, limit)
	}
	t.Logf("40 pipelined RESUME since=0: %d bytes sent, answers %v", b.Bytes()-before, codes)

	frames, _, pages, limited := resumeAll(t, b, "since", 0, func() { clock.Advance(time.Second) })
	var got []uint64
	for _, f := range frames {
		if frameType(f) == "" {
			got = append(got, uint64(testutil.Int(t, f, "seq")))
		}
	}
	if !slices.Equal(got, sent) {
		t.Fatalf("paged catch-up: %d messages, want the %d sent, each once, in order", len(got), len(sent))
	}
	if pages < 2 || limited == 0 {
		t.Fatalf("a 1.6 MB catch-up took %d pages and was rate limited %d times; want several pages and some waiting", pages, limited)
	}
}

// countingReader records the subject filters of every catch-up read.
type countingReader struct {
	*eventstore.Store
	mu    sync.Mutex
	reads [][]string
}

func (r *countingReader) Read(ctx context.Context, k int, from, to uint64, filters []string, fn func(eventstore.Stored) error, opts ...eventstore.ReadOption) error {
	r.mu.Lock()
	r.reads = append(r.reads, slices.Clone(filters))
	r.mu.Unlock()
	return r.Store.Read(ctx, k, from, to, filters, fn, opts...)
}

// TestResumeManyConversationsFiltered (issue 15, item 3): a user in more
// than 31 conversations used to be caught up from an unfiltered read of the
// whole stream. A user in 100 is read with filters only, in batches, never
// naming a conversation it is not in, and the catch-up, over many pages,
// holds every frame once, in stream order.
func TestResumeManyConversationsFiltered(t *testing.T) {
	reader := &countingReader{}
	n := newNode(t, nodeOptions{
		cfg:    Config{ResumePageEvents: 50},
		reader: func(s *eventstore.Store) Reader { reader.Store = s; return reader },
	})
	ctx := context.Background()
	var want []uint64 // the seqs bob's catch-up must hold, in order
	allowed := map[string]bool{"inbox.conv.*.created": true, "inbox.conv.*.member": true}
	for id := int64(1); id <= 110; id++ {
		members := []eventstore.Member{{UserID: "alice", Role: eventstore.RoleMember}, {UserID: "carol", Role: eventstore.RoleMember}}
		if id <= 100 {
			members[1].UserID = "bob"
			for _, k := range []eventstore.Kind{eventstore.KindCreated, eventstore.KindMember, eventstore.KindMessage, eventstore.KindRead} {
				allowed[eventstore.ConvSubject(id, k)] = true
			}
			allowed[eventstore.LifecyclesFilter(id)] = true
		}
		_, seq, err := n.svc.CreateConversation(ctx, id, members)
		if err != nil {
			t.Fatal(err)
		}
		if id <= 100 {
			want = append(want, seq)
		}
	}
	// A member event in one of bob's conversations that is not about bob.
	if _, err := n.svc.AddMember(ctx, 3, eventstore.Member{UserID: "dave", Role: eventstore.RoleMember}); err != nil {
		t.Fatal(err)
	}
	var last uint64
	for i := range 550 {
		conv := int64(1 + i%110)
		msg, err := n.svc.Send(ctx, chat.Sender{UserID: "alice"}, chat.SendRequest{ConversationID: conv, Text: fmt.Sprint("m", i)})
		if err != nil {
			t.Fatal(err)
		}
		if conv <= 100 {
			want = append(want, msg.ID)
		}
		last = msg.ID
	}
	n.settle(t, last)

	b := n.dial(t, "bob", "/ws/inbox/?since=0")
	frames, _, pages, _ := resumeAll(t, b, "since", nil, nil)

	reader.mu.Lock()
	defer reader.mu.Unlock()
	batched := false
	for _, fs := range reader.reads {
		if len(fs) == 0 || len(fs) > DefaultMaxResumeFilters {
			t.Fatalf("a catch-up read with %d filters: %v", len(fs), fs)
		}
		for _, f := range fs {
			if !allowed[f] {
				t.Fatalf("a catch-up read names %q, not one of bob's conversations", f)
			}
		}
		batched = batched || !slices.Contains(fs, "inbox.conv.*.member")
	}
	if !batched {
		t.Fatal("302 filters were never split into batches")
	}

	var got []uint64
	for _, f := range frames {
		got = append(got, uint64(testutil.Int(t, f, "seq")))
		if typ := frameType(f); typ == "CONVERSATION_JOINED" && fmt.Sprint(f["members"]) != "[alice bob]" {
			t.Fatalf("joined: %v", f)
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("catch-up over %d pages: %d frames, want %d, each once, in stream order:\n got %v\nwant %v", pages, len(got), len(want), got, want)
	}
	if pages < 3 { // each of 5 batches reads at most 50 events per page
		t.Fatalf("%d frames came in %d pages of at most 50 events per read", len(got), pages)
	}
	t.Logf("%d frames in %d pages, %d reads", len(got), pages, len(reader.reads))
}
