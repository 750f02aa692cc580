package node_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"inbox/internal/testutil"
	"inbox/internal/wstest"
	"inbox/node"
	"inbox/projections"
)

// TestTyping: a TYPING start reaches the other member (every socket) and
// none of the typer's; it carries expires_at = now + the stream's typing TTL;
// repeated starts are appended once; a change of state within the second
// after the last event is appended when the second is over, the latest state
// winning; a client that keeps typing is appended once per interval (1 s here).
func TestTyping(t *testing.T) {
	s := rtNATS(t)
	n := rtStart(t, s, "typing", nil)
	rtCreate(t, 1, []string{"alice", "bob"}, n)
	a1, a2 := rtDial(t, n, "alice"), rtDial(t, n, "alice")
	b := rtDial(t, n, "bob")

	typing := func(on bool) map[string]any {
		return map[string]any{"conversation_id": 1, "type": "TYPING", "is_typing": on}
	}
	before := time.Now()
	for range 5 {
		a1.Send(typing(true))
	}
	a1.Send(typing(false))
	// UNREAD frames (the projector's count for a new member) may come in
	// between; TYPING frames come in stream order.
	f := b.UntilType("TYPING")
	if f["user_id"] != "alice" || f["is_typing"] != true || testutil.Int(t, f, "conversation_id") != 1 || testutil.Int(t, f, "seq") == 0 {
		t.Fatalf("bob got %v, want alice's TYPING start", f)
	}
	exp, ok := f["expires_at"].(string)
	if !ok {
		t.Fatalf("a TYPING start without expires_at: %v", f)
	}
	at, err := time.Parse("2006-01-02T15:04:05.000Z07:00", exp)
	if err != nil {
		t.Fatalf("expires_at %q is not RFC 3339 with milliseconds: %v", exp, err)
	}
	if lo, hi := before.Add(10*time.Second-time.Second), time.Now().Add(10*time.Second+time.Second); at.Before(lo) || at.After(hi) {
		t.Errorf("expires_at %v, want about 10s (the stream's typing TTL) from now", at)
	}
	for k := range f {
		if !slices.Contains([]string{"type", "conversation_id", "user_id", "is_typing", "seq", "expires_at"}, k) {
			t.Errorf("TYPING frame has an unexpected field %q: %v", k, f)
		}
	}
	// The four repeated starts were throttled; the stop, sent within the
	// second, comes when the second is over.
	if f := b.UntilType("TYPING"); f["is_typing"] != false || f["expires_at"] != nil {
		t.Fatalf("bob got %v, want alice's TYPING stop (no expires_at)", f)
	} else if waited := time.Since(before); waited < 900*time.Millisecond {
		t.Errorf("the stop came %v after the start; a change within the second waits for it", waited)
	}
	// Start, stop, start within the second: only the latest state is appended.
	a1.Send(typing(true))
	a1.Send(typing(false))
	a1.Send(typing(true))
	if f := b.UntilType("TYPING"); f["is_typing"] != true {
		t.Fatalf("bob got %v, want alice's second TYPING start", f)
	}
	for _, c := range []*wstest.Client{a1, a2} {
		rtNoneOf(t, c, c.Flush(), "TYPING", nil)
	}
	rtNoneOf(t, b, b.Flush(), "TYPING", nil)

	// Keep typing for 1.5 s (a start every 100 ms): appended at the start
	// and once more a second later.
	a2.Send(typing(false))
	b.UntilType("TYPING")
	time.Sleep(1100 * time.Millisecond) // the first start below is admitted at once
	start := time.Now()
	for time.Since(start) < 1500*time.Millisecond {
		a2.Send(typing(true))
		time.Sleep(100 * time.Millisecond)
	}
	a2.Send(typing(false))
	starts := 0
	for {
		f := b.UntilType("TYPING")
		if f["is_typing"] == false {
			break
		}
		starts++
	}
	if starts != 2 {
		t.Errorf("1.5 s of continuous typing appended %d starts, want 2 (one per second)", starts)
	}

	// Typing in a conversation one is not in is refused.
	rtCreate(t, 2, []string{"carol"}, n)
	a1.Send(map[string]any{"conversation_id": 2, "type": "TYPING", "is_typing": true})
	if e := a1.UntilType("ERROR"); e["code"] != "forbidden" {
		t.Errorf("typing in another's conversation: %v", e)
	}
}

