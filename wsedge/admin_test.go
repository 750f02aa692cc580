package wsedge

import (
	"strconv"
	"testing"

	"inbox/internal/testutil"
	"inbox/internal/wstest"
)

// TestDisconnect: an operator's disconnect closes every socket of the user
// with 4010 and no one else's; the user resumes from its last seq and gets
// what was sent meanwhile, once.
func TestDisconnect(t *testing.T) {
	n := newNode(t, nodeOptions{})
	n.create(t, 1, "alice", "bob")
	seen := n.send(t, "bob", 1, "before")
	a1 := n.dial(t, "alice", "/ws/inbox/")
	a2 := n.dial(t, "alice", "/ws/inbox/")
	b := n.dial(t, "bob", "/ws/inbox/")
	for _, c := range []*client{a1, a2, b} {
		c.Ping()
	}
	if got := n.hub.Disconnect("alice"); got != 2 {
		t.Fatalf("Disconnect closed %d sockets, want 2", got)
	}
	for _, c := range []*client{a1, a2} {
		if got := c.CloseStatus(); got != 4010 {
			t.Errorf("alice's socket closed with %d, want 4010", got)
		}
	}
	meanwhile := n.send(t, "bob", 1, "meanwhile")
	b.Expect(wstest.Message) // bob's socket is still open and gets his message
	if !n.hub.FeedSeq().Covers(meanwhile) {
		t.Errorf("FeedSeq %s after dispatching %d", n.hub.FeedSeq(), meanwhile)
	}
	if got := n.hub.Disconnect("nobody"); got != 0 {
		t.Errorf("Disconnect of a user with no socket closed %d", got)
	}

	a := n.dial(t, "alice", "/ws/inbox/?since="+strconv.FormatUint(seen, 10))
	if f := a.Expect(wstest.Message); uint64(testutil.Int(t, f, "seq")) != meanwhile || f["message"] != "meanwhile" {
		t.Fatalf("resumed with %v, want the message sent meanwhile (seq %d)", f, meanwhile)
	}
	if s := a.Expect("SYNCED"); uint64(testutil.Int(t, s, "seq")) < meanwhile {
		t.Errorf("SYNCED %v before seq %d", s, meanwhile)
	}
}
