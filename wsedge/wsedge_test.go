package wsedge

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/gobwas/ws"

	"inbox/chat"
	"inbox/eventstore"
	"inbox/internal/testutil"
	"inbox/internal/wstest"
)

var createdAtRE = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$`)

// TestSeedPlan is the seed's test plan: A and B share conversation 1, C is
// outside it. A sends; B (and A's own socket) receive the seed's exact shape;
// C receives nothing.
func TestSeedPlan(t *testing.T) {
	n := newNode(t, nodeOptions{})
	n.create(t, 1, "alice", "bob")
	n.create(t, 2, "carol", "dave")
	avatar := "https://example.com/a.png"
	if _, err := n.svc.SetProfile(context.Background(), "alice", "Alice Doe", &avatar); err != nil {
		t.Fatal(err)
	}
	a := n.dial(t, "alice", "/ws/inbox/")
	b := n.dial(t, "bob", "/ws/inbox/")
	c := n.dial(t, "carol", "/ws/inbox/")
	for _, cl := range []*client{a, b, c} {
		cl.Ping()
	}

	a.SendRaw(`{"conversation_id": 1, "message": "Hello", "type": "TEXT"}`)
	got := b.Expect(wstest.Message)
	wantKeys := []string{"conversation_id", "created_at", "id", "message", "message_id", "sender_avatar", "sender_id", "sender_name", "seq", "type"}
	if keys := slices.Sorted(maps.Keys(got)); !slices.Equal(keys, wantKeys) {
		t.Fatalf("message frame keys %v, want %v", keys, wantKeys)
	}
	id := testutil.Int(t, got, "id")
	if testutil.Int(t, got, "message_id") != id || testutil.Int(t, got, "seq") != id || id <= 0 {
		t.Fatalf("id, message_id and seq must be the same positive stream sequence: %v", got)
	}
	if testutil.Int(t, got, "conversation_id") != 1 {
		t.Fatalf("conversation_id: %v", got)
	}
	for k, want := range map[string]string{"sender_id": "alice", "sender_name": "Alice Doe", "sender_avatar": avatar, "message": "Hello", "type": "TEXT"} {
		if got[k] != want {
			t.Errorf("%s = %#v, want %q", k, got[k], want)
		}
	}
	if s, _ := got["created_at"].(string); !createdAtRE.MatchString(s) {
		t.Errorf("created_at = %#v, want RFC 3339 UTC seconds", got["created_at"])
	}
	if mine := a.Expect(wstest.Message); testutil.Int(t, mine, "id") != id {
		t.Fatalf("sender's socket got %v", mine)
	}

	// Barrier: a later event for carol arrives first, so the earlier one never came.
	later := n.send(t, "dave", 2, "for carol")
	if f := c.Expect(wstest.Message); uint64(testutil.Int(t, f, "seq")) != later {
		t.Fatalf("carol got %v, want only the later message %d", f, later)
	}
}

// TestMultiDevice: every socket of every member gets the message, the
// sending socket included; a message without an avatar has sender_avatar null.
func TestMultiDevice(t *testing.T) {
	n := newNode(t, nodeOptions{})
	n.create(t, 7, "alice", "bob")
	a1 := n.dial(t, "alice", "/ws/inbox/")
	a2 := n.dial(t, "alice", "/ws/inbox/")
	b := n.dial(t, "bob", "/ws/inbox")
	for _, cl := range []*client{a1, a2, b} {
		cl.Ping()
	}
	a1.Send(map[string]any{"conversation_id": 7, "message": "from my phone"})
	var seqs []int64
	for _, cl := range []*client{a1, a2, b} {
		f := cl.Expect(wstest.Message)
		if f["message"] != "from my phone" || f["sender_avatar"] != nil || f["sender_name"] != "Alice" {
			t.Fatalf("%s got %v", cl.Name(), f)
		}
		seqs = append(seqs, testutil.Int(t, f, "seq"))
	}
	if seqs[0] != seqs[1] || seqs[1] != seqs[2] {
		t.Fatalf("seqs differ: %v", seqs)
	}
}

// TestAckAndRetry: client_msg_id gets an ACK; a resend with the same id is
// stored once and acknowledged with the same message_id.
func TestAckAndRetry(t *testing.T) {
	n := newNode(t, nodeOptions{})
	n.create(t, 3, "alice", "bob")
	a := n.dial(t, "alice", "/ws/inbox/")
	b := n.dial(t, "bob", "/ws/inbox/")
	a.Ping()
	b.Ping()

	msg := `{"conversation_id": 3, "message": "once", "client_msg_id": "c-1"}`
	a.SendRaw(msg)
	var ack1 map[string]any
	var delivered map[string]any
	for ack1 == nil || delivered == nil { // the ACK may come before or after the message
		f := a.Next()
		switch frameType(f) {
		case "ACK":
			ack1 = f
		case "":
			delivered = f
		default:
			t.Fatalf("unexpected %v", f)
		}
	}
	if ack1["client_msg_id"] != "c-1" || testutil.Int(t, ack1, "message_id") != testutil.Int(t, delivered, "id") || testutil.Int(t, ack1, "seq") != testutil.Int(t, delivered, "id") {
		t.Fatalf("ack %v does not match message %v", ack1, delivered)
	}
	if ref, _ := ack1["ref"].(map[string]any); ref == nil || ref["conversation_id"] != json.Number("3") {
		t.Fatalf("ack ref: %v", ack1)
	}
	if delivered["client_msg_id"] != "c-1" {
		t.Fatalf("message frame lacks client_msg_id: %v", delivered)
	}

	a.SendRaw(msg) // the retry
	ack2 := a.Expect("ACK")
	if testutil.Int(t, ack2, "message_id") != testutil.Int(t, ack1, "message_id") {
		t.Fatalf("retry acked as %v, first as %v", ack2, ack1)
	}
	first := b.Expect(wstest.Message)
	later := n.send(t, "alice", 3, "barrier")
	if f := b.Expect(wstest.Message); uint64(testutil.Int(t, f, "seq")) != later {
		t.Fatalf("bob got the retry stored twice: %v then %v", first, f)
	}
}

// TestLegacyChatEndpoint: /ws/chat/<id>/ needs membership before the upgrade,
// carries that conversation only, and takes frames without conversation_id.
func TestLegacyChatEndpoint(t *testing.T) {
	n := newNode(t, nodeOptions{})
	n.create(t, 1, "alice", "bob")
	n.create(t, 2, "alice", "bob")
	for _, tc := range []struct {
		user, path string
		status     int
	}{
		{"carol", "/ws/chat/1/", 403},
		{"carol", "/ws/chat/99/", 403},
		{"alice", "/ws/chat/0/", 404},
		{"alice", "/ws/chat/abc/", 404},
	} {
		_, resp, err := n.tryDial(t, n.token(t, tc.user), tc.path)
		if err == nil || resp == nil || resp.StatusCode != tc.status {
			t.Errorf("%s on %s: err %v, resp %v; want HTTP %d", tc.user, tc.path, err, resp, tc.status)
		}
	}
	b := n.dial(t, "bob", "/ws/chat/1/")
	b.Ping()
	b.SendRaw(`{"message": "no conversation_id needed"}`)
	f := b.Expect(wstest.Message)
	if testutil.Int(t, f, "conversation_id") != 1 || f["sender_id"] != "bob" {
		t.Fatalf("legacy send: %v", f)
	}
	b.SendRaw(`{"conversation_id": 2, "message": "elsewhere"}`)
	if e := b.Expect("ERROR"); e["code"] != chat.CodeForbidden {
		t.Fatalf("legacy send to another conversation: %v", e)
	}
	n.send(t, "alice", 2, "not on the legacy socket")
	last := n.send(t, "alice", 1, "on the legacy socket")
	if f := b.Expect(wstest.Message); uint64(testutil.Int(t, f, "seq")) != last {
		t.Fatalf("legacy socket got %v, want only seq %d", f, last)
	}
}

// TestJobEndpoint: job members follow /ws/job/<id>/ and get JOB_STATUS.
func TestJobEndpoint(t *testing.T) {
	n := newNode(t, nodeOptions{})
	ctx := context.Background()
	if _, _, err := n.svc.CreateJob(ctx, 55, []string{"alice"}); err != nil {
		t.Fatal(err)
	}
	if _, resp, err := n.tryDial(t, n.token(t, "bob"), "/ws/job/55/"); err == nil || resp.StatusCode != 403 {
		t.Fatalf("non-member on a job socket: %v %v", err, resp)
	}
	j := n.dial(t, "alice", "/ws/job/55/")
	j.Ping()
	seq, err := n.svc.PostJobStatus(ctx, 55, "accepted", json.RawMessage(`{"by":"w1"}`))
	if err != nil {
		t.Fatal(err)
	}
	f := j.Expect("JOB_STATUS")
	if testutil.Int(t, f, "job_id") != 55 || f["status"] != "accepted" || uint64(testutil.Int(t, f, "seq")) != seq {
		t.Fatalf("job status frame: %v", f)
	}
	if d, _ := f["detail"].(map[string]any); d["by"] != "w1" {
		t.Fatalf("detail: %v", f)
	}
	if _, err := n.svc.PostJobStatus(ctx, 55, "done", nil); err != nil {
		t.Fatal(err)
	}
	if f := j.Expect("JOB_STATUS"); f["status"] != "done" || fmt.Sprint(f["detail"]) != "map[]" {
		t.Fatalf("job status without detail: %v", f)
	}
	j.SendRaw(`{"conversation_id": 1, "message": "hi"}`)
	if e := j.Expect("ERROR"); e["code"] != chat.CodeBadRequest {
		t.Fatalf("message on a job socket: %v", e)
	}
}

// TestJoinLeaveWhileConnected: a user with no conversations connects, is
// added (CONVERSATION_JOINED, then live delivery without reconnecting), and
// removed (CONVERSATION_LEFT, then nothing more from that conversation).
func TestJoinLeaveWhileConnected(t *testing.T) {
	n := newNode(t, nodeOptions{})
	ctx := context.Background()
	c := n.dial(t, "carol", "/ws/inbox/")
	c.Ping()

	n.create(t, 10, "alice", "bob")
	seq, err := n.svc.AddMember(ctx, 10, eventstore.Member{UserID: "carol", Role: eventstore.RoleMember})
	if err != nil {
		t.Fatal(err)
	}
	j := c.Expect("CONVERSATION_JOINED")
	if testutil.Int(t, j, "conversation_id") != 10 || uint64(testutil.Int(t, j, "seq")) != seq || fmt.Sprint(j["members"]) != "[alice bob carol]" {
		t.Fatalf("joined: %v", j)
	}
	if _, has := j["message"]; has {
		t.Fatalf("control frames carry no message field: %v", j)
	}
	m := n.send(t, "alice", 10, "welcome")
	if f := c.Expect(wstest.Message); uint64(testutil.Int(t, f, "seq")) != m {
		t.Fatalf("carol after joining: %v", f)
	}

	// A conversation created with carol in it is announced too.
	n.create(t, 11, "carol", "dave")
	if j := c.Expect("CONVERSATION_JOINED"); testutil.Int(t, j, "conversation_id") != 11 {
		t.Fatalf("created: %v", j)
	}

	left, err := n.svc.RemoveMember(ctx, 10, "carol")
	if err != nil {
		t.Fatal(err)
	}
	if l := c.Expect("CONVERSATION_LEFT"); testutil.Int(t, l, "conversation_id") != 10 || uint64(testutil.Int(t, l, "seq")) != left {
		t.Fatalf("left: %v", l)
	}
	n.send(t, "alice", 10, "carol must not see this")
	barrier := n.send(t, "dave", 11, "barrier")
	if f := c.Expect(wstest.Message); uint64(testutil.Int(t, f, "seq")) != barrier {
		t.Fatalf("carol got %v after leaving", f)
	}
	c.SendRaw(`{"conversation_id": 10, "message": "still here?"}`)
	if e := c.Expect("ERROR"); e["code"] != chat.CodeForbidden {
		t.Fatalf("send after leaving: %v", e)
	}
}

// TestTypingReadUnread: TYPING goes to the other members only, READ to every
// member's sockets including the reader's other devices, UNREAD to the user.
func TestTypingReadUnread(t *testing.T) {
	n := newNode(t, nodeOptions{})
	n.create(t, 4, "alice", "bob")
	a1 := n.dial(t, "alice", "/ws/inbox/")
	a2 := n.dial(t, "alice", "/ws/inbox/")
	b := n.dial(t, "bob", "/ws/inbox/")
	for _, cl := range []*client{a1, a2, b} {
		cl.Ping()
	}
	a1.SendRaw(`{"conversation_id": 4, "type": "TYPING", "is_typing": true}`)
	ty := b.Expect("TYPING")
	if ty["user_id"] != "alice" || ty["is_typing"] != true || testutil.Int(t, ty, "conversation_id") != 4 {
		t.Fatalf("typing: %v", ty)
	}
	msg := n.send(t, "bob", 4, "hi alice")
	for _, cl := range []*client{a1, a2} { // the typer's sockets skip the TYPING frame
		if f := cl.Expect(wstest.Message); uint64(testutil.Int(t, f, "seq")) != msg {
			t.Fatalf("%s: %v", cl.Name(), f)
		}
	}
	b.Expect(wstest.Message)

	a1.Send(map[string]any{"conversation_id": 4, "type": "READ", "up_to": msg})
	for _, cl := range []*client{a1, a2, b} {
		r := cl.Expect("READ")
		if r["user_id"] != "alice" || uint64(testutil.Int(t, r, "up_to")) != msg {
			t.Fatalf("%s read: %v", cl.Name(), r)
		}
	}
	a2.Send(map[string]any{"conversation_id": 4, "type": "READ", "message_ids": []uint64{msg}})
	if r := b.Expect("READ"); fmt.Sprint(r["message_ids"]) != fmt.Sprintf("[%d]", msg) {
		t.Fatalf("read by ids: %v", r)
	}

	n.feed.PushUnread(msg, 4, "bob", 3) // its event is dispatched: sent at once
	if u := b.Expect("UNREAD"); testutil.Int(t, u, "unread") != 3 || testutil.Int(t, u, "conversation_id") != 4 {
		t.Fatalf("unread: %v", u)
	}
}

// TestUnreadAfterItsMessage: an UNREAD whose message the feed has not
// dispatched yet (the projector ran ahead) is held back and sent after the
// message frame, and held counts go out in order (the feed holds them: see
// package feed's tests for the rest of the rule).
func TestUnreadAfterItsMessage(t *testing.T) {
	n := newNode(t, nodeOptions{})
	n.create(t, 1, "alice", "bob")
	b := n.dial(t, "bob", "/ws/inbox/")
	b.Ping()
	lastC, err := n.store.Last(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	last := lastC[0]
	n.feed.PushUnread(last+1, 1, "bob", 1)
	n.feed.PushUnread(last+2, 1, "bob", 2)
	b.Ping() // the PONG comes first: both counts are held
	if seq := n.send(t, "alice", 1, "one"); seq != last+1 {
		t.Fatalf("message stored at %d, want %d", seq, last+1)
	}
	b.Expect(wstest.Message)
	if u := b.Expect("UNREAD"); testutil.Int(t, u, "unread") != 1 {
		t.Fatalf("after the first message: %v", u)
	}
	b.Ping() // the second count still waits for its message
	n.send(t, "alice", 1, "two")
	b.Expect(wstest.Message)
	if u := b.Expect("UNREAD"); testutil.Int(t, u, "unread") != 2 {
		t.Fatalf("after the second message: %v", u)
	}
}

// TestUnreadGoesWithItsMessage: once the feed follows a user's count (the
// projector's count of an event it saw), a message from someone else reaches
// the user's socket with its count in one write, without waiting for the
// projector; the projector's count, the same, is not sent again, unless a
// socket opened since.
func TestUnreadGoesWithItsMessage(t *testing.T) {
	n := newNode(t, nodeOptions{})
	n.create(t, 1, "alice", "bob")
	b := n.dial(t, "bob", "/ws/inbox/")
	b.Ping()
	last, err := n.store.Last(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	n.feed.PushUnread(last[0], 1, "bob", 0)
	if u := b.Expect("UNREAD"); testutil.Int(t, u, "unread") != 0 {
		t.Fatalf("the join's count: %v", u)
	}
	b.Ping()
	writes := metricValue(n.m.SocketWrites)
	seq := n.send(t, "alice", 1, "one")
	if f := b.Expect(wstest.Message); uint64(testutil.Int(t, f, "seq")) != seq {
		t.Fatalf("message: %v", f)
	}
	if u := b.Expect("UNREAD"); testutil.Int(t, u, "unread") != 1 || testutil.Int(t, u, "conversation_id") != 1 {
		t.Fatalf("the message's count: %v", u)
	}
	if w := metricValue(n.m.SocketWrites) - writes; w != 1 {
		t.Fatalf("the message and its count took %v writes, want 1", w)
	}
	n.feed.PushUnread(seq, 1, "bob", 1)
	two := n.send(t, "alice", 1, "two")
	b.Expect(wstest.Message)
	if u := b.Expect("UNREAD"); testutil.Int(t, u, "unread") != 2 {
		t.Fatalf("the second message's count: %v", u)
	}
	// A socket bob opens after that was not told: the projector's count,
	// the same, goes out again.
	b2 := n.dial(t, "bob", "/ws/inbox/")
	b2.Ping()
	n.feed.PushUnread(two, 1, "bob", 2)
	if u := b2.Expect("UNREAD"); testutil.Int(t, u, "unread") != 2 {
		t.Fatalf("the new socket's count: %v", u)
	}
}

// slowTyping is the store with typing events that take until release to
// be stored: a stream slowed down by a typing storm, for typing alone.
type slowTyping struct {
	*eventstore.Store
	release chan struct{}
}

func (s slowTyping) Append(ctx context.Context, e eventstore.Event, opts ...eventstore.AppendOption) (uint64, error) {
	if e.Kind() == eventstore.KindTyping {
		select {
		case <-s.release:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	return s.Store.Append(ctx, e, opts...)
}

func (s slowTyping) AppendAsync(e eventstore.Event, done func(uint64, error), opts ...eventstore.AppendOption) error {
	go func() { done(s.Append(context.Background(), e, opts...)) }()
	return nil
}

// TestTypingDoesNotHoldUpMessages: a socket's message is taken, stored and
// acknowledged while the typing event it sent just before is still on its
// way to the stream: the socket's worker does not wait for typing.
func TestTypingDoesNotHoldUpMessages(t *testing.T) {
	release := make(chan struct{})
	n := newNode(t, nodeOptions{appender: func(st *eventstore.Store) chat.Appender { return slowTyping{st, release} }})
	n.create(t, 1, "alice", "bob")
	a, b := n.dial(t, "alice", "/ws/inbox/"), n.dial(t, "bob", "/ws/inbox/")
	a.Send(map[string]any{"conversation_id": 1, "type": "TYPING", "is_typing": true})
	a.Send(map[string]any{"conversation_id": 1, "message": "hi", "client_msg_id": "m1"})
	if ack := a.UntilType("ACK"); ack["client_msg_id"] != "m1" {
		t.Fatalf("ack: %v", ack)
	}
	b.Expect(wstest.Message)
	close(release)
	if ty := b.Expect("TYPING"); ty["user_id"] != "alice" {
		t.Fatalf("typing: %v", ty)
	}
}

// TestResumeUnderTraffic: while a goroutine keeps sending, a client
// disconnects and comes back with ?since: the frames before the disconnect
// and after the resume hold every message exactly once, in order.
func TestResumeUnderTraffic(t *testing.T) {
	n := newNode(t, nodeOptions{})
	n.create(t, 1, "alice", "bob")
	n.create(t, 2, "alice", "bob")
	b := n.dial(t, "bob", "/ws/inbox/")
	b.Ping()

	var (
		mu    sync.Mutex
		sent  []uint64
		stop  atomic.Bool
		wg    sync.WaitGroup
		count atomic.Int64
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; !stop.Load(); i++ {
			msg, err := n.svc.Send(context.Background(), chat.Sender{UserID: "alice"}, chat.SendRequest{ConversationID: int64(1 + i%2), Text: fmt.Sprint("m", i)})
			seq := msg.ID
			if err != nil {
				t.Errorf("send: %v", err)
				return
			}
			mu.Lock()
			sent = append(sent, seq)
			mu.Unlock()
			count.Add(1)
		}
	}()

	var got []uint64
	for len(got) < 30 {
		got = append(got, uint64(testutil.Int(t, b.Expect(wstest.Message), "seq")))
	}
	b.Close()
	since := got[len(got)-1]
	// Let traffic flow while the client is away, then resume during it.
	mark := count.Load()
	testutil.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if count.Load() < mark+30 {
			return fmt.Errorf("only %d sent while away", count.Load()-mark)
		}
		return nil
	})
	b2 := n.dial(t, "bob", fmt.Sprintf("/ws/inbox/?since=%d", since))
	synced := false
	for !synced || len(got) < 120 {
		f := b2.Next()
		switch frameType(f) {
		case "":
			got = append(got, uint64(testutil.Int(t, f, "seq")))
		case "SYNCED":
			synced = true
			if s := uint64(testutil.Int(t, f, "seq")); s < got[len(got)-1] {
				t.Fatalf("SYNCED %d before %d", s, got[len(got)-1])
			}
		default:
			t.Fatalf("unexpected %v", f)
		}
	}
	stop.Store(true)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	last := sent[len(sent)-1]
	for got[len(got)-1] < last {
		got = append(got, uint64(testutil.Int(t, b2.Expect(wstest.Message), "seq")))
	}
	i := slices.Index(sent, got[0])
	if i < 0 || !slices.Equal(sent[i:], got) {
		t.Fatalf("received %d messages, want the %d sent from %d on, each once in order:\n got %v\nsent %v", len(got), len(sent)-max(i, 0), got[0], got, sent[max(i, 0):])
	}
}

// TestResumeFrame: a RESUME frame on a live socket catches up like ?since.
func TestResumeFrame(t *testing.T) { eachReader(t, testResumeFrame) }

func testResumeFrame(t *testing.T, goroutines bool) {
	n := newNode(t, nodeOptions{cfg: Config{goroutineReaders: goroutines}})
	n.create(t, 1, "alice", "bob")
	first := n.send(t, "alice", 1, "one")
	second := n.send(t, "alice", 1, "two")
	b := n.dial(t, "bob", "/ws/inbox/")
	b.Ping()
	b.Send(map[string]any{"type": "RESUME", "since": first - 1})
	for _, want := range []uint64{first, second} {
		if f := b.Expect(wstest.Message); uint64(testutil.Int(t, f, "seq")) != want {
			t.Fatalf("catch-up: %v, want seq %d", f, want)
		}
	}
	if s := b.Expect("SYNCED"); uint64(testutil.Int(t, s, "seq")) < second {
		t.Fatalf("synced: %v", s)
	}
	third := n.send(t, "alice", 1, "three")
	if f := b.Expect(wstest.Message); uint64(testutil.Int(t, f, "seq")) != third {
		t.Fatalf("live after RESUME: %v", f)
	}
}

// TestResumeLegacyAndEmpty: ?since on a legacy socket replays only its
// conversation; since at the head replays nothing but still says SYNCED.
func TestResumeLegacyAndEmpty(t *testing.T) {
	n := newNode(t, nodeOptions{})
	n.create(t, 1, "alice", "bob")
	n.create(t, 2, "alice", "bob")
	s1 := n.send(t, "alice", 1, "in 1")
	n.send(t, "alice", 2, "in 2")
	b := n.dial(t, "bob", "/ws/chat/1/?since=1")
	if f := b.Expect(wstest.Message); uint64(testutil.Int(t, f, "seq")) != s1 {
		t.Fatalf("legacy catch-up: %v", f)
	}
	b.Expect("SYNCED")
	head := n.dir.Seq()[0]
	c := n.dial(t, "bob", fmt.Sprintf("/ws/inbox/?since=%d", head))
	if s := c.Expect("SYNCED"); uint64(testutil.Int(t, s, "seq")) != head {
		t.Fatalf("empty catch-up: %v, want SYNCED %d", s, head)
	}
}

// TestSlowConsumer: a client that stops reading is closed with 4013 while
// the others keep receiving.
func TestSlowConsumer(t *testing.T) { eachReader(t, testSlowConsumer) }

func testSlowConsumer(t *testing.T, goroutines bool) {
	n := newNode(t, nodeOptions{
		cfg:    Config{QueueFrames: 64, goroutineReaders: goroutines},
		limits: chat.Limits{MaxText: 4000},
		listen: func(l net.Listener) net.Listener { return smallSendBuffers{l} },
	})
	n.create(t, 1, "alice", "bob", "sloth")
	b := n.dial(t, "bob", "/ws/inbox/")
	b.Ping()
	slow, err := n.rawDial(t, n.token(t, "sloth"), "/ws/inbox/", smallReceiveBuffer)
	if err != nil {
		t.Fatal(err)
	}
	slow.writeFrame(true, ws.OpText, []byte(`{"type":"PING"}`))
	if f, err := slow.nextText(); err != nil || f["type"] != "PONG" {
		t.Fatalf("slow client ping: %v %v", f, err)
	}

	// Bob reads each message before the next is sent, so only the sloth,
	// which reads nothing, can fall behind.
	text := strings.Repeat("x", 3000)
	i := 0
	for ; metricValue(n.m.SlowCloses) == 0; i++ {
		if i > 5000 {
			t.Fatal("the slow client was never cut off")
		}
		seq := n.send(t, "alice", 1, text)
		if f := b.Expect(wstest.Message); uint64(testutil.Int(t, f, "seq")) != seq {
			t.Fatalf("bob got %v, want seq %d", f, seq)
		}
	}
	t.Logf("the slow client was cut off after %d messages of %d bytes", i, len(text))
	after := n.send(t, "alice", 1, "after the slow close")
	if f := b.Expect(wstest.Message); uint64(testutil.Int(t, f, "seq")) != after {
		t.Fatalf("bob after the slow close: %v", f)
	}
	code, err := slow.closeCode()
	if err != nil || code != CloseSlowConsumer {
		t.Fatalf("slow client closed with %d (%v), want 4013", code, err)
	}
	if got := metricValue(n.m.SlowCloses); got != 1 {
		t.Fatalf("%v slow closes, want only the slow client's", got)
	}
}

// TestSocketLimitAndShutdown: one socket too many is refused with 429;
// Shutdown closes every socket with 1001 and refuses new ones.
func TestSocketLimitAndShutdown(t *testing.T) {
	n := newNode(t, nodeOptions{cfg: Config{MaxSocketsPerUser: 2}})
	a1 := n.dial(t, "alice", "/ws/inbox/")
	a2 := n.dial(t, "alice", "/ws/inbox/")
	if _, resp, err := n.tryDial(t, n.token(t, "alice"), "/ws/inbox/"); err == nil || resp.StatusCode != 429 {
		t.Fatalf("third socket: %v %v", err, resp)
	}
	b := n.dial(t, "bob", "/ws/inbox/")
	for _, cl := range []*client{a1, a2, b} {
		cl.Ping() // answered: the server has registered the socket
	}
	if got := metricValue(n.m.OpenSockets); got != 3 {
		t.Fatalf("open sockets %v, want 3", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.hub.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for _, cl := range []*client{a1, a2, b} {
		if code := cl.CloseStatus(); code != websocket.StatusGoingAway {
			t.Fatalf("%s closed with %v, want 1001", cl.Name(), code)
		}
	}
	if _, resp, err := n.tryDial(t, n.token(t, "bob"), "/ws/inbox/"); err == nil || resp.StatusCode != 503 {
		t.Fatalf("socket after shutdown: %v %v", err, resp)
	}
	if got := metricValue(n.m.OpenSockets); got != 0 {
		t.Fatalf("open sockets %v after shutdown", got)
	}
}

// TestFragmentsAndControlFrames: a message in three fragments with a ping
// in between is reassembled; the ping is answered with a pong.
func TestFragmentsAndControlFrames(t *testing.T) { eachReader(t, testFragmentsAndControlFrames) }

func testFragmentsAndControlFrames(t *testing.T, goroutines bool) {
	n := newNode(t, nodeOptions{cfg: Config{goroutineReaders: goroutines}})
	n.create(t, 1, "alice", "bob")
	r, err := n.rawDial(t, n.token(t, "alice"), "/ws/inbox/", nil)
	if err != nil {
		t.Fatal(err)
	}
	r.writeFrame(false, ws.OpText, []byte(`{"conversation_id": 1, `))
	r.writeFrame(true, ws.OpPing, []byte("are you there"))
	r.writeFrame(false, ws.OpContinuation, []byte(`"message": "in three `))
	r.writeFrame(true, ws.OpContinuation, []byte(`parts", "client_msg_id": "f-1"}`))
	f, err := r.readFrame()
	if err != nil || f.Header.OpCode != ws.OpPong || string(f.Payload) != "are you there" {
		t.Fatalf("pong: %v %q %v", f.Header, f.Payload, err)
	}
	seen := map[string]bool{}
	for !seen["ACK"] || !seen[""] {
		m, err := r.nextText()
		if err != nil {
			t.Fatal(err)
		}
		seen[frameType(m)] = true
		if frameType(m) == "" && m["message"] != "in three parts" {
			t.Fatalf("reassembled: %v", m)
		}
	}
	r.writeFrame(true, ws.OpClose, ws.NewCloseFrameBody(ws.StatusNormalClosure, "done"))
	if code, err := r.closeCode(); err != nil || code != ws.StatusNormalClosure {
		t.Fatalf("close echo: %d %v", code, err)
	}
}