// TestUnreadFollowsItsMessage: with the real projector and feed, a socket
// never hears of an unread count before the messages it counts.
func TestUnreadFollowsItsMessage(t *testing.T) {
	s := rtNATS(t)
	n := rtStart(t, s, "unread-order", nil)
	rtCreate(t, 1, []string{"alice", "bob"}, n)
	a, b := rtDial(t, n, "alice"), rtDial(t, n, "bob")
	const sends = 30
	for i := range sends {
		a.Send(map[string]any{"conversation_id": 1, "message": fmt.Sprint("m", i), "client_msg_id": fmt.Sprint("u-", i)})
	}
	messages := int64(0)
	b.Until("UNREAD 30", func(f wstest.Frame) bool {
		switch rtType(f) {
		case "MESSAGE":
			messages++
		case "UNREAD":
			if u := testutil.Int(t, f, "unread"); u > messages {
				t.Errorf("UNREAD %d after only %d messages", u, messages)
			} else {
				return u == sends
			}
		}
		return false
	})
}

// TestUnreadCountsEndAsTheReadModel: with the real projector and a feed
// that follows the whole stream (as with the embedded server), under a random mix of messages, receipts and deletions in two
// conversations (the feed tells most counts with their message, the read
// model the rest), the last UNREAD each socket got of a conversation is the
// read model's count once it has applied everything.
func TestUnreadCountsEndAsTheReadModel(t *testing.T) {
	s := rtNATS(t)
	n := rtStart(t, s, "unread-random", func(c *node.Config) { c.LiveFeed = node.LiveFeedStream })
	members := map[int64][]string{1: {"alice", "bob", "carol"}, 2: {"alice", "bob"}}
	rtCreate(t, 1, members[1], n)
	rtCreate(t, 2, members[2], n)
	actor, watcher := map[string]*wstest.Client{}, map[string]*wstest.Client{}
	for _, u := range members[1] {
		actor[u], watcher[u] = rtDial(t, n, u), rtDial(t, n, u)
	}
	type sent struct {
		id   int64
		from string
	}
	msgs := map[int64][]sent{}
	rng := rand.New(rand.NewPCG(11, 12))
	var reads, deletes int
	for i := range 120 {
		conv := int64(1 + rng.IntN(2))
		u := members[conv][rng.IntN(len(members[conv]))]
		switch op := rng.IntN(10); {
		case op < 6 || len(msgs[conv]) == 0:
			msgs[conv] = append(msgs[conv], sent{rtSendMessage(t, actor[u], conv, fmt.Sprint("m", i)), u})
		case op < 9:
			m := msgs[conv][rng.IntN(len(msgs[conv]))]
			actor[u].Send(map[string]any{"conversation_id": conv, "type": "READ", "up_to": m.id})
			reads++
		default:
			m := msgs[conv][rng.IntN(len(msgs[conv]))]
			actor[m.from].Send(map[string]any{"type": "DELETE", "conversation_id": conv, "message_id": m.id, "client_msg_id": fmt.Sprint("d", i)})
			deletes++
		}
	}
	t.Logf("%d messages, %d receipts, %d deletions", len(msgs[1])+len(msgs[2]), reads, deletes)
	last := map[string]map[int64]int64{}
	testutil.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		for u, c := range watcher {
			if last[u] == nil {
				last[u] = map[int64]int64{}
			}
			for _, f := range c.Flush() {
				if rtType(f) == "UNREAD" {
					last[u][testutil.Int(t, f, "conversation_id")] = testutil.Int(t, f, "unread")
				}
			}
		}
		for conv, us := range members {
			for _, u := range us {
				got, ok := last[u][conv]
				if want := rtUnread(t, n, u, conv); !ok || got != want {
					return fmt.Errorf("%s's last UNREAD of %d: %d (sent: %v), read model: %d", u, conv, got, ok, want)
				}
			}
		}
		return nil
	})
}

