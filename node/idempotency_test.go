package node_test

// Idempotency keys (client_msg_id, Idempotency-Key) end to end: real nodes,
// sockets, HTTP and stream (issue 15, item 1).

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nuid"

	"inbox/eventstore"
	"inbox/internal/testutil"
	"inbox/internal/wstest"
	"inbox/node"
)

// rtKeyedAnswer sends a message with key and returns the ACK or ERROR that
// answers it, however many other frames come first.
func rtKeyedAnswer(t testing.TB, c *wstest.Client, conv int64, key, text string) wstest.Frame {
	t.Helper()
	f, ok := c.Request(key, map[string]any{"conversation_id": conv, "message": text, "client_msg_id": key}, rtFrameWait)
	if !ok {
		t.Fatalf("%s: no answer to %s within %v (socket: %v)", c.Name(), key, rtFrameWait, c.Err())
	}
	return f
}

// ackOf checks that f is an ACK of key naming conv and returns its message id.
func ackOf(t testing.TB, f map[string]any, key string, conv int64) int64 {
	t.Helper()
	if rtType(f) != "ACK" || f["client_msg_id"] != key {
		t.Fatalf("answer to %s in %d: %v, want an ACK", key, conv, f)
	}
	ref, _ := f["ref"].(map[string]any)
	if ref == nil || testutil.Int(t, ref, "conversation_id") != conv {
		t.Fatalf("ACK of %s names %v, want conversation %d", key, f["ref"], conv)
	}
	return testutil.Int(t, f, "message_id")
}

// keyedPost sends text to conv over HTTP as user with an Idempotency-Key
// and returns the status and the decoded body.
func keyedPost(n *node.Node, token string, conv int64, key, text string) (int, map[string]any, error) {
	body, _ := json.Marshal(map[string]string{"message": text})
	req, err := http.NewRequest("POST", fmt.Sprintf("http://%s/api/conversations/%d/messages", n.HTTPAddr(), conv), bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Idempotency-Key", key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, err
	}
	var out map[string]any
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(&out); err != nil {
		return resp.StatusCode, nil, fmt.Errorf("POST answered %d %q: %w", resp.StatusCode, b, err)
	}
	return resp.StatusCode, out, nil
}

// postStored sends over HTTP and checks the answer is the stored message
// (201, or 202 while the read model catches up) of conv; it returns its id.
func postStored(t testing.TB, n *node.Node, user string, conv int64, key, text string) int64 {
	t.Helper()
	status, body, err := keyedPost(n, rtToken(t, user), conv, key, text)
	if err != nil {
		t.Fatal(err)
	}
	if status != http.StatusCreated && status != http.StatusAccepted {
		t.Fatalf("POST %s to %d: %d %v", key, conv, status, body)
	}
	if got := testutil.Int(t, body, "conversation_id"); got != conv {
		t.Fatalf("POST %s to %d answered with a message of conversation %d: %v", key, conv, got, body)
	}
	return testutil.Int(t, body, "id")
}

// storedMessage is a message event read back from the stream.
type storedMessage struct {
	seq  uint64
	text string
}

