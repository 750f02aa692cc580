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

	"inbox/admission"
	"inbox/eventstore"
	"inbox/internal/testnode"
	"inbox/internal/testutil"
	"inbox/internal/wstest"
	"inbox/node"
)

const (
	jwtSecret  = testnode.JWTSecret
	adminToken = testnode.AdminToken
	frameWait  = 15 * time.Second
)

// startNode starts an in-process inboxd (testnode) on natsURL; opts change
// its configuration.
func startNode(t testing.TB, natsURL string, replicas int, id string, opts ...func(*node.Config)) *node.Node {
	t.Helper()
	cfg := testnode.Config(t)
	testnode.Secrets(&cfg)
	cfg.NATSURL, cfg.Replicas, cfg.NodeID, cfg.Logger = natsURL, replicas, id, cfg.Logger.With("node", id)
	// Shedding is not what these tests judge: on a loaded machine under the
	// race detector an append can take longer than the default bounds.
	cfg.Admission = admission.Config{MaxFeedLag: time.Minute, MaxAppendLatency: time.Minute}
	for _, opt := range opts {
		opt(&cfg)
	}
	return testnode.Start(t, cfg)
}

func token(t testing.TB, user string) string {
	t.Helper()
	return testnode.Token(t, user, "")
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

// result is the server's answer to a send: an ACK (Seq set) or an ERROR (Code set).
type result struct {
	Seq  uint64
	Code string
}

// client is the tests' WebSocket client (internal/wstest) keeping message
// frames aside, seen through frame.
type client struct {
	*wstest.Client
	t    testing.TB
	name string
	done <-chan struct{}

	mu   sync.Mutex
	msgs []frame // the message frames seen so far, each decoded once
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
	name := user + "@" + addr
	wc, _, err := wstest.TryDial(t, u, wstest.Options{Name: name, Wait: frameWait, KeepMessages: true})
	if err != nil {
		return nil, err
	}
	return &client{Client: wc, t: t, name: name, done: wc.Done()}, nil
}

// asFrame is f as the tests read it.
func asFrame(f wstest.Frame) frame {
	b, _ := json.Marshal(f)
	var out frame
	json.Unmarshal(b, &out)
	out.raw = b
	return out
}

// framesOf is ms, the message frames kept so far (which only grow), as
// frames: each is decoded once, however often a wait looks at them. The
// slice is shared: read it, do not change it.
func (c *client) framesOf(ms []wstest.Frame) []frame {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range ms[len(c.msgs):] {
		c.msgs = append(c.msgs, asFrame(f))
	}
	return c.msgs[:len(ms):len(ms)]
}

// send sends a message with client_msg_id cmid and waits for its ACK or
// ERROR; ok is false when neither came within wait (or the socket failed).
func (c *client) send(conv int64, cmid, text string, wait time.Duration) (result, bool) {
	f, ok := c.Request(cmid, map[string]any{"conversation_id": conv, "message": text, "type": "TEXT", "client_msg_id": cmid}, wait)
	if !ok {
		return result{}, false
	}
	return result{Seq: uint64(f.Int("seq")), Code: f.Str("code")}, true
}

// mustAck sends and fails the test unless the message is acknowledged.
func (c *client) mustAck(conv int64, cmid, text string) uint64 {
	c.t.Helper()
	r, ok := c.send(conv, cmid, text, frameWait)
	if !ok || r.Seq == 0 {
		c.t.Fatalf("%s: send %s: no ACK (answer %+v, answered %v, socket err %v)", c.name, cmid, r, ok, c.Err())
	}
	return r.Seq
}

// next returns the next frame of type typ, skipping others.
func (c *client) next(typ string) frame { return asFrame(c.UntilType(typ)) }

// ping waits for a PONG: the socket is open and registered.
func (c *client) ping() { c.Flush() }

// messages is a copy of the message frames received so far.
func (c *client) messages() []frame { return c.framesOf(c.Messages()) }

// waitMessages waits until f holds for the messages received so far.
func (c *client) waitMessages(total time.Duration, f func([]frame) error) []frame {
	return c.framesOf(c.WaitMessages(total, func(ms []wstest.Frame) error { return f(c.framesOf(ms)) }))
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
		testutil.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
			for _, m := range members {
				if !o.Service().Directory().IsMember(id, m.UserID) {
					return fmt.Errorf("%s not yet a member of %d on the other node", m.UserID, id)
				}
			}
			return nil
		})
	}
}