// TestReadReceipts: receipts by message_ids and by up_to move the reader's
// watermark and unread count (GET /api/conversations), push READ to every
// member's sockets (the reader's other device included) and UNREAD to the
// reader's; a stale receipt never moves the watermark back.
func TestReadReceipts(t *testing.T) {
	s := rtNATS(t)
	n := rtStart(t, s, "receipts", nil)
	rtCreate(t, 1, []string{"alice", "bob"}, n)
	rtCreate(t, 2, []string{"alice", "carol"}, n)
	a := rtDial(t, n, "alice")
	b1, b2 := rtDial(t, n, "bob"), rtDial(t, n, "bob")

	m1, m2, m3 := rtSendMessage(t, a, 1, "one"), rtSendMessage(t, a, 1, "two"), rtSendMessage(t, a, 1, "three")
	unread := func(c *wstest.Client, want int64) {
		t.Helper()
		c.Until(fmt.Sprintf("UNREAD %d", want), func(f wstest.Frame) bool {
			return rtType(f) == "UNREAD" && testutil.Int(t, f, "conversation_id") == 1 && testutil.Int(t, f, "unread") == want
		})
	}
	unread(b1, 3)
	unread(b2, 3)
	if got := rtUnread(t, n, "bob", 1); got != 3 {
		t.Errorf("bob's unread %d, want 3", got)
	}
	if got := rtUnread(t, n, "alice", 1); got != 0 {
		t.Errorf("alice's unread %d, want 0 (own messages never count)", got)
	}

	read := func(c *wstest.Client, upTo int64, wantIDs bool) {
		t.Helper()
		for _, c := range []*wstest.Client{a, b1, b2} {
			f := c.UntilType("READ")
			if f["user_id"] != "bob" || testutil.Int(t, f, "conversation_id") != 1 || testutil.Int(t, f, "up_to") != upTo || testutil.Int(t, f, "seq") == 0 {
				t.Errorf("%s: READ %v, want bob up to %d", c.Name(), f, upTo)
			}
			if _, has := f["message_ids"]; has != wantIDs {
				t.Errorf("%s: READ %v: message_ids present %v, want %v", c.Name(), f, has, wantIDs)
			}
		}
	}

	// The seed's form: explicit ids.
	b1.Send(map[string]any{"conversation_id": 1, "type": "READ", "message_ids": []int64{m1}})
	read(b1, m1, true)
	unread(b1, 2)
	unread(b2, 2)
	if got := rtUnread(t, n, "bob", 1); got != 2 {
		t.Errorf("after reading m1: bob's unread %d, want 2", got)
	}

	// The watermark, from the other device.
	b2.Send(map[string]any{"conversation_id": 1, "type": "READ", "up_to": m3})
	read(b2, m3, false)
	unread(b1, 0)
	unread(b2, 0)
	if got := rtUnread(t, n, "bob", 1); got != 0 {
		t.Errorf("after reading up to m3: bob's unread %d, want 0", got)
	}

	// A stale receipt (reordered, or from a device behind) is delivered but
	// moves nothing back.
	b1.Send(map[string]any{"conversation_id": 1, "type": "READ", "up_to": m1})
	read(b1, m1, false)
	b1.Send(map[string]any{"conversation_id": 1, "type": "READ", "message_ids": []int64{m2}})
	read(b1, m2, true)
	m4 := rtSendMessage(t, a, 1, "four")
	unread(b1, 1)
	ctx, cancel := context.WithTimeout(context.Background(), rtFrameWait)
	defer cancel()
	if err := n.Projector().WaitFor(ctx, uint64(m4)); err != nil {
		t.Fatal(err)
	}
	if w := rtWatermark(t, n, 1, "bob"); w != m3 {
		t.Errorf("bob's watermark %d after stale receipts, want %d", w, m3)
	}
	if got := rtUnread(t, n, "bob", 1); got != 1 {
		t.Errorf("bob's unread %d, want 1 (m4)", got)
	}

	// Refused: a conversation one is not in, a message of another
	// conversation, no ids at all.
	m5 := rtSendMessage(t, a, 2, "to carol")
	for _, tc := range []struct {
		name  string
		frame map[string]any
		code  string
	}{
		{"not a member", map[string]any{"conversation_id": 2, "type": "READ", "up_to": m5}, "forbidden"},
		{"id of another conversation", map[string]any{"conversation_id": 1, "type": "READ", "message_ids": []int64{m5}}, "not_found"},
		{"up_to of another conversation", map[string]any{"conversation_id": 1, "type": "READ", "up_to": m5}, "not_found"},
		{"nothing to read", map[string]any{"conversation_id": 1, "type": "READ"}, "bad_request"},
	} {
		b1.Send(tc.frame)
		if e := b1.UntilType("ERROR"); e["code"] != tc.code {
			t.Errorf("%s: ERROR %v, want code %s", tc.name, e, tc.code)
		}
	}
	if w := rtWatermark(t, n, 1, "bob"); w != m3 {
		t.Errorf("bob's watermark %d after refused receipts, want %d", w, m3)
	}
}

