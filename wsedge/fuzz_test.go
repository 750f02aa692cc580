package wsedge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"inbox/auth"
	"inbox/chat"
	"inbox/eventstore"
	"inbox/internal/testutil"
	"inbox/metrics"
)

// FuzzClientFrame feeds arbitrary client input to the frame decoder and to a
// socket's whole read path (frame parsing, reassembly, control frames,
// decoding, chat.Service calls, replies) over an in-memory connection.
// Pass: no panic, decode(encode(x)) == x, and every byte the server writes
// is a well-formed frame: JSON text or a close with a valid code.
//
//	go test -run x -fuzz FuzzClientFrame -fuzztime 60s -fuzzminimizetime 2s ./wsedge
//
// (each run starts a hub, so minimizing a large input takes long; cap it.)
func FuzzClientFrame(f *testing.F) {
	for _, s := range []string{
		`{"conversation_id": 1, "message": "Hello", "type": "TEXT", "client_msg_id": "c-1"}`,
		`{"conversation_id": 1, "type": "TYPING", "is_typing": true}`,
		`{"conversation_id": 1, "type": "READ", "message_ids": [1, 2]}`,
		`{"conversation_id": 1, "type": "READ", "up_to": 1}`,
		`{"type": "PING"}`,
		`{"type": "RESUME", "since": 0}`,
		`{"type": "RESUME", "since": 18446744073709551615}`,
		`{"type": "REFRESH", "token": "eyJhbGciOiJIUzI1NiJ9.e30.x"}`,
		`{"type": "REFRESH"}`,
		`{"type": "REFRESH", "token": 7}`,
		`{"conversation_id": 1.5, "message": "x"}`,
		`{"conversation_id": "1", "message": 7}`,
		`{"message": "\u00e9\ud83d\ude00", "conversation_id": 2}`,
		`{"type": "EDIT", "conversation_id": 1, "message_id": 6, "message": "new text", "client_msg_id": "e-1"}`,
		`{"type": "EDIT", "conversation_id": 1, "message_id": 6}`,
		`{"type": "DELETE", "conversation_id": 1, "message_id": 6, "client_msg_id": "d-1"}`,
		`{"type": "DELETE", "conversation_id": 1, "message_id": -6}`,
		`{"type": "REACT", "conversation_id": 1, "message_id": 6, "emoji": "👍", "on": true}`,
		`{"type": "REACT", "conversation_id": 1, "message_id": 6, "emoji": "👩\u200d💻", "on": false, "client_msg_id": "r-1"}`,
		`{"type": "REACT", "conversation_id": 1, "message_id": 6, "emoji": "👍", "on": "yes"}`,
		`[]`, `null`, `{`, "\xff",
	} {
		f.Add([]byte(s))
	}
	m := metrics.New(metrics.Sources{})
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecode(t, data)
		// The same bytes as one text message in two fragments, and as a raw
		// byte stream (whatever headers they happen to spell).
		half := len(data) / 2
		var stream bytes.Buffer
		writeMasked(&stream, false, ws.OpText, data[:half])
		writeMasked(&stream, true, ws.OpContinuation, data[half:])
		writeMasked(&stream, true, ws.OpText, []byte(`{"type":"PING"}`))
		checkServerOutput(t, runSocket(t, m, stream.Bytes()))
		checkServerOutput(t, runSocket(t, m, data))
	})
}

func checkDecode(t *testing.T, data []byte) {
	req, err := decodeFrame(data)
	if err != nil {
		if chat.CodeOf(err) != chat.CodeBadRequest {
			t.Fatalf("decode error %v has code %s", err, chat.CodeOf(err))
		}
		checkServerOutput(t, encodeError(err, req.ClientMsgID, req.ConversationID).wire)
		return
	}
	again, err := json.Marshal(req.clientFrame)
	if err != nil {
		t.Fatal(err)
	}
	req2, err := decodeFrame(again)
	if err != nil || !reflect.DeepEqual(req, req2) {
		t.Fatalf("decode(encode(x)) != x:\n%+v\n%+v (%v)", req, req2, err)
	}
}

// writeMasked writes a client frame.
func writeMasked(w io.Writer, fin bool, op ws.OpCode, p []byte) {
	f := ws.MaskFrameInPlace(ws.NewFrame(op, fin, append([]byte(nil), p...)))
	_ = ws.WriteFrame(w, f)
}

