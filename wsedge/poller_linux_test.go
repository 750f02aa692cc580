package wsedge

import (
	"testing"
	"time"

	"inbox/internal/wstest"
)

// TestPollerHoldsIdleSockets: on Linux the poller reads every socket, so an
// open, idle socket costs no goroutine, and it still answers; a socket that
// sends nothing for two ping intervals is closed by the poller's sweep.
func TestPollerHoldsIdleSockets(t *testing.T) {
	// The default ping interval while the sockets are counted: with a short
	// one, a socket dialed first is swept (it reads no pings) before the
	// last is open on a slow machine.
	n := newNode(t, nodeOptions{cfg: Config{MaxSocketsPerUser: 64}})
	if n.hub.poll == nil {
		t.Fatal("no poller on Linux")
	}
	n.create(t, 1, "alice", "bob")
	const sockets = 40
	clients := make([]*client, sockets)
	for i := range clients {
		clients[i] = n.dial(t, "alice", "/ws/inbox/")
		clients[i].Ping()
	}
	n.hub.poll.mu.Lock()
	polled := len(n.hub.poll.conns)
	n.hub.poll.mu.Unlock()
	if polled != sockets {
		t.Fatalf("poller reads %d sockets, want %d", polled, sockets)
	}
	b := n.dial(t, "bob", "/ws/inbox/")
	b.Ping()
	clients[sockets-1].Send(map[string]any{"conversation_id": 1, "message": "still here", "client_msg_id": "p-1"})
	// The ACK and the sender's own copy come in either order.
	if x, y := frameType(clients[sockets-1].Next()), frameType(clients[sockets-1].Next()); x+y != "ACK" {
		t.Fatalf("sender got %q and %q, want an ACK and its message", x, y)
	}
	if got := b.Expect(wstest.Message); got["message"] != "still here" {
		t.Fatalf("bob got %v", got)
	}

	// A client that never answers the pings is cut off by the sweep.
	n = newNode(t, nodeOptions{cfg: Config{PingInterval: 200 * time.Millisecond}})
	mute, err := n.rawDial(t, n.token(t, "bob"), "/ws/inbox/", nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for {
		if _, err := mute.readFrame(); err != nil {
			break // closed by the server (pings and no answer until then)
		}
	}
	if waited := time.Since(start); waited < 300*time.Millisecond || waited > 4*time.Second {
		t.Fatalf("a mute socket was closed after %v, want about two ping intervals (400ms)", waited)
	}
}