// TestRateLimit: frames over the limit are answered rate_limited and not
// acted on; a client that keeps going is closed with 1008.
func TestRateLimit(t *testing.T) {
	n := newNode(t, nodeOptions{cfg: Config{RatePerSecond: 0.001, RateBurst: 3, RateStrikes: 4}})
	n.create(t, 1, "alice")
	a := n.dial(t, "alice", "/ws/inbox/")
	for i := range 3 {
		a.Send(map[string]any{"conversation_id": 1, "message": fmt.Sprint("ok ", i)})
		a.Expect(wstest.Message)
	}
	a.Send(map[string]any{"conversation_id": 1, "message": "too fast", "client_msg_id": "r-1"})
	if e := a.Expect("ERROR"); e["code"] != chat.CodeRateLimited || e["client_msg_id"] != "r-1" {
		t.Fatalf("rate limited: %v", e)
	}
	for range 3 {
		a.SendRaw(`{"type":"PING"}`)
	}
	if code := a.CloseStatus(); code != websocket.StatusPolicyViolation {
		t.Fatalf("closed with %v, want 1008", code)
	}
	if seq := n.dir.Seq(); seq.String() != "4" { // created + 3 messages
		t.Fatalf("stream at %s: a rate-limited frame was acted on", seq)
	}
}