// runSocket runs one socket's read path over input and returns what the
// server wrote.
func runSocket(t *testing.T, m *metrics.Metrics, input []byte) []byte {
	dir := chat.NewDirectory()
	dir.Seed(eventstore.NewCursor(1), map[int64][]eventstore.Member{1: {{UserID: "alice", Role: "member"}, {UserID: "bob", Role: "member"}}}, nil, nil)
	store := &memStore{subjects: map[uint64]string{}}
	svc := chat.New(chat.Limits{MaxText: 50}, chat.Deps{Store: store, Locator: store, Directory: dir})
	verifier, err := auth.NewVerifier(auth.Config{Secret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	h := New(Config{MaxFrameBytes: 256, CloseGrace: time.Millisecond}, Deps{Service: svc, Authenticator: verifier, Reader: nopReader{}, Metrics: m, Logger: testutil.Logger()})
	nc := &memConn{in: bytes.NewReader(input)}
	if status, _, msg := h.reserve("alice"); status != 0 {
		t.Fatal(msg)
	}
	c := newConn(h, nc, auth.Claims{UserID: "alice"}, epInbox, 0)
	if !h.register(c, false, nil, nil) {
		t.Fatal("not registered")
	}
	c.seen.Store(time.Now().UnixNano())
	c.readLoop() // a memConn has no descriptor for the poller
	testutil.CheckFor(t, 10*time.Second, time.Millisecond, func() error {
		if !c.idle() {
			return errors.New("the socket's worker is still busy")
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	nc.mu.Lock()
	defer nc.mu.Unlock()
	return nc.out.Bytes()
}

func checkServerOutput(t *testing.T, out []byte) {
	r := bytes.NewReader(out)
	for r.Len() > 0 {
		fr, err := ws.ReadFrame(r)
		if err != nil {
			t.Fatalf("server wrote a broken frame: %v in %q", err, out)
		}
		if fr.Header.Masked || !fr.Header.Fin {
			t.Fatalf("server frame header %+v", fr.Header)
		}
		switch fr.Header.OpCode {
		case ws.OpText:
			if !json.Valid(fr.Payload) {
				t.Fatalf("server text frame is not JSON: %q", fr.Payload)
			}
		case ws.OpClose:
			code, _ := ws.ParseCloseFrameData(fr.Payload)
			if !validCloseCode(code) && code != CloseSlowConsumer {
				t.Fatalf("close code %d", code)
			}
		case ws.OpPong:
		default:
			t.Fatalf("server opcode %v", fr.Header.OpCode)
		}
	}
}

// memStore is an in-memory chat.Appender and chat.MessageLocator.
type memStore struct {
	mu       sync.Mutex
	seq      uint64
	subjects map[uint64]string
}

func (s *memStore) Append(_ context.Context, e eventstore.Event, _ ...eventstore.AppendOption) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	s.subjects[s.seq] = e.Subject()
	return s.seq, nil
}

func (s *memStore) SubjectOf(_ context.Context, seq uint64) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if subj, ok := s.subjects[seq]; ok {
		return subj, nil
	}
	return "", eventstore.ErrNotFound
}

func (s *memStore) LastSeqOf(context.Context, string) (uint64, error) { return 0, nil }

// Get finds nothing: memStore never reports a duplicate, so Send never asks.
func (s *memStore) Get(context.Context, uint64) (eventstore.Stored, error) {
	return eventstore.Stored{}, eventstore.ErrNotFound
}

type nopReader struct{}

func (nopReader) Partitions() int { return 1 }

func (nopReader) Read(context.Context, int, uint64, uint64, []string, func(eventstore.Stored) error, ...eventstore.ReadOption) error {
	return nil
}

func (nopReader) Last(context.Context) (eventstore.Cursor, error) {
	return eventstore.NewCursor(1), nil
}

// memConn is a net.Conn reading input and collecting output.
type memConn struct {
	in     *bytes.Reader
	mu     sync.Mutex
	out    bytes.Buffer
	closed bool
}

var errMemClosed = errors.New("closed")

func (c *memConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, errMemClosed
	}
	return c.in.Read(p)
}

func (c *memConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, errMemClosed
	}
	return c.out.Write(p)
}

func (c *memConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	return nil
}

func (c *memConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *memConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *memConn) SetDeadline(time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(time.Time) error { return nil }