// storedByKey reads every message in the stream, by (sender, conversation,
// client_msg_id); messages without a key are left out.
func storedByKey(t testing.TB, st *eventstore.Store) map[eventstore.Key][]storedMessage {
	t.Helper()
	ctx := context.Background()
	out := map[eventstore.Key][]storedMessage{}
	err := st.ReadAll(ctx, []string{eventstore.AllMessages}, func(s eventstore.Stored) error {
		if m, ok := s.Event.(*eventstore.Message); ok && m.ClientMsgID != "" {
			k := eventstore.Key{UserID: m.SenderID, ConversationID: m.ConversationID, ClientKey: m.ClientMsgID}
			out[k] = append(out[k], storedMessage{s.Seq, m.Text})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// duplicateWindowPassed returns once the stream's duplicate window has
// passed for everything appended before the call: a probe appended now
// under a fresh message id is appended again until the stream no longer
// calls it a duplicate.
func duplicateWindowPassed(t testing.TB, st *eventstore.Store) {
	t.Helper()
	id := "probe:" + nuid.Next()
	probe := func() bool {
		var dup bool
		_, err := st.Append(context.Background(), &eventstore.Typing{ConversationID: 999_999, UserID: "probe"},
			eventstore.WithMsgID(id), eventstore.ReportDuplicate(&dup))
		if err != nil {
			t.Fatal(err)
		}
		return dup
	}
	probe()
	testutil.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		if probe() {
			return fmt.Errorf("the stream still deduplicates %s", id)
		}
		return nil
	})
}

// TestClientMsgIDReusedInAnotherConversation: the same client_msg_id sent to
// conversation 1, then to conversation 2, within the stream's duplicate
// window, stores both messages, and each ACK names its own conversation's
// message. (It used to be deduplicated against conversation 1's message:
// conversation 2 never got it, and the ACK said it had.)
func TestClientMsgIDReusedInAnotherConversation(t *testing.T) {
	n := rtStart(t, rtNATS(t), "n1", nil)
	rtCreate(t, 1, []string{"alice", "bob"}, n)
	rtCreate(t, 2, []string{"alice", "carol"}, n)
	alice := rtDial(t, n, "alice")
	carol := rtDial(t, n, "carol")
	m1 := ackOf(t, rtKeyedAnswer(t, alice, 1, "c-1", "to bob"), "c-1", 1)
	m2 := ackOf(t, rtKeyedAnswer(t, alice, 2, "c-1", "to carol"), "c-1", 2)
	if m1 == m2 {
		t.Fatalf("both sends acknowledged with message %d", m1)
	}
	got := carol.Until("alice's message", func(f wstest.Frame) bool { return rtType(f) == "MESSAGE" })
	if testutil.Int(t, got, "id") != m2 || got["message"] != "to carol" {
		t.Fatalf("carol got %v, want message %d", got, m2)
	}
	stored := storedByKey(t, n.Store())
	for conv, want := range map[int64]int64{1: m1, 2: m2} {
		k := eventstore.Key{UserID: "alice", ConversationID: conv, ClientKey: "c-1"}
		if s := stored[k]; len(s) != 1 || int64(s[0].seq) != want {
			t.Errorf("stream holds %v for %+v, want message %d once", s, k, want)
		}
	}
}

// TestIdempotencyKeyReusedInAnotherConversation: the same over HTTP with
// Idempotency-Key (it used to answer with conversation 1's message).
func TestIdempotencyKeyReusedInAnotherConversation(t *testing.T) {
	n := rtStart(t, rtNATS(t), "n1", nil)
	rtCreate(t, 1, []string{"alice", "bob"}, n)
	rtCreate(t, 2, []string{"alice", "carol"}, n)
	m1 := postStored(t, n, "alice", 1, "hello-1", "to bob")
	m2 := postStored(t, n, "alice", 2, "hello-1", "to carol")
	if m1 == m2 {
		t.Fatalf("both POSTs answered with message %d", m1)
	}
	if again := postStored(t, n, "alice", 2, "hello-1", "to carol"); again != m2 {
		t.Fatalf("retry in conversation 2 answered %d, want %d", again, m2)
	}
	var out struct {
		Messages []struct {
			ID   int64  `json:"id"`
			Text string `json:"message"`
		} `json:"messages"`
	}
	if st := rtGet(t, n, "carol", "/api/conversations/2/messages", &out); st != http.StatusOK || len(out.Messages) != 1 ||
		out.Messages[0].ID != m2 || out.Messages[0].Text != "to carol" {
		t.Fatalf("conversation 2's history: %d %+v, want message %d", st, out, m2)
	}
}

// TestKeyReusedWithDifferentRequestIsConflict: a key reused in the same
// conversation with another text or type is refused with conflict, on the
// socket (with its client_msg_id and ref) and over HTTP (409), and nothing
// is stored; it is never acknowledged with the earlier message.
func TestKeyReusedWithDifferentRequestIsConflict(t *testing.T) {
	n := rtStart(t, rtNATS(t), "n1", nil)
	rtCreate(t, 1, []string{"alice", "bob"}, n)
	alice := rtDial(t, n, "alice")
	m1 := ackOf(t, rtKeyedAnswer(t, alice, 1, "c-1", "hello"), "c-1", 1)
	f := rtKeyedAnswer(t, alice, 1, "c-1", "hello, edited")
	if rtType(f) != "ERROR" || f["code"] != "conflict" {
		t.Fatalf("c-1 with another text: %v, want ERROR conflict", f)
	}
	if ref, _ := f["ref"].(map[string]any); ref == nil || testutil.Int(t, ref, "conversation_id") != 1 {
		t.Fatalf("conflict names %v, want conversation 1", f["ref"])
	}
	alice.Send(map[string]any{"conversation_id": 1, "message": "hello", "type": "IMAGE", "client_msg_id": "c-1"})
	if f := alice.UntilType("ERROR"); f["code"] != "conflict" || f["client_msg_id"] != "c-1" {
		t.Fatalf("c-1 with another type: %v, want ERROR conflict", f)
	}
	if again := ackOf(t, rtKeyedAnswer(t, alice, 1, "c-1", "hello"), "c-1", 1); again != m1 {
		t.Fatalf("retry of c-1 acknowledged %d, want %d", again, m1)
	}

	postStored(t, n, "alice", 1, "h-1", "over HTTP")
	status, body, err := keyedPost(n, rtToken(t, "alice"), 1, "h-1", "over HTTP, edited")
	if err != nil {
		t.Fatal(err)
	}
	if status != http.StatusConflict || body["code"] != "conflict" {
		t.Fatalf("h-1 with another text: %d %v, want 409 conflict", status, body)
	}
	// A socket's key and an HTTP key are one key space.
	if status, body, _ := keyedPost(n, rtToken(t, "alice"), 1, "c-1", "hello?"); status != http.StatusConflict {
		t.Fatalf("c-1 over HTTP with another text: %d %v, want 409", status, body)
	}
	for k, s := range storedByKey(t, n.Store()) {
		if len(s) != 1 || (k.ClientKey == "c-1" && s[0].text != "hello") {
			t.Errorf("stream holds %v for %+v, want the first request once", s, k)
		}
	}
}

// TestRetryAfterDuplicateWindowStoredOnce: a retry after the stream's
// duplicate window (1 s here) is answered from the read model with the
// first message, on the socket and over HTTP. It used to store a second copy.
func TestRetryAfterDuplicateWindowStoredOnce(t *testing.T) {
	n := rtStart(t, rtNATS(t), "n1", func(c *node.Config) { c.DuplicateWindow = time.Second })
	rtCreate(t, 1, []string{"alice", "bob"}, n)
	alice := rtDial(t, n, "alice")
	m1 := ackOf(t, rtKeyedAnswer(t, alice, 1, "c-1", "hello"), "c-1", 1)
	h1 := postStored(t, n, "alice", 1, "h-1", "hello over HTTP")
	duplicateWindowPassed(t, n.Store())
	if again := ackOf(t, rtKeyedAnswer(t, alice, 1, "c-1", "hello"), "c-1", 1); again != m1 {
		t.Fatalf("retry of c-1 after the duplicate window acknowledged %d, want %d", again, m1)
	}
	if again := postStored(t, n, "alice", 1, "h-1", "hello over HTTP"); again != h1 {
		t.Fatalf("retry of h-1 after the duplicate window answered %d, want %d", again, h1)
	}
	if f := rtKeyedAnswer(t, alice, 1, "c-1", "hello again"); rtType(f) != "ERROR" || f["code"] != "conflict" {
		t.Fatalf("c-1 with another text after the duplicate window: %v, want ERROR conflict", f)
	}
	stored := storedByKey(t, n.Store())
	if len(stored) != 2 {
		t.Errorf("stream holds %d keyed requests, want 2: %v", len(stored), stored)
	}
	for k, s := range stored {
		if len(s) != 1 {
			t.Errorf("stream holds %v for %+v, want it once", s, k)
		}
	}
}

// TestRetryAfterRestartStoredOnce: the record is the read model on disk, so
// a retry after a restart (and after the duplicate window) is still
// answered with the first message.
func TestRetryAfterRestartStoredOnce(t *testing.T) {
	s := rtNATS(t)
	dir := t.TempDir()
	mod := func(c *node.Config) { c.DataDir, c.DuplicateWindow = dir, time.Second }
	n := rtStart(t, s, "n1", mod)
	rtCreate(t, 1, []string{"alice", "bob"}, n)
	m1 := ackOf(t, rtKeyedAnswer(t, rtDial(t, n, "alice"), 1, "c-1", "hello"), "c-1", 1)
	ctx, cancel := context.WithTimeout(context.Background(), rtFrameWait)
	defer cancel()
	if err := n.Projector().WaitFor(ctx, uint64(m1)); err != nil {
		t.Fatal(err)
	}
	if err := n.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	n = rtStart(t, s, "n1", mod)
	duplicateWindowPassed(t, n.Store())
	if again := ackOf(t, rtKeyedAnswer(t, rtDial(t, n, "alice"), 1, "c-1", "hello"), "c-1", 1); again != m1 {
		t.Fatalf("retry of c-1 after a restart acknowledged %d, want %d", again, m1)
	}
	if again := postStored(t, n, "alice", 1, "c-1", "hello"); again != m1 {
		t.Fatalf("retry of c-1 over HTTP after a restart answered %d, want %d", again, m1)
	}
	if s := storedByKey(t, n.Store()); len(s) != 1 || len(s[eventstore.Key{UserID: "alice", ConversationID: 1, ClientKey: "c-1"}]) != 1 {
		t.Fatalf("stream holds %v, want c-1 once", s)
	}
}

// TestRandomRetriesAndReusesStoredOnce mixes sends, retries, reuses of keys
// in other conversations and by other users, and reuses with another text,
// over sockets and HTTP on two nodes at once, across the stream's duplicate
// window (1 s). Afterwards every (user, conversation, key) is stored exactly
// once; every answer for it named that message in that conversation, or was
// a conflict for a text other than the stored one.
func TestRandomRetriesAndReusesStoredOnce(t *testing.T) {
	s := rtNATS(t)
	mod := func(c *node.Config) { c.DuplicateWindow = time.Second }
	nodes := []*node.Node{rtStart(t, s, "n1", mod), rtStart(t, s, "n2", mod)}
	users := []string{"u1", "u2", "u3"}
	tokens := map[string]string{}
	for _, u := range users {
		tokens[u] = rtToken(t, u)
	}
	convs := []int64{1, 2, 3}
	for _, c := range convs {
		rtCreate(t, c, users, nodes...)
	}
	type answer struct {
		k     eventstore.Key
		text  string
		id    int64 // 0 for a conflict
		where string
	}
	var (
		mu      sync.Mutex
		answers []answer
	)
	record := func(a answer) {
		mu.Lock()
		defer mu.Unlock()
		answers = append(answers, a)
	}
	// Each client sends its requests in turn; clients run at once. A text is
	// the key's usual text, or now and then another one.
	textFor := func(rng *rand.Rand, k eventstore.Key) string {
		if rng.IntN(8) == 0 {
			return fmt.Sprintf("other text %d", rng.IntN(3))
		}
		return fmt.Sprintf("text of %s/%d/%s", k.UserID, k.ConversationID, k.ClientKey)
	}
	pick := func(rng *rand.Rand, user string) eventstore.Key {
		return eventstore.Key{UserID: user, ConversationID: convs[rng.IntN(len(convs))], ClientKey: fmt.Sprint("k", rng.IntN(4))}
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	const perClient = 15
	round := func(r int) {
		var wg sync.WaitGroup
		for ni, n := range nodes {
			for ui, u := range users {
				c := rtDial(t, n, u)
				rng := rand.New(rand.NewPCG(seed, uint64(r*100+ni*10+ui)))
				wg.Go(func() { // a socket
					for range perClient {
						k := pick(rng, u)
						text := textFor(rng, k)
						f, ok := c.Request(k.ClientKey, map[string]any{"conversation_id": k.ConversationID, "message": text, "client_msg_id": k.ClientKey}, rtFrameWait)
						if !ok {
							t.Errorf("%s: no answer to %s within %v", c.Name(), k.ClientKey, rtFrameWait)
							return
						}
						a := answer{k: k, text: text, where: c.Name()}
						ref, _ := f["ref"].(map[string]any)
						if ref == nil || fmt.Sprint(ref["conversation_id"]) != fmt.Sprint(k.ConversationID) {
							t.Errorf("%s: answer %v to %+v names another conversation", c.Name(), f, k)
						}
						switch {
						case rtType(f) == "ACK":
							id, _ := f["message_id"].(json.Number).Int64()
							a.id = id
						case f["code"] != "conflict":
							t.Errorf("%s: %+v %q answered %v", c.Name(), k, text, f)
							continue
						}
						record(a)
					}
				})
				hrng := rand.New(rand.NewPCG(seed, uint64(r*100+ni*10+ui+5000)))
				wg.Go(func() { // HTTP
					for range perClient / 3 {
						k := pick(hrng, u)
						text := textFor(hrng, k)
						status, body, err := keyedPost(n, tokens[u], k.ConversationID, k.ClientKey, text)
						if err != nil {
							t.Error(err)
							return
						}
						a := answer{k: k, text: text, where: "http@" + n.Config().NodeID}
						switch status {
						case http.StatusCreated, http.StatusAccepted:
							if fmt.Sprint(body["conversation_id"]) != fmt.Sprint(k.ConversationID) {
								t.Errorf("POST %+v answered with a message of another conversation: %v", k, body)
							}
							a.id, _ = body["id"].(json.Number).Int64()
						case http.StatusConflict:
						default:
							t.Errorf("POST %+v %q: %d %v", k, text, status, body)
							continue
						}
						record(a)
					}
				})
			}
		}
		wg.Wait()
	}
	for r := range 3 {
		round(r)
		if r < 2 {
			duplicateWindowPassed(t, nodes[0].Store())
		}
	}

	stored := storedByKey(t, nodes[0].Store())
	for k, s := range stored {
		if len(s) != 1 {
			t.Errorf("%+v stored %d times: %v", k, len(s), s)
		}
	}
	acked := 0
	for _, a := range answers {
		s := stored[a.k]
		if len(s) == 0 {
			t.Errorf("%s: %+v answered %d, but nothing is stored under it", a.where, a.k, a.id)
			continue
		}
		switch {
		case a.id != 0 && (a.id != int64(s[0].seq) || a.text != s[0].text):
			t.Errorf("%s: %+v %q acknowledged with %d; stored: %d %q", a.where, a.k, a.text, a.id, s[0].seq, s[0].text)
		case a.id == 0 && a.text == s[0].text:
			t.Errorf("%s: %+v %q refused as a conflict, but it is the stored request", a.where, a.k, a.text)
		case a.id != 0:
			acked++
		}
	}
	if acked < len(stored) || len(stored) < 20 {
		t.Fatalf("%d answers acknowledged %d keyed requests: too few to mean anything", acked, len(stored))
	}
	t.Logf("%d answers, %d keyed requests stored", len(answers), len(stored))
}

// TestAckNeverNamesAnotherConversation: where the ACK (or the HTTP answer)
// is built, the message it names must be in the request's conversation.
// A record that points elsewhere (here: tampered with in SQLite) is answered
// ERROR internal (HTTP 500), never acknowledged with the other message.
func TestAckNeverNamesAnotherConversation(t *testing.T) {
	n := rtStart(t, rtNATS(t), "n1", nil)
	rtCreate(t, 1, []string{"alice", "bob"}, n)
	rtCreate(t, 2, []string{"alice", "bob"}, n)
	alice := rtDial(t, n, "alice")
	m1 := ackOf(t, rtKeyedAnswer(t, alice, 1, "c-1", "in one"), "c-1", 1)
	m2 := ackOf(t, rtKeyedAnswer(t, alice, 2, "c-2", "in two"), "c-2", 2)
	ctx, cancel := context.WithTimeout(context.Background(), rtFrameWait)
	defer cancel()
	if err := n.Projector().WaitFor(ctx, uint64(m2)); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite3", "file:"+n.DB().Path()+"?_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`UPDATE idempotency SET seq = ? WHERE conversation_id = 2 AND key = 'c-2'`, m1); err != nil {
		t.Fatal(err)
	}
	if f := rtKeyedAnswer(t, alice, 2, "c-2", "in two"); rtType(f) != "ERROR" || f["code"] != "internal" {
		t.Fatalf("retry of c-2 against a record naming message %d of conversation 1: %v, want ERROR internal", m1, f)
	}
	status, body, err := keyedPost(n, rtToken(t, "alice"), 2, "c-2", "in two")
	if err != nil {
		t.Fatal(err)
	}
	if status != http.StatusInternalServerError {
		t.Fatalf("POST retry of c-2 against a record naming message %d of conversation 1: %d %v, want 500", m1, status, body)
	}
}
