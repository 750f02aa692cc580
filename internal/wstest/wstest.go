// Package wstest is the WebSocket client of inbox's tests: a real client
// (github.com/coder/websocket) over loopback whose reader goroutine decodes
// every frame the server sends and queues it for the test, in order.
//
// A test reads the queue strictly (Next, Expect, Ping), skipping (Until), or
// out of order (Await, which keeps what it skips for later). A client that
// sends many messages at once routes each ACK or ERROR to the Request waiting
// for its client_msg_id, and may keep message frames aside (KeepMessages)
// instead of queueing them.
package wstest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// DefaultWait is how long a client waits for a frame unless Options.Wait
// says otherwise.
const DefaultWait = 10 * time.Second

// Message is the Type of a message frame (a message frame's "type" is its
// message type: TEXT, IMAGE, FILE, SYSTEM).
const Message = "MESSAGE"

// Frame is one server frame, decoded with json.Number for numbers.
type Frame map[string]any

// Type is the frame's control type ("ACK", "PONG", …), or Message for a
// message frame: the one frame with an id (MESSAGE_EDITED also carries
// message_id and message).
func (f Frame) Type() string {
	if _, ok := f["id"]; ok && f["message_id"] != nil && f["message"] != nil {
		return Message
	}
	s, _ := f["type"].(string)
	return s
}

// Str is the frame's string field key ("" if absent or not a string).
func (f Frame) Str(key string) string {
	s, _ := f[key].(string)
	return s
}

// Int is the frame's integer field key (0 if absent or not an integer).
func (f Frame) Int(key string) int64 {
	n, _ := f[key].(json.Number)
	i, _ := n.Int64()
	return i
}

// Options say how to dial.
type Options struct {
	Header http.Header // sent with the upgrade (Authorization: Bearer …)
	// Token, if set, is sent as Authorization: Bearer Token.
	Token string
	// Name names the client in failures (default: the URL's path).
	Name string
	// Wait is how long the client waits for a frame (default DefaultWait).
	Wait time.Duration
	// KeepMessages keeps message frames aside, for Messages and
	// WaitMessages, instead of queueing them: for a client that receives
	// more messages than a test reads one by one.
	KeepMessages bool
}

// Client is one open socket.
type Client struct {
	t    testing.TB
	name string
	wait time.Duration
	keep bool
	conn *websocket.Conn

	frames  chan Frame
	backlog []Frame // frames Await skipped, oldest first
	bytes   atomic.Int64
	done    chan struct{}
	err     error // why the reader stopped; read after done

	mu      sync.Mutex
	waiting map[string]chan Frame // ACK or ERROR wanted by Request, by client_msg_id
	msgs    []Frame               // KeepMessages
	gotMsg  chan struct{}         // closed and replaced on every kept message
}

// Dial opens a socket at url (ws://…) and fails t if it cannot.
func Dial(t testing.TB, url string, o Options) *Client {
	t.Helper()
	c, resp, err := TryDial(t, url, o)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s: %v (HTTP %d)", url, err, status)
	}
	return c
}

// TryDial opens a socket at url, or returns why not and the server's HTTP
// answer to a refused upgrade. The socket is closed when the test ends.
func TryDial(t testing.TB, rawURL string, o Options) (*Client, *http.Response, error) {
	t.Helper()
	if o.Wait <= 0 {
		o.Wait = DefaultWait
	}
	if o.Name == "" {
		if u, err := url.Parse(rawURL); err == nil {
			o.Name = u.Path
		}
	}
	h := o.Header.Clone()
	if o.Token != "" {
		if h == nil {
			h = http.Header{}
		}
		h.Set("Authorization", "Bearer "+o.Token)
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.Wait)
	defer cancel()
	conn, resp, err := websocket.Dial(ctx, rawURL, &websocket.DialOptions{HTTPHeader: h})
	if err != nil {
		return nil, resp, err
	}
	conn.SetReadLimit(1 << 20)
	c := &Client{
		t: t, name: o.Name, wait: o.Wait, keep: o.KeepMessages, conn: conn,
		frames: make(chan Frame, 1<<16), done: make(chan struct{}),
		waiting: make(map[string]chan Frame), gotMsg: make(chan struct{}),
	}
	go c.read()
	t.Cleanup(func() { conn.CloseNow() })
	return c, resp, nil
}

