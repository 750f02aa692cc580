package node_test

// Harness of the real-time tests (typing, receipts, unread, presence): real
// inboxd nodes (testnode.Start) on a real nats-server, real sockets
// (wstest) and real HTTP. Names start with rt so they stay clear of
// other tests in this package.

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3"
	"github.com/nats-io/nats-server/v2/server"
	dto "github.com/prometheus/client_model/go"

	"inbox/eventstore"
	"inbox/internal/testnats"
	"inbox/internal/testnode"
	"inbox/internal/testutil"
	"inbox/internal/wstest"
	"inbox/node"
)

const (
	rtSecret    = testnode.JWTSecret
	rtAdmin     = testnode.AdminToken
	rtFrameWait = 10 * time.Second
)

// rtNATS runs a JetStream server for the test.
func rtNATS(t testing.TB) *server.Server { return testnats.Server(t) }

// rtStart starts an inboxd (testnode) on s with short presence heartbeats
// (250 ms, node TTL 1 s) and typing repeats (1 s); mod may change the config
// first.
func rtStart(t testing.TB, s *server.Server, id string, mod func(*node.Config)) *node.Node {
	t.Helper()
	cfg := testnode.Config(t)
	testnode.Secrets(&cfg)
	cfg.NATSURL, cfg.NodeID, cfg.Logger = s.ClientURL(), id, cfg.Logger.With("node", id)
	cfg.Limits.TypingInterval = time.Second
	cfg.PresenceHeartbeat, cfg.PresenceNodeTTL = 250*time.Millisecond, time.Second
	if mod != nil {
		mod(&cfg)
	}
	return testnode.Start(t, cfg)
}

// rtCreate creates conversation id with members (role member) and waits until
// every node's directory has it.
func rtCreate(t testing.TB, id int64, users []string, nodes ...*node.Node) {
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
		err := n.Dir().WaitFor(ctx, seq)
		cancel()
		if err != nil {
			t.Fatalf("node %s did not apply conversation %d: %v", n.Config().NodeID, id, err)
		}
	}
}

func rtToken(t testing.TB, user string) string {
	t.Helper()
	return testnode.Token(t, user, "Name of "+user)
}

// rtOpenSockets is the node's inbox_open_sockets gauge.
func rtOpenSockets(n *node.Node) int {
	var pb dto.Metric
	if err := n.Metrics().OpenSockets.Write(&pb); err != nil {
		panic(err)
	}
	return int(pb.GetGauge().GetValue())
}

// rtGet sends an authenticated GET to n as user and decodes a 2xx JSON body
// into out (if not nil); it returns the status.
func rtGet(t testing.TB, n *node.Node, user, path string, out any) int {
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
func rtUnread(t testing.TB, n *node.Node, user string, conv int64) int64 {
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
func rtWatermark(t testing.TB, n *node.Node, conv int64, user string) int64 {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+n.DB().Path()+"?mode=ro&_busy_timeout=5000")
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

// rtDial opens /ws/inbox/ on n as user (the tests' client, internal/wstest)
// and returns once the socket is registered and presence told.
func rtDial(t testing.TB, n *node.Node, user string) *wstest.Client {
	t.Helper()
	c := rtDialURL(t, n, user, "/ws/inbox/")
	c.Flush() // registered, and presence told, once the PONG is back
	return c
}

// rtDialURL opens path (an endpoint, with its query) on n as user and
// returns at once: the first frames are the socket's (a catch-up's).
func rtDialURL(t testing.TB, n *node.Node, user, path string) *wstest.Client {
	t.Helper()
	return wstest.Dial(t, "ws://"+n.HTTPAddr()+path, wstest.Options{
		Token: rtToken(t, user), Name: user + "@" + n.Config().NodeID, Wait: rtFrameWait,
	})
}

// rtType is a frame's control type, or "MESSAGE" for a message frame.
func rtType(f wstest.Frame) string { return f.Type() }

// rtNoneOf fails if frames holds a frame of type typ for which match (nil:
// any) holds.
func rtNoneOf(t testing.TB, c *wstest.Client, frames []wstest.Frame, typ string, match func(wstest.Frame) bool) {
	t.Helper()
	for _, f := range frames {
		if f.Type() == typ && (match == nil || match(f)) {
			t.Errorf("%s: unexpected %s frame %v", c.Name(), typ, f)
		}
	}
}

// rtSendMessage sends text to conv with a client_msg_id and returns the
// message id from the ACK (skipping other frames).
func rtSendMessage(t testing.TB, c *wstest.Client, conv int64, text string) int64 {
	t.Helper()
	id := fmt.Sprintf("%s-%d", c.Name(), time.Now().UnixNano())
	c.Send(map[string]any{"conversation_id": conv, "message": text, "client_msg_id": id})
	f := c.Until("ACK of "+id, func(f wstest.Frame) bool {
		if f.Type() == "ERROR" && f["client_msg_id"] == id {
			t.Fatalf("%s: send refused: %v", c.Name(), f)
		}
		return f.Type() == "ACK" && f["client_msg_id"] == id
	})
	return testutil.Int(t, f, "message_id")
}

// rtResponse is an HTTP answer as the tests read it.
type rtResponse struct {
	status int
	header http.Header
	body   string
}

// rtDo sends method path to n with bearer (if any) and a JSON body (if
// any). A request to a WebSocket route carries the upgrade headers: a plain
// GET there is answered 426 before any token check.
func rtDo(t testing.TB, n *node.Node, method, path, bearer, body string) rtResponse {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://"+n.HTTPAddr()+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if strings.HasPrefix(path, "/ws/") {
		wstest.Handshake(req.Header)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return rtResponse{resp.StatusCode, resp.Header, string(b)}
}
