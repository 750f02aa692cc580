package node_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"inbox/eventstore"
	"inbox/internal/testutil"
	"inbox/internal/wstest"
	"inbox/node"
	"inbox/projections"
	"inbox/retention"
)

// rtDo sends an HTTP request to n with a bearer token (a user's, or the
// admin token when user is "") and an optional JSON body and header pairs;
// it returns the status and the decoded body.
func rtJSON(t testing.TB, n *node.Node, user, method, path string, body any, header ...string) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "http://"+n.HTTPAddr()+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	tok := rtAdmin
	if user != "" {
		tok = rtToken(t, user)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if len(b) > 0 {
		d := json.NewDecoder(bytes.NewReader(b))
		d.UseNumber()
		if err := d.Decode(&out); err != nil {
			t.Fatalf("%s %s: %d %q: %v", method, path, resp.StatusCode, b, err)
		}
	}
	return resp.StatusCode, out
}

// rtHistory is conversation conv's history as user reads it, by id.
func rtHistory(t testing.TB, n *node.Node, user string, conv int64) map[int64]map[string]any {
	t.Helper()
	st, out := rtJSON(t, n, user, "GET", fmt.Sprintf("/api/conversations/%d/messages", conv), nil)
	if st != http.StatusOK {
		t.Fatalf("history of %d as %s: status %d", conv, user, st)
	}
	h := map[int64]map[string]any{}
	msgs, _ := out["messages"].([]any)
	for _, m := range msgs {
		m := m.(map[string]any)
		h[testutil.Int(t, m, "id")] = m
	}
	return h
}

// errorFor waits for the ERROR answering client_msg_id key and returns its code.
func errorFor(t testing.TB, c *wstest.Client, key string) string {
	t.Helper()
	f := c.Until("ERROR of "+key, func(f wstest.Frame) bool { return rtType(f) == "ERROR" && f["client_msg_id"] == key })
	return f["code"].(string)
}

// ackFor waits for the ACK of key (failing on its ERROR) and returns it.
func ackFor(t testing.TB, c *wstest.Client, key string) wstest.Frame {
	t.Helper()
	return c.Until("ACK of "+key, func(f wstest.Frame) bool {
		if rtType(f) == "ERROR" && f["client_msg_id"] == key {
			t.Fatalf("%s: %s refused: %v", c.Name(), key, f)
		}
		return rtType(f) == "ACK" && f["client_msg_id"] == key
	})
}

