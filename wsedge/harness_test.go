package wsedge

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"inbox/admission"
	"inbox/auth"
	"inbox/chat"
	"inbox/eventstore"
	"inbox/feed"
	"inbox/internal/testnats"
	"inbox/internal/testutil"
	"inbox/internal/wstest"
	"inbox/metrics"
)

// The harness wires real parts as a node does: a nats-server with JetStream,
// the event store, the chat Directory and Service, the hub, the live feed
// (feed.Feed: store.Tail → dir.Apply → hub.Dispatch) and an httptest server.

const testSecret = "wsedge-test-secret-0123456789abcdef0123"

type node struct {
	store  *eventstore.Store
	dir    *chat.Directory
	svc    *chat.Service
	feed   *feed.Feed
	hub    *Hub
	m      *metrics.Metrics
	srv    *httptest.Server
	minter *auth.Minter
	// stopFeed stops the live feed: nothing is dispatched after it.
	stopFeed func()
}

type nodeOptions struct {
	cfg    Config
	limits chat.Limits
	// listen wraps the server's listener (the slow-consumer test shrinks
	// the server's send buffers).
	listen func(net.Listener) net.Listener
	// reader wraps the store the hub reads catch-ups from.
	reader func(*eventstore.Store) Reader
	// log is the hub's logger (nil: testutil.Logger).
	log *slog.Logger
	// partitions of the stream (0: one).
	partitions int
	// gate, if set, is the node's admission control (service, hub, feed).
	gate *admission.Controller
	// appender wraps the store the service appends to.
	appender func(*eventstore.Store) chat.Appender
}

// eachReader runs test with the poller reading the sockets, then with a
// reader goroutine per socket (the poller's fallback).
func eachReader(t *testing.T, test func(t *testing.T, goroutines bool)) {
	t.Run("poller", func(t *testing.T) { test(t, false) })
	t.Run("goroutines", func(t *testing.T) { test(t, true) })
}

func newNode(t testing.TB, o nodeOptions) *node {
	t.Helper()
	s := testnats.Server(t)
	store := testnats.StoreWith(t, s, eventstore.Config{Partitions: o.partitions})
	dir := chat.NewDirectory()
	dir.Seed(eventstore.NewCursor(store.Partitions()), nil, nil, nil)
	if o.limits.TypingInterval == 0 {
		o.limits.TypingInterval = time.Millisecond
	}
	deps := chat.Deps{Store: store, Locator: store, Directory: dir}
	if o.appender != nil {
		deps.Store = o.appender(store)
	}
	var gate Gate
	var observer feed.Observer
	if o.gate != nil {
		deps.Gate, gate, observer = o.gate, o.gate, o.gate
	}
	svc := chat.New(o.limits, deps)
	verifier, err := auth.NewVerifier(auth.Config{Secret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	minter, err := auth.NewMinter(auth.MinterConfig{Secret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New(metrics.Sources{})
	var reader Reader = store
	if o.reader != nil {
		reader = o.reader(store)
	}
	if o.log == nil {
		o.log = testutil.Logger()
	}
	live := feed.New(feed.Config{}, feed.Deps{Source: store, Directory: dir, Observer: observer})
	hub := New(o.cfg, Deps{Service: svc, Authenticator: verifier, Reader: reader, Metrics: m, Gate: gate, Logger: o.log})

	ctx, cancel := context.WithCancel(context.Background())
	feedCtx, stopFeed := context.WithCancel(ctx)
	feedDone := make(chan struct{})
	go func() {
		defer close(feedDone)
		if err := live.Run(feedCtx, hub); err != nil && feedCtx.Err() == nil {
			t.Errorf("feed: %v", err)
		}
	}()

	srv := httptest.NewUnstartedServer(hub)
	if o.listen != nil {
		srv.Listener = o.listen(srv.Listener)
	}
	srv.Start()
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		if err := hub.Shutdown(sctx); err != nil {
			t.Errorf("hub shutdown: %v", err)
		}
		srv.Close()
		cancel()
		<-feedDone
	})
	return &node{store: store, dir: dir, svc: svc, feed: live, hub: hub, m: m, srv: srv, minter: minter, stopFeed: stopFeed}
}

func (n *node) token(t testing.TB, user string) string {
	t.Helper()
	tok, err := n.minter.Mint(user, strings.ToUpper(user[:1])+user[1:], time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (n *node) wsURL(path string) string { return "ws" + strings.TrimPrefix(n.srv.URL, "http") + path }

// create makes a conversation with the given members (role member).
func (n *node) create(t testing.TB, id int64, users ...string) {
	t.Helper()
	ms := make([]eventstore.Member, len(users))
	for i, u := range users {
		ms[i] = eventstore.Member{UserID: u, Role: eventstore.RoleMember}
	}
	_, seq, err := n.svc.CreateConversation(context.Background(), id, ms)
	if err != nil {
		t.Fatalf("create conversation %d: %v", id, err)
	}
	n.settle(t, seq)
}

// settle waits until the hub has dispatched the event with id seq, so a
// socket opened next does not get it live.
func (n *node) settle(t testing.TB, seq uint64) {
	t.Helper()
	testutil.CheckFor(t, frameWait, time.Millisecond, func() error {
		if !n.hub.dispatched(seq) {
			return fmt.Errorf("hub dispatched up to %s, want %d", n.hub.lastCursor(), seq)
		}
		return nil
	})
}

// send appends a message as user, bypassing any socket.
func (n *node) send(t testing.TB, user string, conv int64, text string) uint64 {
	t.Helper()
	sent, err := n.svc.Send(context.Background(), chat.Sender{UserID: user}, chat.SendRequest{ConversationID: conv, Text: text})
	if err != nil {
		t.Fatalf("send to %d as %s: %v", conv, user, err)
	}
	seq := sent.ID
	n.settle(t, seq)
	return seq
}

// client is the tests' WebSocket client (internal/wstest).
type client = wstest.Client

const frameWait = wstest.DefaultWait

func (n *node) dial(t testing.TB, user, path string) *client {
	t.Helper()
	c, resp, err := n.tryDial(t, n.token(t, user), path)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s as %s: %v (HTTP %d)", path, user, err, status)
	}
	return c
}

func (n *node) tryDial(t testing.TB, token, path string) (*client, *http.Response, error) {
	t.Helper()
	return wstest.TryDial(t, n.wsURL(path), wstest.Options{Token: token, Name: path})
}

// frameType is a frame's control type, or "" for a message frame.
func frameType(f wstest.Frame) string {
	if typ := f.Type(); typ != wstest.Message {
		return typ
	}
	return ""
}

func decodeJSON(t testing.TB, b []byte) map[string]any {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		t.Fatalf("server sent a frame that is not a JSON object: %q: %v", b, err)
	}
	return m
}

// rawClient speaks WebSocket through gobwas/ws with no checks of its own,
// for protocol violations.
type rawClient struct {
	t    testing.TB
	conn net.Conn
	r    io.Reader
}

func (n *node) rawDial(t testing.TB, token, path string, netDial func(ctx context.Context, network, addr string) (net.Conn, error)) (*rawClient, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), frameWait)
	defer cancel()
	d := ws.Dialer{NetDial: netDial, Header: ws.HandshakeHeaderHTTP(http.Header{"Authorization": {"Bearer " + token}})}
	conn, br, _, err := d.Dial(ctx, n.wsURL(path))
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { conn.Close() })
	rc := &rawClient{t: t, conn: conn, r: conn}
	if br != nil {
		rc.r = io.MultiReader(br, conn)
	}
	return rc, nil
}