// TestPresence: a user's first socket makes it online and its last socket's
// close offline, told to users who share a conversation with it (and
// answered by GET /api/presence), never to a stranger or to the user itself.
func TestPresence(t *testing.T) {
	s := rtNATS(t)
	n := rtStart(t, s, "presence", nil)
	rtCreate(t, 1, []string{"alice", "bob"}, n)
	rtCreate(t, 2, []string{"carol", "dave"}, n)
	a := rtDial(t, n, "alice")
	c := rtDial(t, n, "carol") // shares nothing with bob

	isBob := func(f wstest.Frame) bool { return f["user_id"] == "bob" }
	b1 := rtDial(t, n, "bob")
	f := a.UntilType("PRESENCE")
	if f["user_id"] != "bob" || f["online"] != true || f["last_seen"] != nil || len(f) != 4 {
		t.Errorf("alice got %v, want bob online with last_seen null", f)
	}
	rtNoneOf(t, c, c.Flush(), "PRESENCE", nil)
	rtNoneOf(t, b1, b1.Flush(), "PRESENCE", isBob)

	type status struct {
		UserID   string  `json:"user_id"`
		Online   bool    `json:"online"`
		LastSeen *string `json:"last_seen"`
	}
	var st status
	if code := rtGet(t, n, "alice", "/api/presence?user_id=bob", &st); code != http.StatusOK || !st.Online || st.UserID != "bob" || st.LastSeen != nil {
		t.Errorf("alice asks about bob: %d %+v", code, st)
	}
	if code := rtGet(t, n, "carol", "/api/presence?user_id=bob", nil); code != http.StatusForbidden {
		t.Errorf("carol asks about bob: %d, want 403", code)
	}
	if code := rtGet(t, n, "carol", "/api/presence?user_id=bad.id", nil); code != http.StatusBadRequest {
		t.Errorf("a malformed id: %d, want 400", code)
	}

	// A second socket changes nothing; closing it neither.
	b2 := rtDial(t, n, "bob")
	b2.Close()
	b1.Close()
	closed := time.Now()
	f = a.UntilType("PRESENCE")
	if f["user_id"] != "bob" || f["online"] != false {
		t.Fatalf("alice got %v, want bob offline (and nothing for the second socket)", f)
	}
	seen, err := time.Parse(time.RFC3339, fmt.Sprint(f["last_seen"]))
	if err != nil || seen.Before(closed.Add(-2*time.Second)) || seen.After(time.Now().Add(time.Second)) {
		t.Errorf("last_seen %v (%v), want about %v", f["last_seen"], err, closed)
	}
	rtNoneOf(t, c, c.Flush(), "PRESENCE", nil)
	testutil.CheckFor(t, rtFrameWait, 10*time.Millisecond, func() error {
		st = status{}
		if code := rtGet(t, n, "alice", "/api/presence?user_id=bob", &st); code != http.StatusOK || st.Online || st.LastSeen == nil {
			return fmt.Errorf("alice asks about bob: %d %+v", code, st)
		}
		return nil
	})
}