func (c *Client) read() {
	defer close(c.done)
	for {
		_, b, err := c.conn.Read(context.Background())
		if err != nil {
			c.err = err
			return
		}
		c.bytes.Add(int64(len(b)))
		d := json.NewDecoder(bytes.NewReader(b))
		d.UseNumber()
		var f Frame
		if err := d.Decode(&f); err != nil {
			c.err = fmt.Errorf("the server sent a frame that is not a JSON object: %q: %w", b, err)
			return
		}
		if c.route(f) {
			continue
		}
		select {
		case c.frames <- f:
		default:
			c.err = fmt.Errorf("%d frames queued and not read: %q dropped", cap(c.frames), b)
			return
		}
	}
}

// route hands f to a Request waiting for it, or keeps a message frame
// aside; it reports whether it did either.
func (c *Client) route(f Frame) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch typ := f.Type(); {
	case typ == Message && c.keep:
		c.msgs = append(c.msgs, f)
		close(c.gotMsg)
		c.gotMsg = make(chan struct{})
		return true
	case typ == "ACK" || typ == "ERROR":
		if ch, ok := c.waiting[f.Str("client_msg_id")]; ok {
			delete(c.waiting, f.Str("client_msg_id"))
			ch <- f
			return true
		}
	}
	return false
}

// Name names the client in failures.
func (c *Client) Name() string { return c.name }

// Bytes is how many payload bytes the client has received.
func (c *Client) Bytes() int64 { return c.bytes.Load() }

// Done is closed when the socket's reading has ended; Err says why.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err is why reading ended; call it after Done is closed.
func (c *Client) Err() error { return c.err }

// Write sends v as a JSON text frame.
func (c *Client) Write(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return c.WriteRaw(string(b))
}

// WriteRaw sends s as a text frame.
func (c *Client) WriteRaw(s string) error {
	ctx, cancel := context.WithTimeout(context.Background(), c.wait)
	defer cancel()
	return c.conn.Write(ctx, websocket.MessageText, []byte(s))
}

// Send sends v as a JSON text frame and fails the test if it cannot.
func (c *Client) Send(v any) {
	c.t.Helper()
	if err := c.Write(v); err != nil {
		c.t.Fatalf("%s: write: %v", c.name, err)
	}
}

// SendRaw sends s as a text frame and fails the test if it cannot.
func (c *Client) SendRaw(s string) {
	c.t.Helper()
	if err := c.WriteRaw(s); err != nil {
		c.t.Fatalf("%s: write: %v", c.name, err)
	}
}

// Next returns the next frame.
func (c *Client) Next() Frame {
	c.t.Helper()
	if len(c.backlog) > 0 {
		f := c.backlog[0]
		c.backlog = c.backlog[1:]
		return f
	}
	select {
	case f := <-c.frames:
		return f
	case <-c.done:
		c.t.Fatalf("%s: socket ended waiting for a frame: %v", c.name, c.err)
	case <-time.After(c.wait):
		c.t.Fatalf("%s: no frame within %v", c.name, c.wait)
	}
	return nil
}

// Expect returns the next frame and fails the test unless it is of type typ
// (Message for a message frame).
func (c *Client) Expect(typ string) Frame {
	c.t.Helper()
	f := c.Next()
	if got := f.Type(); got != typ {
		c.t.Fatalf("%s: want a %s frame, got %v", c.name, typ, f)
	}
	return f
}

// Until drops frames until one matches, and returns it.
func (c *Client) Until(what string, match func(Frame) bool) Frame {
	c.t.Helper()
	return c.await(what, match, false)
}

// UntilType drops frames until one of type typ, and returns it.
func (c *Client) UntilType(typ string) Frame {
	c.t.Helper()
	return c.Until(typ, func(f Frame) bool { return f.Type() == typ })
}

// Await returns the first frame, in order, that matches; the frames it
// passes over stay queued for later calls, so waits may come in any order.
func (c *Client) Await(what string, match func(Frame) bool) Frame {
	c.t.Helper()
	return c.await(what, match, true)
}