// writeFrame writes one masked frame.
func (r *rawClient) writeFrame(fin bool, op ws.OpCode, payload []byte) {
	r.t.Helper()
	f := ws.NewFrame(op, fin, append([]byte(nil), payload...))
	f = ws.MaskFrameInPlace(f)
	r.conn.SetWriteDeadline(time.Now().Add(frameWait))
	if err := ws.WriteFrame(r.conn, f); err != nil {
		r.t.Fatalf("raw write: %v", err)
	}
}

// readFrame reads the next frame, answering nothing.
func (r *rawClient) readFrame() (ws.Frame, error) {
	r.conn.SetReadDeadline(time.Now().Add(frameWait))
	return ws.ReadFrame(r.r)
}

// closeCode reads until the server's close frame and returns its code.
func (r *rawClient) closeCode() (ws.StatusCode, error) {
	for {
		f, err := r.readFrame()
		if err != nil {
			return 0, err
		}
		if f.Header.OpCode == ws.OpClose {
			code, _ := ws.ParseCloseFrameData(f.Payload)
			return code, nil
		}
	}
}

// nextText reads until the next text frame.
func (r *rawClient) nextText() (map[string]any, error) {
	for {
		f, err := r.readFrame()
		if err != nil {
			return nil, err
		}
		switch f.Header.OpCode {
		case ws.OpText:
			return decodeJSON(r.t, f.Payload), nil
		case ws.OpClose:
			code, reason := ws.ParseCloseFrameData(f.Payload)
			return nil, fmt.Errorf("closed %d %s", code, reason)
		}
	}
}

// smallSendBuffers shrinks the server's socket send buffers, so a client
// that stops reading fills them after a few frames.
type smallSendBuffers struct{ net.Listener }

func (l smallSendBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetWriteBuffer(4096)
	}
	return c, err
}

// smallReceiveBuffer dials with a small receive buffer (set before connect,
// so the advertised window is small too).
func smallReceiveBuffer(ctx context.Context, network, addr string) (net.Conn, error) {
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		}); err != nil {
			return err
		}
		return serr
	}}
	return d.DialContext(ctx, network, addr)
}

// metricValue reads a counter or gauge.
func metricValue(m prometheus.Metric) float64 {
	var pb dto.Metric
	if err := m.Write(&pb); err != nil {
		panic(err)
	}
	if c := pb.GetCounter(); c != nil {
		return c.GetValue()
	}
	return pb.GetGauge().GetValue()
}