// TestPresenceAcrossNodes: two inboxd nodes on one NATS. A user with a
// socket on each goes offline only when both are closed; a node that dies
// (its presence heartbeat stops, nothing is cleaned up) takes the users only
// it held offline by itself, within its node TTL, and not those also
// connected elsewhere.
func TestPresenceAcrossNodes(t *testing.T) {
	s := rtNATS(t)
	n1, n2 := rtStart(t, s, "n1", nil), rtStart(t, s, "n2", nil)
	rtCreate(t, 1, []string{"watcher", "u"}, n1, n2)
	rtCreate(t, 2, []string{"watcher", "v", "x", "y"}, n1, n2)
	w := rtDial(t, n1, "watcher")
	presence := func(user string, online bool) func(wstest.Frame) bool {
		return func(f wstest.Frame) bool {
			return rtType(f) == "PRESENCE" && f["user_id"] == user && f["online"] == online
		}
	}
	expect := func(user string, online bool) wstest.Frame {
		t.Helper()
		f := w.UntilType("PRESENCE")
		if !presence(user, online)(f) {
			t.Fatalf("watcher got %v, want %s online=%v", f, user, online)
		}
		return f
	}

	u1 := rtDial(t, n1, "u")
	expect("u", true)
	u2 := rtDial(t, n2, "u")
	// Presence is written asynchronously, in order per node: once y (dialled
	// on n2 after u) is seen online here, n2's key for u has been seen too, so
	// closing u1 below is not u's last socket.
	y := rtDial(t, n2, "y")
	expect("y", true)
	y.Close()
	expect("y", false)

	// Close the socket on n1; u is still on n2. x coming online on n1 after
	// that close is written to the bucket after it: the watcher hears of x
	// and, before it, nothing about u.
	u1.Close()
	testutil.CheckFor(t, rtFrameWait, 10*time.Millisecond, func() error {
		if got := rtOpenSockets(n1); got != 1 {
			return fmt.Errorf("n1 has %d sockets open, want 1 (the watcher's)", got)
		}
		return nil
	})
	x := rtDial(t, n1, "x")
	expect("x", true)
	x.Close()
	expect("x", false)

	u2.Close()
	expect("u", false)

	// u on both nodes, v on n2 only; n2 dies.
	u1 = rtDial(t, n1, "u")
	expect("u", true)
	rtDial(t, n2, "u")
	rtDial(t, n2, "v")
	expect("v", true)
	killed := time.Now()
	n2.HaltPresence() // the heartbeat stops as in a crash: n2's keys stay until they expire
	f := expect("v", false)
	if d := time.Since(killed); d > 5*time.Second {
		t.Errorf("v went offline %v after its node died, want about the node TTL (1s)", d)
	}
	seen, err := time.Parse(time.RFC3339, fmt.Sprint(f["last_seen"]))
	if err != nil || seen.After(time.Now()) || seen.Before(killed.Add(-2*time.Second)) {
		t.Errorf("v's last_seen %v (%v), want n2's last heartbeat, about %v", f["last_seen"], err, killed)
	}
	rtNoneOf(t, w, w.Flush(), "PRESENCE", nil) // u, also on n1, stays online
	var st struct {
		Online bool `json:"online"`
	}
	if rtGet(t, n1, "watcher", "/api/presence?user_id=u", &st); !st.Online {
		t.Error("u reported offline while its socket on n1 is open")
	}
	u1.Close()
	expect("u", false)
}

