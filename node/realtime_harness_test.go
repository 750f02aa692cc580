package node

// Harness of the real-time tests (typing, receipts, unread, presence): real
// inboxd nodes (node.Start) on a real nats-server, real sockets
// (coder/websocket) and real HTTP. Names start with rt so they stay clear of
// other tests in this package.

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"
	_ "github.com/mattn/go-sqlite3"
	"github.com/nats-io/nats-server/v2/server"
	dto "github.com/prometheus/client_model/go"

	"inbox/auth"
	"inbox/chat"
	"inbox/eventstore"
	"inbox/internal/testnats"
	"inbox/internal/testutil"
	"inbox/wsedge"
)

const (
	rtSecret    = "node-realtime-test-secret-0123456789abcdef"
	rtAdmin     = "node-realtime-test-admin-token"
	rtFrameWait = 10 * time.Second
)

// rtNATS runs a JetStream server for the test.
func rtNATS(t testing.TB) *server.Server { return testnats.Server(t) }

// rtStart starts an inboxd on s with its own data folder, short presence
// heartbeats (250 ms, node TTL 1 s) and no practical socket rate limit; mod
// may change the config first.
func rtStart(t testing.TB, s *server.Server, id string, mod func(*Config)) *Node {
	t.Helper()
	cfg := Config{
		DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", NATSURL: s.ClientURL(), NodeID: id,
		JWTSecret: rtSecret, AdminToken: rtAdmin, Logger: testutil.Logger().With("node", id),
		Edge:              wsedge.Config{RatePerSecond: 100_000, RateBurst: 100_000},
		Limits:            chat.Limits{TypingInterval: time.Second},
		PresenceHeartbeat: 250 * time.Millisecond, PresenceNodeTTL: time.Second,
	}
	if mod != nil {
		mod(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	n, err := Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start node %s: %v", id, err)
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

// rtCreate creates conversation id with members (role member) and waits until
// every node's directory has it.
func rtCreate(t testing.TB, id int64, users []string, nodes ...*Node) {
	t.Helper()
	ms := make([]eventstore.Member, len(users))
	for i, u := range users {
		ms[i] = eventstore.Member{UserID: u, Role: eventstore.RoleMember}
	}
	_, seq, err := nodes[0].Service().CreateConversation(context.Background(), id, ms)
	if err != nil {
		t.Fatalf("create conversation %d: %v", id, err)
	}
	for _, n := range nodes {
		ctx, cancel := context.WithTimeout(context.Background(), rtFrameWait)
		err := n.dir.WaitFor(ctx, seq)
		cancel()
		if err != nil {
			t.Fatalf("node %s did not apply conversation %d: %v", n.cfg.NodeID, id, err)
		}
	}
}

func rtToken(t testing.TB, user string) string {
	t.Helper()
	m, err := auth.NewMinter(auth.MinterConfig{Secret: rtSecret})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := m.Mint(user, "Name of "+user, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// rtCheckFor polls f every 10 ms until it returns nil or total passes.
func rtCheckFor(t testing.TB, total time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v: %v", total, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// rtOpenSockets is the node's inbox_open_sockets gauge.
func rtOpenSockets(n *Node) int {
	var pb dto.Metric
	if err := n.metrics.OpenSockets.Write(&pb); err != nil {
		panic(err)
	}
	return int(pb.GetGauge().GetValue())
}

// rtGet sends an authenticated GET to n as user and decodes a 2xx JSON body
// into out (if not nil); it returns the status.
func rtGet(t testing.TB, n *Node, user, path string, out any) int {
	t.Helper()
	req, err := http.NewRequest("GET", "http://"+n.HTTPAddr()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+rtToken(t, user))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if out != nil && resp.StatusCode/100 == 2 {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("GET %s: decode %s: %v", path, b, err)
		}
	}
	return resp.StatusCode
}

// rtConversation is the part of GET /api/conversations the tests read.
type rtConversation struct {
	ID          int64 `json:"id"`
	Unread      int64 `json:"unread"`
	LastMessage *struct {
		ID int64 `json:"id"`
	} `json:"last_message"`
}

// rtUnread is user's unread count of conv from GET /api/conversations.
func rtUnread(t testing.TB, n *Node, user string, conv int64) int64 {
	t.Helper()
	var out struct {
		Conversations []rtConversation `json:"conversations"`
	}
	if st := rtGet(t, n, user, "/api/conversations", &out); st != http.StatusOK {
		t.Fatalf("GET /api/conversations as %s: status %d", user, st)
	}
	for _, c := range out.Conversations {
		if c.ID == conv {
			return c.Unread
		}
	}
	t.Fatalf("conversation %d not listed for %s", conv, user)
	return 0
}

// rtWatermark reads member's read watermark straight from the node's SQLite
// read model (read-only; the projector keeps writing).
func rtWatermark(t testing.TB, n *Node, conv int64, user string) int64 {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+n.db.Path()+"?mode=ro&_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var w int64
	if err := db.QueryRow(`SELECT read_up_to FROM members WHERE conversation_id = ? AND user_id = ?`, conv, user).Scan(&w); err != nil {
		t.Fatalf("watermark of %s in %d: %v", user, conv, err)
	}
	return w
}

// rtClient is a real WebSocket client with a reader goroutine queueing every
// frame it receives.
type rtClient struct {
	t      testing.TB
	name   string
	conn   *websocket.Conn
	frames chan map[string]any
	done   chan struct{}
	err    error // set before done closes
}

// rtDial opens /ws/inbox/ on n as user.
func rtDial(t testing.TB, n *Node, user string) *rtClient {
	t.Helper()
	c := rtDialURL(t, n, user, "/ws/inbox/")
	c.ping() // registered, and presence told, once the PONG is back
	return c
}

// rtDialURL opens path (an endpoint, with its query) on n as user and
// returns at once: the first frames are the socket's (a catch-up's).
func rtDialURL(t testing.TB, n *Node, user, path string) *rtClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), rtFrameWait)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, "ws://"+n.HTTPAddr()+path, &websocket.DialOptions{
		HTTPHeader: http.Header{"Authorization": {"Bearer " + rtToken(t, user)}},
	})
	if err != nil {
		t.Fatalf("dial %s as %s: %v", n.cfg.NodeID, user, err)
	}
	conn.SetReadLimit(1 << 20)
	c := &rtClient{t: t, name: user + "@" + n.cfg.NodeID, conn: conn, frames: make(chan map[string]any, 1<<14), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for {
			_, b, err := conn.Read(context.Background())
			if err != nil {
				c.err = err
				return
			}
			d := json.NewDecoder(bytes.NewReader(b))
			d.UseNumber()
			var f map[string]any
			if err := d.Decode(&f); err != nil {
				c.err = fmt.Errorf("frame %q is not a JSON object: %w", b, err)
				return
			}
			c.frames <- f
		}
	}()
	t.Cleanup(func() { conn.CloseNow() })
	return c
}

func (c *rtClient) send(v any) {
	c.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), rtFrameWait)
	defer cancel()
	if err := c.conn.Write(ctx, websocket.MessageText, b); err != nil {
		c.t.Fatalf("%s: write: %v", c.name, err)
	}
}