// await returns the first frame that matches, from the backlog first; keep
// says whether the frames it passes over stay in the backlog or are dropped.
func (c *Client) await(what string, match func(Frame) bool, keep bool) Frame {
	c.t.Helper()
	if i := slices.IndexFunc(c.backlog, match); i >= 0 {
		f := c.backlog[i]
		if keep {
			c.backlog = slices.Delete(c.backlog, i, i+1)
		} else {
			c.backlog = c.backlog[i+1:]
		}
		return f
	}
	if !keep {
		c.backlog = nil
	}
	deadline := time.After(c.wait)
	for {
		select {
		case f := <-c.frames:
			if match(f) {
				return f
			}
			if keep {
				c.backlog = append(c.backlog, f)
			}
		case <-c.done:
			c.t.Fatalf("%s: socket ended (%v) waiting for %s; passed over %v", c.name, c.err, what, c.backlog)
		case <-deadline:
			c.t.Fatalf("%s: no %s within %v; passed over %v", c.name, what, c.wait, c.backlog)
		}
	}
}

// Backlog is a copy of the frames Await passed over that no call has taken
// since, oldest first.
func (c *Client) Backlog() []Frame { return slices.Clone(c.backlog) }

// Ping sends a PING and fails the test unless the next frame is its PONG:
// every frame queued to the socket before the PING was handled must have
// been read already. By then the socket is registered.
func (c *Client) Ping() {
	c.t.Helper()
	c.SendRaw(`{"type":"PING"}`)
	c.Expect("PONG")
}

// Flush sends a PING and returns every frame received before its PONG: by
// then the socket has been sent everything queued to it before the PING was
// handled.
func (c *Client) Flush() []Frame {
	c.t.Helper()
	c.SendRaw(`{"type":"PING"}`)
	var before []Frame
	for {
		f := c.Next()
		if f.Type() == "PONG" {
			return before
		}
		before = append(before, f)
	}
}

// Request sends v, a frame with client_msg_id key, and waits for the ACK or
// ERROR that names key, however many frames come first. ok is false if
// neither came within wait or the socket failed.
func (c *Client) Request(key string, v any, wait time.Duration) (answer Frame, ok bool) {
	ch := make(chan Frame, 1)
	c.mu.Lock()
	c.waiting[key] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.waiting, key)
		c.mu.Unlock()
	}()
	if err := c.Write(v); err != nil {
		return nil, false
	}
	select {
	case f := <-ch:
		return f, true
	case <-c.done:
		return nil, false
	case <-time.After(wait):
		return nil, false
	}
}

// Messages is a copy of the message frames kept so far (KeepMessages).
func (c *Client) Messages() []Frame {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.msgs)
}

// WaitMessages waits until f accepts the message frames kept so far
// (KeepMessages), and returns them.
func (c *Client) WaitMessages(total time.Duration, f func([]Frame) error) []Frame {
	c.t.Helper()
	deadline := time.After(total)
	for {
		c.mu.Lock()
		msgs := slices.Clone(c.msgs)
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

// Close closes the socket normally and waits for its reading to end.
func (c *Client) Close() {
	c.t.Helper()
	c.conn.Close(websocket.StatusNormalClosure, "bye")
	select {
	case <-c.done:
	case <-time.After(c.wait):
		c.t.Fatalf("%s: still open after close", c.name)
	}
}

// CloseNow closes the socket at once, without a close handshake.
func (c *Client) CloseNow() { c.conn.CloseNow() }

// CloseStatus waits for the socket to end, dropping what it receives, and
// returns the close code the server sent (-1 if none).
func (c *Client) CloseStatus() websocket.StatusCode {
	c.t.Helper()
	deadline := time.After(c.wait)
	for {
		select {
		case <-c.frames:
		case <-c.done:
			return websocket.CloseStatus(c.err)
		case <-deadline:
			c.t.Fatalf("%s: socket still open after %v", c.name, c.wait)
		}
	}
}

// Handshake sets on h the headers of a WebSocket upgrade request, for a
// test that sends one by hand to see what the server refuses before the
// upgrade.
func Handshake(h http.Header) {
	h.Set("Connection", "Upgrade")
	h.Set("Upgrade", "websocket")
	h.Set("Sec-WebSocket-Version", "13")
	h.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
}
