package wsedge

import (
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"inbox/chat"
	"inbox/eventstore"
	"inbox/internal/testutil"
	"inbox/internal/wstest"
)

// cursorOf is the resume cursor a client builds from the seq of the event
// frames it got: per partition (the seq's low 8 bits), the highest.
func cursorOf(t *testing.T, frames []map[string]any) string {
	t.Helper()
	top := map[uint64]uint64{}
	for _, f := range frames {
		if _, ok := f["seq"]; !ok {
			continue
		}
		seq := uint64(testutil.Int(t, f, "seq"))
		top[seq&0xff] = max(top[seq&0xff], seq)
	}
	var ids []string
	for _, k := range slices.Sorted(maps.Keys(top)) {
		ids = append(ids, fmt.Sprint(top[k]))
	}
	return strings.Join(ids, ",")
}

// messagesByConv checks that frames are message frames each in its
// conversation's partition, and returns their texts by conversation, in
// the order received.
func messagesByConv(t *testing.T, frames []map[string]any) map[int64][]string {
	t.Helper()
	out := map[int64][]string{}
	last := map[int64]uint64{}
	for _, f := range frames {
		if frameType(f) != "" {
			t.Fatalf("not a message frame: %v", f)
		}
		conv := testutil.Int(t, f, "conversation_id")
		seq := uint64(testutil.Int(t, f, "seq"))
		if k, _ := eventstore.Split(3, seq); k != eventstore.Partition(conv, 3) {
			t.Fatalf("message %d of conversation %d names partition %d, want %d", seq, conv, k, eventstore.Partition(conv, 3))
		}
		if id := uint64(testutil.Int(t, f, "id")); id != seq || uint64(testutil.Int(t, f, "message_id")) != seq {
			t.Fatalf("id, message_id and seq differ: %v", f)
		}
		if seq <= last[conv] {
			t.Fatalf("conversation %d: message %d after %d", conv, seq, last[conv])
		}
		last[conv] = seq
		out[conv] = append(out[conv], f["message"].(string))
	}
	return out
}

// TestResumeAcrossPartitions (issue 16): with 3 partitions a socket that
// reconnects with a cursor (the one it built from the frames' seq, or
// SYNCED's) gets every message it missed, in every partition, once, each
// conversation in order; RESUME takes the cursor too; a cursor naming a
// partition the stream does not have is refused.
func TestResumeAcrossPartitions(t *testing.T) { eachReader(t, testResumeAcrossPartitions) }

func testResumeAcrossPartitions(t *testing.T, goroutines bool) {
	n := newNode(t, nodeOptions{partitions: 3, cfg: Config{goroutineReaders: goroutines, ResumePageEvents: 7}})
	// Two conversations in each partition.
	var convs []int64
	perPart := map[int]int{}
	for id := int64(1); len(convs) < 6; id++ {
		if k := eventstore.Partition(id, 3); perPart[k] < 2 {
			perPart[k]++
			convs = append(convs, id)
			n.create(t, id, "alice", "bob")
		}
	}
	send := func(round string) map[int64][]string {
		want := map[int64][]string{}
		for i := range 2 {
			for _, id := range convs {
				text := fmt.Sprintf("%s %d in %d", round, i, id)
				n.send(t, "alice", id, text)
				want[id] = append(want[id], text)
			}
		}
		return want
	}

	b := n.dial(t, "bob", "/ws/inbox/")
	b.Ping()
	want := send("live")
	var live []map[string]any
	for range 12 {
		live = append(live, b.Expect(wstest.Message))
	}
	if got := messagesByConv(t, live); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("live: %v, want %v", got, want)
	}
	b.CloseNow()

	// Reconnect with the cursor built from the frames.
	missed := send("missed")
	b = n.dial(t, "bob", "/ws/inbox/?since="+url.QueryEscape(cursorOf(t, live)))
	frames, last, pages, _ := resumeAll(t, b, "cursor", nil, nil)
	synced := last.Str("cursor")
	if pages < 2 {
		t.Errorf("12 messages over pages of 7 events came in %d page(s)", pages)
	}
	if got := messagesByConv(t, frames); fmt.Sprint(got) != fmt.Sprint(missed) {
		t.Fatalf("caught up with a built cursor: %v, want %v", got, missed)
	}
	c, err := eventstore.ParseCursor(synced, 3)
	if err != nil {
		t.Fatalf("SYNCED cursor %q: %v", synced, err)
	}
	for _, f := range slices.Concat(live, frames) {
		if !c.Covers(uint64(testutil.Int(t, f, "seq"))) {
			t.Fatalf("SYNCED cursor %s does not cover %v", synced, f)
		}
	}
	b.CloseNow()

	// Reconnect with SYNCED's cursor.
	later := send("later")
	b = n.dial(t, "bob", "/ws/inbox/?since="+url.QueryEscape(synced))
	frames, _, _, _ = resumeAll(t, b, "cursor", nil, nil)
	if got := messagesByConv(t, frames); fmt.Sprint(got) != fmt.Sprint(later) {
		t.Fatalf("caught up with SYNCED's cursor: %v, want %v", got, later)
	}

	// RESUME with a cursor on the open socket: everything after it again.
	frames, _, _, _ = resumeAll(t, b, "cursor", synced, nil)
	if got := messagesByConv(t, frames); fmt.Sprint(got) != fmt.Sprint(later) {
		t.Fatalf("RESUME with a cursor: %v, want %v", got, later)
	}

	// A cursor naming partition 7 of 3: refused, before and after the upgrade.
	bad := eventstore.ID(256, 7, 1)
	if _, resp, err := n.tryDial(t, n.token(t, "bob"), fmt.Sprintf("/ws/inbox/?since=%d", bad)); err == nil || resp == nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("since naming partition 7: %v, want HTTP 400", err)
	}
	b.Send(map[string]any{"type": "RESUME", "cursor": fmt.Sprint(bad)})
	if e := b.Expect("ERROR"); e["code"] != chat.CodeBadRequest || !strings.Contains(e["error"].(string), "partition 7") {
		t.Fatalf("RESUME naming partition 7: %v", e)
	}
}