// TestLifecycleBetweenTwoUsers: edit, delete and react between two users,
// over the socket and the HTTP API, with the refusals for another member,
// a stranger and a deleted message, retried keys stored once, unread
// counts and the conversation list following a deletion, and a resume
// across an edit and a deletion.
func TestLifecycleBetweenTwoUsers(t *testing.T) {
	n := rtStart(t, rtNATS(t), "n1", nil)
	rtCreate(t, 1, []string{"alice", "bob"}, n)
	rtCreate(t, 2, []string{"carol"}, n)
	a, b, c := rtDial(t, n, "alice"), rtDial(t, n, "bob"), rtDial(t, n, "carol")
	m := rtSendMessage(t, a, 1, "helo")
	b.Until("alice's message", func(f wstest.Frame) bool { return rtType(f) == "MESSAGE" && testutil.Int(t, f, "id") == m })
	since := uint64(m) // bob has everything up to here

	// The sender edits over the socket: an ACK naming the message and the
	// edit's seq; MESSAGE_EDITED to both.
	edit := map[string]any{"type": "EDIT", "conversation_id": 1, "message_id": m, "message": "hello", "client_msg_id": "e-1"}
	a.Send(edit)
	var ack, edited map[string]any // in either order: the feed and the append's answer race
	for ack == nil || edited == nil {
		switch f := a.Next(); rtType(f) {
		case "ACK":
			ack = f
		case "MESSAGE_EDITED":
			edited = f
		case "ERROR":
			t.Fatalf("edit refused: %v", f)
		}
	}
	seq := testutil.Int(t, ack, "seq")
	if ack["client_msg_id"] != "e-1" || testutil.Int(t, ack, "message_id") != m || seq <= m {
		t.Fatalf("ACK of the edit %v: want message_id %d and the edit's seq", ack, m)
	}
	for _, cl := range []*wstest.Client{a, b} {
		f := edited
		if cl == b {
			f = cl.UntilType("MESSAGE_EDITED")
		}
		if testutil.Int(t, f, "message_id") != m || f["message"] != "hello" || testutil.Int(t, f, "seq") != seq {
			t.Errorf("%s: MESSAGE_EDITED %v", cl.Name(), f)
		}
		if _, err := time.Parse(time.RFC3339, f["edited_at"].(string)); err != nil {
			t.Errorf("%s: edited_at: %v", cl.Name(), err)
		}
	}
	a.Send(edit) // a retry: the same ACK, nothing stored
	if again := ackFor(t, a, "e-1"); testutil.Int(t, again, "seq") != seq {
		t.Errorf("retried edit acknowledged with %v, want seq %d", again, seq)
	}
	rtNoneOf(t, b, b.Flush(), "MESSAGE_EDITED", nil)

	// bob reacts; both see it.
	b.Send(map[string]any{"type": "REACT", "conversation_id": 1, "message_id": m, "emoji": "👍", "on": true})
	for _, cl := range []*wstest.Client{a, b} {
		if f := cl.UntilType("REACTION"); f["user_id"] != "bob" || f["emoji"] != "👍" || f["on"] != true {
			t.Errorf("%s: REACTION %v", cl.Name(), f)
		}
	}

	// Refusals over the socket, each an ERROR with its code.
	for _, tc := range []struct {
		who   *wstest.Client
		frame map[string]any
		code  string
	}{
		{b, map[string]any{"type": "EDIT", "conversation_id": 1, "message_id": m, "message": "bob's words", "client_msg_id": "x-1"}, "forbidden"},
		{b, map[string]any{"type": "DELETE", "conversation_id": 1, "message_id": m, "client_msg_id": "x-2"}, "forbidden"},
		{c, map[string]any{"type": "EDIT", "conversation_id": 1, "message_id": m, "message": "carol's", "client_msg_id": "x-3"}, "forbidden"},
		{c, map[string]any{"type": "REACT", "conversation_id": 1, "message_id": m, "emoji": "👍", "on": true, "client_msg_id": "x-4"}, "forbidden"},
		{b, map[string]any{"type": "REACT", "conversation_id": 1, "message_id": m, "emoji": "nice", "on": true, "client_msg_id": "x-5"}, "bad_request"},
		{a, map[string]any{"type": "EDIT", "conversation_id": 1, "message_id": m, "client_msg_id": "x-6"}, "bad_request"},
		{a, map[string]any{"type": "DELETE", "conversation_id": 1, "message_id": 1 << 40, "client_msg_id": "x-7"}, "not_found"},
	} {
		tc.who.Send(tc.frame)
		key := tc.frame["client_msg_id"].(string)
		if got := errorFor(t, tc.who, key); got != tc.code {
			t.Errorf("%s %v: ERROR %s, want %s", tc.who.Name(), tc.frame, got, tc.code)
		}
	}

	// The same over HTTP.
	esc := url.PathEscape("🎉")
	path := fmt.Sprintf("/api/conversations/1/messages/%d", m)
	if st, body := rtJSON(t, n, "alice", "PATCH", path, map[string]string{"message": "hello world"}, "Idempotency-Key", "e-2"); st != http.StatusOK ||
		body["message"] != "hello world" || body["edited_at"] == nil {
		t.Errorf("PATCH as the sender: %d %v", st, body)
	}
	if st, _ := rtJSON(t, n, "bob", "PATCH", path, map[string]string{"message": "bob's"}); st != http.StatusForbidden {
		t.Errorf("PATCH as another member: %d, want 403", st)
	}
	if st, _ := rtJSON(t, n, "carol", "PUT", path+"/reactions/"+esc, nil); st != http.StatusForbidden {
		t.Errorf("PUT a reaction as a stranger: %d, want 403", st)
	}
	if st, body := rtJSON(t, n, "bob", "PUT", path+"/reactions/"+esc, nil); st != http.StatusOK || fmt.Sprint(body["reactions"]) != "map[🎉:[bob] 👍:[bob]]" {
		t.Errorf("PUT a reaction: %d %v", st, body["reactions"])
	}
	if st, body := rtJSON(t, n, "bob", "DELETE", path+"/reactions/"+esc, nil); st != http.StatusOK || fmt.Sprint(body["reactions"]) != "map[👍:[bob]]" {
		t.Errorf("DELETE a reaction: %d %v", st, body["reactions"])
	}
	if st, _ := rtJSON(t, n, "bob", "PUT", path+"/reactions/"+url.PathEscape("x"), nil); st != http.StatusBadRequest {
		t.Errorf("PUT a reaction that is no emoji: %d, want 400", st)
	}

	// A deletion: bob's unread count drops (UNREAD after MESSAGE_DELETED),
	// the list's last message goes back to the one before.
	m2 := rtSendMessage(t, a, 1, "oops, wrong chat")
	b.Until("UNREAD 2", func(f wstest.Frame) bool { return rtType(f) == "UNREAD" && testutil.Int(t, f, "unread") == 2 })
	a.Send(map[string]any{"type": "DELETE", "conversation_id": 1, "message_id": m2, "client_msg_id": "d-1"})
	ackFor(t, a, "d-1")
	deleted := b.Until("MESSAGE_DELETED", func(f wstest.Frame) bool {
		if rtType(f) == "UNREAD" && testutil.Int(t, f, "unread") == 1 {
			t.Errorf("bob: UNREAD 1 before the MESSAGE_DELETED that made it")
		}
		return rtType(f) == "MESSAGE_DELETED"
	})
	if testutil.Int(t, deleted, "message_id") != m2 {
		t.Errorf("MESSAGE_DELETED %v, want message %d", deleted, m2)
	}
	b.Until("UNREAD 1", func(f wstest.Frame) bool { return rtType(f) == "UNREAD" && testutil.Int(t, f, "unread") == 1 })
	var list struct {
		Conversations []rtConversation `json:"conversations"`
	}
	rtGet(t, n, "bob", "/api/conversations", &list)
	if len(list.Conversations) != 1 || list.Conversations[0].Unread != 1 || list.Conversations[0].LastMessage.ID != m {
		t.Errorf("bob's list after the deletion: %+v, want unread 1, last message %d", list.Conversations, m)
	}
	a.Send(map[string]any{"type": "EDIT", "conversation_id": 1, "message_id": m2, "message": "x", "client_msg_id": "x-8"})
	if got := errorFor(t, a, "x-8"); got != "not_found" {
		t.Errorf("an edit of the deleted message: %s, want not_found", got)
	}
	if st, _ := rtJSON(t, n, "bob", "PUT", fmt.Sprintf("/api/conversations/1/messages/%d/reactions/%s", m2, esc), nil); st != http.StatusNotFound {
		t.Errorf("a reaction to the deleted message: %d, want 404", st)
	}
	h := rtHistory(t, n, "bob", 1)
	if h[m]["message"] != "hello world" || h[m]["edited_at"] == nil || h[m2]["deleted"] != true || h[m2]["message"] != "" {
		t.Errorf("history: %v / %v", h[m], h[m2])
	}

	// The service API edits and deletes anyone's message, at any time.
	if st, body := rtJSON(t, n, "", "PATCH", "/api/admin"+strings.TrimPrefix(path, "/api"), map[string]string{"message": "[moderated]"}); st != http.StatusOK ||
		body["message"] != "[moderated]" {
		t.Errorf("admin PATCH: %d %v", st, body)
	}

	// bob resumes from before the edit: the edits, the reactions and the
	// deletion come again, in stream order, then SYNCED.
	b.Close()
	b2 := rtDialURL(t, n, "bob", fmt.Sprintf("/ws/inbox/?since=%d", since))
	var kinds []string
	for {
		f := b2.Next()
		typ := rtType(f)
		if typ == "SYNCED" {
			break
		}
		if typ != "MESSAGE" && typ != "UNREAD" && typ != "PRESENCE" {
			kinds = append(kinds, typ)
		}
	}
	// The socket's edit, bob's 👍, the HTTP edit, 🎉 on and off, the
	// deletion, the service's edit.
	want := "[MESSAGE_EDITED REACTION MESSAGE_EDITED REACTION REACTION MESSAGE_DELETED MESSAGE_EDITED]"
	if fmt.Sprint(kinds) != want {
		t.Errorf("resumed frames %v, want %s", kinds, want)
	}
}

