package wsedge

import (
	"fmt"
	"testing"
	"time"

	"inbox/admission"
	"inbox/internal/testutil"
	"inbox/internal/wstest"
)

// TestAckFollowsItsMessage: the sender's ACK never comes before its echo of
// the message: a client may treat the ACK as "everything up to here arrived".
// (The worker used to queue the ACK as soon as the stream acknowledged, most
// often before the feed had the message.)
func TestAckFollowsItsMessage(t *testing.T) { eachReader(t, testAckFollowsItsMessage) }

func testAckFollowsItsMessage(t *testing.T, goroutines bool) {
	n := newNode(t, nodeOptions{cfg: Config{goroutineReaders: goroutines, RatePerSecond: 1000, RateBurst: 1000}})
	n.create(t, 1, "alice", "bob")
	a := n.dial(t, "alice", "/ws/inbox/")
	a.Ping()
	const sends = 40
	for i := range sends {
		a.Send(map[string]any{"conversation_id": 1, "message": fmt.Sprint("m", i), "client_msg_id": fmt.Sprint("k", i)})
	}
	echoed := map[string]bool{}
	for acked := 0; acked < sends; {
		f := a.Next()
		switch frameType(f) {
		case "":
			echoed[f["client_msg_id"].(string)] = true
		case "ACK":
			if id := f["client_msg_id"].(string); !echoed[id] {
				t.Fatalf("ACK of %s before its message", id)
			}
			acked++
		default:
			t.Fatalf("unexpected frame %v", f)
		}
	}
}

// TestAckWithoutItsMessage: a feed that dispatches nothing (stalled: a NATS
// server lost under it) holds a stored message's ACK for maxAckHold, then
// lets it go: the sender is answered (CI failed TestNATSServerKilledUnderLoad
// on a node whose ACKs were held for good).
func TestAckWithoutItsMessage(t *testing.T) {
	n := newNode(t, nodeOptions{})
	n.create(t, 1, "alice", "bob")
	a := n.dial(t, "alice", "/ws/inbox/")
	a.Ping()
	n.stopFeed()
	a.Send(map[string]any{"conversation_id": 1, "message": "stored", "client_msg_id": "k1"})
	f := a.Next()
	if frameType(f) != "ACK" || f["client_msg_id"] != "k1" {
		t.Fatalf("got %v, want the ACK of k1", f)
	}
}

// TestUnreadCoalesced: an UNREAD still queued for a socket is replaced by a
// newer count of the same conversation, which goes after everything queued
// before it; other conversations' counts stay.
func TestUnreadCoalesced(t *testing.T) {
	n := newNode(t, nodeOptions{})
	c := &conn{hub: n.hub, owned: true} // owned: nothing is flushed meanwhile
	c.mu.Lock()
	c.pushLocked(encodeUnread(1, 1))
	c.pushLocked(encodeUnread(2, 5))
	c.pushLocked(pongFrame)
	c.pushLocked(encodeUnread(1, 2))
	c.pushLocked(encodeUnread(1, 3))
	var got []string
	for _, f := range c.pending {
		got = append(got, string(f.wire[2:]))
	}
	c.mu.Unlock()
	want := []string{`{"type":"UNREAD","conversation_id":2,"unread":5}`, `{"type":"PONG"}`, `{"type":"UNREAD","conversation_id":1,"unread":3}`}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("queued %q, want %q", got, want)
	}
}

// TestPresenceHeldWhileShedding: while the node sheds presence changes, a
// user's changes are held and only the latest goes out, once the node is
// below its bounds again; the frames queued for sockets are counted for the
// gate and the count returns to zero once they are written.
func TestPresenceHeldWhileShedding(t *testing.T) {
	gate := admission.New(admission.Config{MaxQueuedFrames: 1000})
	n := newNode(t, nodeOptions{gate: gate, cfg: Config{PingInterval: time.Second}})
	n.create(t, 1, "alice", "bob")
	b := n.dial(t, "bob", "/ws/inbox/")
	b.Ping()

	gate.Queued(600) // over half the bound: presence is shed, messages are not
	at := time.Unix(1_700_000_000, 0)
	n.hub.PushPresence("alice", true, time.Time{})
	n.hub.PushPresence("alice", false, at)
	n.send(t, "alice", 1, "while busy")
	if f := b.Expect(wstest.Message); f["message"] != "while busy" {
		t.Fatalf("message = %v", f)
	}
	b.Ping() // no PRESENCE came before the PONG
	// The first change was refused; the second is held behind it.
	if got := gate.Status().Shed["presence"]["socket_queue"]; got != 1 {
		t.Fatalf("presence shed %d times, want 1", got)
	}

	gate.Queued(-600)
	f := b.Expect("PRESENCE") // on a pinger turn, within a second
	if f["user_id"] != "alice" || f["online"] != false || f["last_seen"] != "2023-11-14T22:13:20Z" {
		t.Fatalf("presence = %v, want alice offline (the latest)", f)
	}
	b.Ping()
	testutil.CheckFor(t, frameWait, time.Millisecond, func() error {
		if q := gate.Status().QueuedFrames; q != 0 {
			return fmt.Errorf("%d frames counted as queued after they were written", q)
		}
		return nil
	})
}