// TestVerifyAfterRandomWorkload: a random mix of messages, typing and read
// receipts (fresh, stale, by ids and by watermark) from many sockets on two
// nodes leaves each node's read model equal to a rebuild from the stream.
func TestVerifyAfterRandomWorkload(t *testing.T) {
	s := rtNATS(t)
	n1, n2 := rtStart(t, s, "w1", nil), rtStart(t, s, "w2", nil)
	nodes := []*node.Node{n1, n2}
	rng := rand.New(rand.NewPCG(4, 4))
	users := []string{"u0", "u1", "u2", "u3", "u4", "u5"}
	convs := map[int64][]string{}
	for id := int64(1); id <= 6; id++ {
		ms := slices.Clone(users)
		rng.Shuffle(len(ms), func(i, j int) { ms[i], ms[j] = ms[j], ms[i] })
		ms = ms[:2+rng.IntN(3)]
		convs[id] = ms
		rtCreate(t, id, ms, n1, n2)
	}
	sockets := map[string][]*wstest.Client{}
	for i, u := range users {
		sockets[u] = []*wstest.Client{rtDial(t, nodes[i%2], u), rtDial(t, nodes[(i+1)%2], u)}
	}
	msgs := map[int64][]int64{}
	const ops = 400
	for range ops {
		conv := int64(1 + rng.IntN(len(convs)))
		ms := convs[conv]
		user := ms[rng.IntN(len(ms))]
		c := sockets[user][rng.IntN(2)]
		switch p := rng.IntN(10); {
		case p < 4 || len(msgs[conv]) == 0:
			msgs[conv] = append(msgs[conv], rtSendMessage(t, c, conv, fmt.Sprintf("hello %d", rng.Int())))
		case p < 6:
			c.Send(map[string]any{"conversation_id": conv, "type": "TYPING", "is_typing": rng.IntN(3) > 0})
		case p < 8:
			ids := msgs[conv]
			c.Send(map[string]any{"conversation_id": conv, "type": "READ", "up_to": ids[rng.IntN(len(ids))]})
		default:
			ids := msgs[conv]
			pick := []int64{ids[rng.IntN(len(ids))], ids[rng.IntN(len(ids))]}
			c.Send(map[string]any{"conversation_id": conv, "type": "READ", "message_ids": pick})
		}
	}
	for _, cs := range sockets {
		for _, c := range cs {
			rtNoneOf(t, c, c.Flush(), "ERROR", nil)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	last, err := n1.Store().Last(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if err := n.Projector().WaitForAll(ctx, last); err != nil {
			t.Fatalf("node %s: projection did not reach %d: %v", n.Config().NodeID, last, err)
		}
		diffs, err := projections.Verify(ctx, n.Store(), n.DB(), filepath.Join(t.TempDir(), "verify.db"), nil)
		if err != nil {
			t.Fatalf("verify %s: %v", n.Config().NodeID, err)
		}
		for _, d := range diffs {
			t.Errorf("node %s: %s", n.Config().NodeID, d)
		}
	}
	// Unread counts agree across nodes and with the sockets' last UNREAD.
	for _, u := range users {
		for conv, ms := range convs {
			if !slices.Contains(ms, u) {
				continue
			}
			if a, b := rtUnread(t, n1, u, conv), rtUnread(t, n2, u, conv); a != b {
				t.Errorf("%s in %d: unread %d on w1, %d on w2", u, conv, a, b)
			}
		}
	}
}