// close closes the socket normally and waits for the reader to end.
func (c *rtClient) close() {
	c.t.Helper()
	c.conn.Close(websocket.StatusNormalClosure, "bye")
	select {
	case <-c.done:
	case <-time.After(rtFrameWait):
		c.t.Fatalf("%s: still open after close", c.name)
	}
}

func (c *rtClient) next() map[string]any {
	c.t.Helper()
	select {
	case f := <-c.frames:
		return f
	case <-c.done:
		c.t.Fatalf("%s: socket ended waiting for a frame: %v", c.name, c.err)
	case <-time.After(rtFrameWait):
		c.t.Fatalf("%s: no frame within %v", c.name, rtFrameWait)
	}
	return nil
}

// rtType is a frame's control type, or "MESSAGE" for a message frame (the
// seed's shape: id, message_id and message).
func rtType(f map[string]any) string {
	if _, ok := f["id"]; ok && f["message_id"] != nil && f["message"] != nil {
		return "MESSAGE"
	}
	s, _ := f["type"].(string)
	return s
}

// until skips frames until one matches, and returns it.
func (c *rtClient) until(what string, match func(map[string]any) bool) map[string]any {
	c.t.Helper()
	deadline := time.After(rtFrameWait)
	for {
		select {
		case f := <-c.frames:
			if match(f) {
				return f
			}
		case <-c.done:
			c.t.Fatalf("%s: socket ended waiting for %s: %v", c.name, what, c.err)
		case <-deadline:
			c.t.Fatalf("%s: no %s within %v", c.name, what, rtFrameWait)
		}
	}
}

// untilType skips frames until one of type typ.
func (c *rtClient) untilType(typ string) map[string]any {
	c.t.Helper()
	return c.until(typ, func(f map[string]any) bool { return rtType(f) == typ })
}

// ping sends a PING and returns every frame received before its PONG: by
// then the socket has been sent everything queued to it before the PING was
// handled.
func (c *rtClient) ping() []map[string]any {
	c.t.Helper()
	c.send(map[string]any{"type": "PING"})
	var before []map[string]any
	for {
		f := c.next()
		if rtType(f) == "PONG" {
			return before
		}
		before = append(before, f)
	}
}

// noneOf fails if frames holds a frame of type typ for which match (nil: any) holds.
func (c *rtClient) noneOf(frames []map[string]any, typ string, match func(map[string]any) bool) {
	c.t.Helper()
	for _, f := range frames {
		if rtType(f) == typ && (match == nil || match(f)) {
			c.t.Errorf("%s: unexpected %s frame %v", c.name, typ, f)
		}
	}
}

// sendMessage sends text to conv with a client_msg_id and returns the
// message id from the ACK (skipping other frames).
func (c *rtClient) sendMessage(conv int64, text string) int64 {
	c.t.Helper()
	id := fmt.Sprintf("%s-%d", c.name, time.Now().UnixNano())
	c.send(map[string]any{"conversation_id": conv, "message": text, "client_msg_id": id})
	f := c.until("ACK of "+id, func(f map[string]any) bool {
		if rtType(f) == "ERROR" && f["client_msg_id"] == id {
			c.t.Fatalf("%s: send refused: %v", c.name, f)
		}
		return rtType(f) == "ACK" && f["client_msg_id"] == id
	})
	return testutil.Int(c.t, f, "message_id")
}