// TestPingsSpread: the pinger takes the sockets in turns over the interval
// instead of pinging all of them at once, and still pings every one.
func TestPingsSpread(t *testing.T) {
	const interval = time.Second // 100 turns of 10 ms
	n := newNode(t, nodeOptions{cfg: Config{PingInterval: interval, MaxSocketsPerUser: 64}})
	n.create(t, 1, "alice", "bob")
	const sockets = 20
	raws := make([]*rawClient, sockets)
	for i := range raws {
		r, err := n.rawDial(t, n.token(t, "alice"), "/ws/inbox/", nil)
		if err != nil {
			t.Fatal(err)
		}
		raws[i] = r
	}
	pinged := make([]time.Time, sockets)
	var wg sync.WaitGroup
	for i, r := range raws {
		wg.Go(func() {
			for {
				f, err := r.readFrame()
				if err != nil {
					t.Errorf("socket %d: no ping before %v", i, err)
					return
				}
				if f.Header.OpCode == ws.OpPing {
					pinged[i] = time.Now()
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	first, last := slices.MinFunc(pinged, time.Time.Compare), slices.MaxFunc(pinged, time.Time.Compare)
	// 20 sockets registered one after another hold 20 consecutive turns:
	// their first pings span about 190 ms, not one instant.
	if spread := last.Sub(first); spread < 100*time.Millisecond {
		t.Errorf("the first pings of %d sockets came within %v of each other, want them spread over the turns", sockets, spread)
	}
}