// TestEditWindowFromOutside: past --edit-window the sender is refused
// (forbidden), over the socket and HTTP; the service API is not.
func TestEditWindowFromOutside(t *testing.T) {
	n := rtStart(t, rtNATS(t), "n1", func(c *node.Config) { c.Limits.EditWindow = time.Second })
	rtCreate(t, 1, []string{"alice", "bob"}, n)
	a := rtDial(t, n, "alice")
	m := rtSendMessage(t, a, 1, "soon frozen")
	path := fmt.Sprintf("/api/conversations/1/messages/%d", m)
	i := 0
	testutil.CheckFor(t, 10*time.Second, 100*time.Millisecond, func() error {
		i++
		key := fmt.Sprint("late-", i)
		a.Send(map[string]any{"type": "EDIT", "conversation_id": 1, "message_id": m, "message": fmt.Sprint("try ", i), "client_msg_id": key})
		f := a.Until("answer", func(f wstest.Frame) bool { return f["client_msg_id"] == key })
		if rtType(f) != "ERROR" {
			return fmt.Errorf("still accepted: %v", f)
		}
		if f["code"] != "forbidden" {
			t.Fatalf("refused with %v, want forbidden", f)
		}
		return nil
	})
	if st, _ := rtJSON(t, n, "alice", "DELETE", path, nil); st != http.StatusForbidden {
		t.Errorf("DELETE after the window: %d, want 403", st)
	}
	if st, _ := rtJSON(t, n, "", "DELETE", "/api/admin/conversations/1/messages/"+fmt.Sprint(m), nil); st != http.StatusOK {
		t.Errorf("admin DELETE after the window: %d, want 200", st)
	}
}

