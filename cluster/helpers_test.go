package cluster_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"inbox/admission"
	"inbox/auth"
	"inbox/eventstore"
	"inbox/internal/testutil"
	"inbox/node"
	"inbox/wsedge"
)

const (
	jwtSecret  = "cluster-test-jwt-secret-0123456789abcdef"
	adminToken = "cluster-test-admin-token-0123456789abcdef"
	frameWait  = 15 * time.Second
)

// startNode starts an in-process inboxd on natsURL with its own data folder;
// opts change its configuration.
func startNode(t testing.TB, natsURL string, replicas int, id string, opts ...func(*node.Config)) *node.Node {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := node.Config{
		DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", NATSURL: natsURL, Replicas: replicas, NodeID: id,
		JWTSecret: jwtSecret, AdminToken: adminToken, Logger: testutil.Logger().With("node", id),
		Edge: wsedge.Config{RatePerSecond: 100_000, RateBurst: 100_000},
		// Shedding is not what these tests judge: on a loaded machine under
		// the race detector an append can take longer than the default bounds.
		Admission: admission.Config{MaxFeedLag: time.Minute, MaxAppendLatency: time.Minute},
	}
	for _, opt := range opts {
		opt(&cfg)
	}
	n, err := node.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start node %s on %s: %v", id, natsURL, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := n.Shutdown(ctx); err != nil {
			t.Logf("shut down node %s: %v", id, err)
		}
	})
	return n
}

// checkFor polls f every 20 ms until it returns nil or total passes.
func checkFor(t testing.TB, total time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	var err error
	for {
		if err = f(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v: %v", total, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func token(t testing.TB, user string) string {
	t.Helper()
	m, err := auth.NewMinter(auth.MinterConfig{Secret: jwtSecret})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := m.Mint(user, "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// frame is what the tests read from server frames.
type frame struct {
	Type           string `json:"type"`
	ID             uint64 `json:"id"`
	Seq            uint64 `json:"seq"`
	Cursor         string `json:"cursor"`
	MessageID      uint64 `json:"message_id"`
	ConversationID int64  `json:"conversation_id"`
	SenderID       string `json:"sender_id"`
	Message        string `json:"message"`
	ClientMsgID    string `json:"client_msg_id"`
	Code           string `json:"code"`
	Error          string `json:"error"`
	raw            []byte
}

func (f frame) isMessage() bool { return f.Message != "" && f.MessageID != 0 }

// result is the server's answer to a send: an ACK (Seq set) or an ERROR (Code set).
type result struct {
	Seq  uint64
	Code string
}

// client is a real WebSocket client (coder/websocket). Its reader routes ACK
// and ERROR frames that carry a client_msg_id to the sender waiting for them,
// records message frames, and queues other frames.
type client struct {
	t    testing.TB
	name string
	conn *websocket.Conn
	done chan struct{}
	err  error // why the reader stopped; read after done

	mu      sync.Mutex
	waiting map[string]chan result
	msgs    []frame
	gotMsg  chan struct{} // closed and replaced on every message
	ctrl    chan frame
}

// dial opens /ws/inbox/ on n as user, with ?since=since when since > 0.
func dial(t testing.TB, addr, user string, since uint64) *client {
	t.Helper()
	c, err := tryDial(t, addr, user, since)
	if err != nil {
		t.Fatalf("dial %s as %s: %v", addr, user, err)
	}
	return c
}

func tryDial(t testing.TB, addr, user string, since uint64) (*client, error) {
	t.Helper()
	var from string
	if since > 0 {
		from = strconv.FormatUint(since, 10)
	}
	return dialFrom(t, addr, user, from)
}

// dialFrom opens /ws/inbox/ on n as user, with ?since=since (a sequence or
// a cursor) unless since is empty.
func dialFrom(t testing.TB, addr, user, since string) (*client, error) {
	t.Helper()
	u := "ws://" + addr + "/ws/inbox/?token=" + url.QueryEscape(token(t, user))
	if since != "" {
		u += "&since=" + url.QueryEscape(since)
	}
	ctx, cancel := context.WithTimeout(context.Background(), frameWait)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, u, nil)
	if err != nil {
		return nil, err
	}
	conn.SetReadLimit(1 << 20)
	c := &client{t: t, name: user + "@" + addr, conn: conn, done: make(chan struct{}),
		waiting: make(map[string]chan result), gotMsg: make(chan struct{}), ctrl: make(chan frame, 1<<16)}
	go c.read()
	t.Cleanup(func() { conn.CloseNow() })
	return c, nil
}

func (c *client) read() {
	defer close(c.done)
	for {
		_, b, err := c.conn.Read(context.Background())
		if err != nil {
			c.err = err
			return
		}
		var f frame
		if err := json.Unmarshal(b, &f); err != nil {
			c.err = fmt.Errorf("frame %q is not JSON: %w", b, err)
			return
		}
		f.raw = b
		c.mu.Lock()
		switch {
		case f.isMessage():
			c.msgs = append(c.msgs, f)
			close(c.gotMsg)
			c.gotMsg = make(chan struct{})
			c.mu.Unlock()
			continue
		case (f.Type == "ACK" || f.Type == "ERROR") && f.ClientMsgID != "":
			if ch, ok := c.waiting[f.ClientMsgID]; ok {
				delete(c.waiting, f.ClientMsgID)
				ch <- result{Seq: f.Seq, Code: f.Code}
				c.mu.Unlock()
				continue
			}
		}
		c.mu.Unlock()
		select {
		case c.ctrl <- f:
		default:
			c.err = fmt.Errorf("control queue full at %q", b)
			return
		}
	}
}

func (c *client) write(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), frameWait)
	defer cancel()
	return c.conn.Write(ctx, websocket.MessageText, b)
}

// send sends a message with client_msg_id cmid and waits for its ACK or
// ERROR; ok is false when neither came within wait (or the socket failed).
func (c *client) send(conv int64, cmid, text string, wait time.Duration) (result, bool) {
	ch := make(chan result, 1)
	c.mu.Lock()
	c.waiting[cmid] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.waiting, cmid)
		c.mu.Unlock()
	}()
	if err := c.write(map[string]any{"conversation_id": conv, "message": text, "type": "TEXT", "client_msg_id": cmid}); err != nil {
		return result{}, false
	}
	select {
	case r := <-ch:
		return r, true
	case <-c.done:
		return result{}, false
	case <-time.After(wait):
		return result{}, false
	}
}

