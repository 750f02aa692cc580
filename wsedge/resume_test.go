package wsedge

import (
	"fmt"
	"testing"

	"inbox/chat"
	"inbox/internal/testutil"
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
	if e := b.expect("ERROR"); e["code"] != chat.CodeBadRequest {
		t.Fatalf("connect with since beyond the stream: %v", e)
	}
	live := n.send(t, "alice", 1, "live after a bad since")
	if f := b.expect(""); uint64(testutil.Int(t, f, "seq")) != live {
		t.Fatalf("after a bad since on connect: %v, want the live message %d", f, live)
	}

	b.sendJSON(map[string]any{"type": "RESUME", "since": live + 1000})
	if e := b.expect("ERROR"); e["code"] != chat.CodeBadRequest {
		t.Fatalf("RESUME beyond the stream: %v", e)
	}
	live = n.send(t, "alice", 1, "live after a bad RESUME")
	if f := b.expect(""); uint64(testutil.Int(t, f, "seq")) != live {
		t.Fatalf("after a bad RESUME: %v, want the live message %d", f, live)
	}

	// The stream's last sequence itself is a good since.
	b.sendJSON(map[string]any{"type": "RESUME", "since": live})
	if s := b.expect("SYNCED"); uint64(testutil.Int(t, s, "seq")) != live {
		t.Fatalf("RESUME from the last sequence: %v", s)
	}
}