// requireReplayAgrees rebuilds n's read model from the stream (inbox
// replay) and verifies it against the live one (inbox verify): no
// difference either way.
func requireReplayAgrees(t testing.TB, n *node.Node) {
	t.Helper()
	ctx := context.Background()
	if err := n.Projector().WaitFor(ctx, mustLastSeq(t, n)); err != nil {
		t.Fatal(err)
	}
	diffs, err := projections.Verify(ctx, n.Store(), n.DB(), filepath.Join(t.TempDir(), "verify.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range diffs {
		t.Errorf("verify: %s", d)
	}
	path := filepath.Join(t.TempDir(), "replay.db")
	if _, err := projections.Rebuild(ctx, n.Store(), path, nil); err != nil {
		t.Fatal(err)
	}
	rebuilt, err := projections.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer rebuilt.Close()
	diffs, err = projections.Diff(ctx, n.DB(), rebuilt)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range diffs {
		t.Errorf("replay: %s", d)
	}
}

func mustLastSeq(t testing.TB, n *node.Node) uint64 {
	t.Helper()
	last, err := n.Store().Last(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return last[0]
}

// TestEraseForgets: erasing a message, then its sender, removes every text
// they wrote (edits too) and the sender's profile name from the stream
// (stream get finds nothing; no file of the NATS store holds the text), from
// history and from the SQLite files; the other user's messages stay; a
// replay and a verify agree with the live read model.
func TestEraseForgets(t *testing.T) {
	s := rtNATS(t)
	n := rtStart(t, s, "n1", nil)
	rtCreate(t, 1, []string{"alice", "bob"}, n)
	ctx := context.Background()
	if _, err := n.Service().SetProfile(ctx, "alice", "Alice Secret-Surname", nil); err != nil {
		t.Fatal(err)
	}
	a, b := rtDial(t, n, "alice"), rtDial(t, n, "bob")
	const secret, secretEdit, other = "my password is hunter2-zebra", "my password is hunter2-zebra-unicorn", "lunch at noon-quokka"
	send := map[string]any{"conversation_id": 1, "message": secret, "client_msg_id": "s-1"}
	a.Send(send)
	m := testutil.Int(t, ackFor(t, a, "s-1"), "message_id")
	a.Send(map[string]any{"type": "EDIT", "conversation_id": 1, "message_id": m, "message": secretEdit, "client_msg_id": "e-1"})
	edit := uint64(testutil.Int(t, ackFor(t, a, "e-1"), "seq"))
	b.Send(map[string]any{"type": "REACT", "conversation_id": 1, "message_id": m, "emoji": "😱", "on": true})
	m2 := rtSendMessage(t, a, 1, other)
	reply := rtSendMessage(t, b, 1, "bob's own words-wombat")
	if err := n.Projector().WaitFor(ctx, uint64(reply)); err != nil {
		t.Fatal(err)
	}
	natsDir, dataDir := s.JetStreamConfig().StoreDir, n.Config().DataDir
	for _, dir := range []string{natsDir, dataDir} {
		if len(testutil.FilesHolding(t, dir, secret, secretEdit)) == 0 {
			t.Fatalf("no file under %s holds the text before the erasure: the checks below would prove nothing", dir)
		}
	}

	// One message.
	st, rep := rtJSON(t, n, "", "POST", fmt.Sprintf("/api/admin/conversations/1/messages/%d/erase", m), nil)
	if st != http.StatusOK || fmt.Sprint(rep["messages"]) != fmt.Sprintf("[map[conversation_id:1 events:[%d %d] message_id:%d]]", m, edit, m) ||
		fmt.Sprint(rep["stream_events_deleted"]) != "2" {
		t.Fatalf("erase message %d: %d %v", m, st, rep)
	}
	if f := b.UntilType("MESSAGE_DELETED"); testutil.Int(t, f, "message_id") != m {
		t.Errorf("bob: %v, want MESSAGE_DELETED of %d", f, m)
	}
	for _, seq := range []uint64{uint64(m), edit} {
		if _, err := n.Store().Get(ctx, seq); err == nil {
			t.Errorf("stream get %d: still there", seq)
		}
	}
	if hits := testutil.FilesHolding(t, natsDir, secret, secretEdit); len(hits) > 0 {
		t.Errorf("NATS store after the erasure: %v", hits)
	}
	if hits := testutil.FilesHolding(t, dataDir, secret, secretEdit); len(hits) > 0 {
		t.Errorf("data folder after the erasure: %v", hits)
	}
	h := rtHistory(t, n, "bob", 1)
	if h[m]["message"] != "" || h[m]["deleted"] != true || h[m]["sender_name"] != "" || fmt.Sprint(h[m]["reactions"]) != "map[]" {
		t.Errorf("the erased message in history: %v", h[m])
	}
	if h[m2]["message"] != other {
		t.Errorf("alice's other message: %v", h[m2])
	}
	// A retry of the erased send (its key is still in the stream's duplicate
	// window) is refused, never answered with the erased message nor stored.
	a.Send(send)
	if got := errorFor(t, a, "s-1"); got != "conflict" {
		t.Errorf("the erased message's send again: %s, want conflict", got)
	}
	if hits := testutil.FilesHolding(t, natsDir, secret); len(hits) > 0 {
		t.Errorf("NATS store after the retry: %v", hits)
	}
	// Again: nothing new to erase.
	if st, rep := rtJSON(t, n, "", "POST", fmt.Sprintf("/api/admin/conversations/1/messages/%d/erase", m), nil); st != http.StatusOK ||
		len(rep["messages"].([]any)) != 0 || fmt.Sprint(rep["stream_events_deleted"]) != "0" {
		t.Errorf("erase it again: %d %v", st, rep)
	}
	requireReplayAgrees(t, n)

	// The sender.
	st, rep = rtJSON(t, n, "", "POST", "/api/admin/users/alice/erase", nil)
	if st != http.StatusOK || len(rep["messages"].([]any)) != 1 || len(rep["profile_events"].([]any)) != 1 {
		t.Fatalf("erase alice: %d %v", st, rep)
	}
	for _, dir := range []string{natsDir, dataDir} {
		if hits := testutil.FilesHolding(t, dir, secret, secretEdit, other, "Secret-Surname"); len(hits) > 0 {
			t.Errorf("after erasing alice: %v", hits)
		}
	}
	if len(testutil.FilesHolding(t, natsDir, "bob's own words-wombat")) == 0 {
		t.Error("bob's message is gone from the stream too")
	}
	if h := rtHistory(t, n, "bob", 1); h[reply]["message"] != "bob's own words-wombat" || h[m2]["message"] != "" {
		t.Errorf("history after erasing alice: %v", h)
	}
	requireReplayAgrees(t, n)
}

// TestErasedSequenceNotInNatsStreamGet: the nats CLI's stream get of an
// erased sequence shows no content.
func TestErasedSequenceNotInNatsStreamGet(t *testing.T) {
	natsBin := testutil.RequireTool(t, "the test reads an erased sequence with the nats CLI (go install github.com/nats-io/natscli/nats@v0.5.0)", "nats")
	s := rtNATS(t)
	n := rtStart(t, s, "n1", nil)
	rtCreate(t, 1, []string{"alice", "bob"}, n)
	const secret = "the launch code is 0000-platypus"
	a := rtDial(t, n, "alice")
	m := rtSendMessage(t, a, 1, secret)
	get := func() string {
		out, _ := exec.Command(natsBin, "--server", s.ClientURL(), "stream", "get", eventstore.StreamName, fmt.Sprint(m)).CombinedOutput()
		return string(out)
	}
	if out := get(); !strings.Contains(out, secret) {
		t.Fatalf("nats stream get %d before the erasure shows no text: the check below would prove nothing:\n%s", m, out)
	}
	if st, rep := rtJSON(t, n, "", "POST", fmt.Sprintf("/api/admin/conversations/1/messages/%d/erase", m), nil); st != http.StatusOK {
		t.Fatalf("erase: %d %v", st, rep)
	}
	if out := get(); strings.Contains(out, secret) || strings.Contains(out, "platypus") {
		t.Fatalf("nats stream get %d after the erasure:\n%s", m, out)
	}
}

// TestRetentionRebuildAgrees: messages older than the maximum age leave the
// stream and history, with their edits and reactions, unread counts follow,
// and a replay agrees; a node started with --message-max-age does it by
// itself.
func TestRetentionRebuildAgrees(t *testing.T) {
	s := rtNATS(t)
	n := rtStart(t, s, "n1", nil)
	rtCreate(t, 1, []string{"alice", "bob"}, n)
	a, b := rtDial(t, n, "alice"), rtDial(t, n, "bob")
	ctx := context.Background()
	old := rtSendMessage(t, a, 1, "an old message-ocelot")
	a.Send(map[string]any{"type": "EDIT", "conversation_id": 1, "message_id": old, "message": "an old edit-axolotl", "client_msg_id": "e-1"})
	ackFor(t, a, "e-1")
	b.Send(map[string]any{"type": "REACT", "conversation_id": 1, "message_id": old, "emoji": "👍", "on": true, "client_msg_id": "r-1"})
	ackFor(t, b, "r-1")
	cutoff := time.Now()
	fresh := rtSendMessage(t, a, 1, "a fresh message")
	b.Until("UNREAD 2", func(f wstest.Frame) bool { return rtType(f) == "UNREAD" && testutil.Int(t, f, "unread") == 2 })
	const maxAge = time.Hour
	r := retention.New(retention.Config{MaxAge: maxAge, Now: func() time.Time { return cutoff.Add(maxAge) }}, n.Store())
	before, err := r.Expire(ctx)
	if err != nil || len(before) != 1 || before[0] != uint64(fresh) {
		t.Fatalf("Expire = %d, %v; want everything below %d", before, err, fresh)
	}
	b.Until("UNREAD 1", func(f wstest.Frame) bool { return rtType(f) == "UNREAD" && testutil.Int(t, f, "unread") == 1 })
	if h := rtHistory(t, n, "bob", 1); len(h) != 1 || h[fresh] == nil {
		t.Errorf("history after the expiry: %v", h)
	}
	for _, seq := range []int64{old, fresh - 2, fresh - 1} { // the message, its edit, the reaction
		if _, err := n.Store().Get(ctx, uint64(seq)); err == nil {
			t.Errorf("stream get %d: still there after the expiry", seq)
		}
	}
	if again, err := r.Expire(ctx); err != nil || len(again) != 0 {
		t.Errorf("a second round: %d, %v; want nothing to do", again, err)
	}
	requireReplayAgrees(t, n)

	// The flag: a node expires by itself.
	n2 := rtStart(t, rtNATS(t), "n2", func(c *node.Config) { c.MessageMaxAge = 2 * time.Second })
	rtCreate(t, 1, []string{"alice", "bob"}, n2)
	a2 := rtDial(t, n2, "alice")
	gone := rtSendMessage(t, a2, 1, "soon gone")
	testutil.CheckFor(t, 15*time.Second, 100*time.Millisecond, func() error {
		if h := rtHistory(t, n2, "bob", 1); h[gone] != nil {
			return fmt.Errorf("message %d still in history", gone)
		}
		return nil
	})
	requireReplayAgrees(t, n2)
}