// mustAck sends and fails the test unless the message is acknowledged.
func (c *client) mustAck(conv int64, cmid, text string) uint64 {
	c.t.Helper()
	r, ok := c.send(conv, cmid, text, frameWait)
	if !ok || r.Seq == 0 {
		c.t.Fatalf("%s: send %s: no ACK (answer %+v, answered %v, socket err %v)", c.name, cmid, r, ok, c.err)
	}
	return r.Seq
}

// next returns the next control frame of type typ, skipping others.
func (c *client) next(typ string) frame {
	c.t.Helper()
	deadline := time.After(frameWait)
	for {
		select {
		case f := <-c.ctrl:
			if f.Type == typ {
				return f
			}
		case <-c.done:
			c.t.Fatalf("%s: socket ended waiting for %s: %v", c.name, typ, c.err)
		case <-deadline:
			c.t.Fatalf("%s: no %s frame within %v", c.name, typ, frameWait)
		}
	}
}

// ping waits for a PONG: the socket is open and registered.
func (c *client) ping() {
	c.t.Helper()
	if err := c.write(map[string]any{"type": "PING"}); err != nil {
		c.t.Fatalf("%s: ping: %v", c.name, err)
	}
	c.next("PONG")
}

// messages is a copy of the message frames received so far.
func (c *client) messages() []frame {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]frame(nil), c.msgs...)
}

// waitMessages waits until f holds for the messages received so far.
func (c *client) waitMessages(total time.Duration, f func([]frame) error) []frame {
	c.t.Helper()
	deadline := time.After(total)
	for {
		c.mu.Lock()
		msgs := append([]frame(nil), c.msgs...)
		ch := c.gotMsg
		c.mu.Unlock()
		err := f(msgs)
		if err == nil {
			return msgs
		}
		select {
		case <-ch:
		case <-c.done:
			c.t.Fatalf("%s: socket ended: %v (waiting: %v)", c.name, c.err, err)
		case <-deadline:
			c.t.Fatalf("%s: %v after %v", c.name, err, total)
		}
	}
}

// history reads a conversation's whole history through the HTTP API as user,
// oldest first.
func history(t testing.TB, addr, user string, conv int64) ([]frame, error) {
	t.Helper()
	var all []frame
	before := uint64(0)
	for range 10_000 {
		u := fmt.Sprintf("http://%s/api/conversations/%d/messages?limit=200", addr, conv)
		if before > 0 {
			u += "&before=" + strconv.FormatUint(before, 10)
		}
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		req.Header.Set("Authorization", "Bearer "+token(t, user))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("GET %s: %s: %s", u, resp.Status, body)
		}
		var page struct{ Messages []frame }
		if err := json.NewDecoder(bytes.NewReader(body)).Decode(&page); err != nil {
			return nil, err
		}
		if len(page.Messages) == 0 {
			break
		}
		all = append(all, page.Messages...)
		before = page.Messages[len(page.Messages)-1].ID
	}
	for i, j := 0, len(all)-1; i < j; i, j = i+1, j-1 {
		all[i], all[j] = all[j], all[i]
	}
	return all, nil
}

// streamMessages reads every message event of conv from the stream: client_msg_id -> sequences.
func streamMessages(t testing.TB, st *eventstore.Store, conv int64) map[string][]uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out := make(map[string][]uint64)
	err := st.ReadAll(ctx, []string{eventstore.ConvSubject(conv, eventstore.KindMessage)}, func(s eventstore.Stored) error {
		if m, ok := s.Event.(*eventstore.Message); ok {
			out[m.ClientMsgID] = append(out[m.ClientMsgID], s.Seq)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("read stream: %v", err)
	}
	return out
}

// createConv creates a conversation through n's service API and waits until
// every node in others has it in its directory.
func createConv(t testing.TB, n *node.Node, id int64, members []eventstore.Member, others ...*node.Node) {
	t.Helper()
	if _, _, err := n.Service().CreateConversation(context.Background(), id, members); err != nil {
		t.Fatalf("create conversation %d: %v", id, err)
	}
	for _, o := range others {
		checkFor(t, 10*time.Second, func() error {
			for _, m := range members {
				if !o.Service().Directory().IsMember(id, m.UserID) {
					return fmt.Errorf("%s not yet a member of %d on the other node", m.UserID, id)
				}
			}
			return nil
		})
	}
}
