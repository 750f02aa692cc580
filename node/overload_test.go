package node_test

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"testing"

	"inbox/internal/testutil"
	"inbox/internal/wstest"
)

// TestShedAtTheDoor: while the node sheds load, a socket send is answered
// with ERROR unavailable carrying its client_msg_id and retry_after_ms, an
// HTTP send with 503 and Retry-After, and nothing is stored; the refusals
// are counted (inbox_shed_total, the status); once the load is gone the
// same send goes through. The load is the socket-queue signal, set here
// directly: the other signals are timing and are tested in admission.
func TestShedAtTheDoor(t *testing.T) {
	n := rtStart(t, rtNATS(t), "shed", nil)
	rtCreate(t, 1, []string{"a", "b"}, n)
	a, b := rtDial(t, n, "a"), rtDial(t, n, "b")
	// b's coming online reaches a before the load: a presence change while
	// the node sheds would be held and counted as shed too.
	a.Until("b online", func(f wstest.Frame) bool { return f.Type() == "PRESENCE" && f["user_id"] == "b" && f["online"] == true })
	ctx := context.Background()
	before, err := n.Store().Last(ctx)
	if err != nil {
		t.Fatal(err)
	}

	busy := n.Admission().Config().MaxQueuedFrames + 1
	n.Admission().Queued(busy)
	a.Send(map[string]any{"conversation_id": 1, "message": "hello", "client_msg_id": "c-1"})
	f := a.UntilType("ERROR")
	if f["code"] != "unavailable" || f["client_msg_id"] != "c-1" || testutil.Int(t, f, "retry_after_ms") <= 0 {
		t.Fatalf("ERROR = %v, want unavailable for c-1 with retry_after_ms", f)
	}
	r := rtDo(t, n, "POST", "/api/conversations/1/messages", rtToken(t, "a"), `{"message":"over HTTP"}`)
	var body struct {
		Code         string `json:"code"`
		RetryAfterMS int64  `json:"retry_after_ms"`
	}
	json.Unmarshal([]byte(r.body), &body)
	secs, _ := strconv.Atoi(r.header.Get("Retry-After"))
	if r.status != http.StatusServiceUnavailable || secs < 1 || body.Code != "unavailable" || body.RetryAfterMS <= 0 {
		t.Fatalf("HTTP send while shedding: %d Retry-After %q %s", r.status, r.header.Get("Retry-After"), r.body)
	}
	if after, err := n.Store().Last(ctx); err != nil || !slices.Equal(after, before) {
		t.Fatalf("the stream moved from %d to %d (%v) while shedding", before, after, err)
	}
	st, err := n.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// a's and b's coming online reach the node through the presence bucket,
	// whenever: one arriving while it is busy is shed too.
	if st.Load.Shed["message"]["socket_queue"] != 2 || st.Totals.Shed != 2+st.Load.Shed["presence"]["socket_queue"] || st.Load.QueuedFrames != int64(busy) {
		t.Fatalf("status load = %+v, totals shed %d", st.Load, st.Totals.Shed)
	}

	n.Admission().Queued(-busy)
	id := rtSendMessage(t, a, 1, "hello again")
	b.Until("the message", func(f wstest.Frame) bool { return f["message"] == "hello again" })
	if id <= int64(before[0]) {
		t.Fatalf("message id %d not after %d", id, before[0])
	}
}
