package wsedge

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/golang-jwt/jwt/v5"

	"inbox/chat"
	"inbox/internal/testutil"
	"inbox/internal/wstest"
)

// badCase is one bad input and what the server must answer: an ERROR code
// (the socket stays open), a close code, or an HTTP status before the upgrade.
type badCase struct {
	name string
	// One of: a text frame, raw frames, or a handshake with header.
	text   string
	raw    func(r *rawClient)
	path   string      // for handshake cases (default /ws/inbox/)
	header http.Header // for handshake cases

	wantCode   string
	wantClose  ws.StatusCode
	wantStatus int
}

// writeRaw writes a frame exactly as given: masked or not, any bits.
func (r *rawClient) writeRaw(h ws.Header, payload []byte) {
	r.t.Helper()
	p := append([]byte(nil), payload...)
	if h.Masked {
		ws.Cipher(p, h.Mask, 0)
	}
	r.conn.SetWriteDeadline(time.Now().Add(frameWait))
	if err := ws.WriteHeader(r.conn, h); err != nil {
		r.t.Fatal(err)
	}
	if _, err := r.conn.Write(p); err != nil {
		r.t.Fatal(err)
	}
}

func masked(op ws.OpCode, fin bool, n int) ws.Header {
	return ws.Header{Fin: fin, OpCode: op, Masked: true, Mask: ws.NewMask(), Length: int64(n)}
}

func signToken(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestBadInputs(t *testing.T) { eachReader(t, testBadInputs) }

func testBadInputs(t *testing.T, goroutines bool) {
	const maxFrame = 4096
	n := newNode(t, nodeOptions{cfg: Config{MaxFrameBytes: maxFrame, goroutineReaders: goroutines}, limits: chat.Limits{MaxText: 100}})
	n.create(t, 1, "alice", "bob")
	n.create(t, 2, "carol", "dave")
	m1 := n.send(t, "bob", 1, "in one")
	m2 := n.send(t, "dave", 2, "in two")
	if _, _, err := n.svc.CreateJob(context.Background(), 9, []string{"carol"}); err != nil {
		t.Fatal(err)
	}

	secret := []byte(testSecret)
	exp := time.Now().Add(time.Hour).Unix()
	bearer := func(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }
	valid := n.token(t, "alice")

	cases := []badCase{
		// Frames answered with ERROR; the socket stays open.
		{name: "malformed JSON", text: `{"conversation_id": 1, "message": `, wantCode: "bad_request"},
		{name: "not JSON", text: `hello`, wantCode: "bad_request"},
		{name: "JSON array", text: `[1, 2]`, wantCode: "bad_request"},
		{name: "JSON null", text: `null`, wantCode: "bad_request"},
		{name: "trailing garbage", text: `{"conversation_id": 1, "message": "x"} {}`, wantCode: "bad_request"},
		{name: "conversation_id as string", text: `{"conversation_id": "1", "message": "x"}`, wantCode: "bad_request"},
		{name: "float conversation_id", text: `{"conversation_id": 1.5, "message": "x"}`, wantCode: "bad_request"},
		{name: "exponent conversation_id", text: `{"conversation_id": 1e0, "message": "x"}`, wantCode: "bad_request"},
		{name: "huge conversation_id", text: `{"conversation_id": 99999999999999999999, "message": "x"}`, wantCode: "bad_request"},
		{name: "negative conversation_id", text: `{"conversation_id": -1, "message": "x"}`, wantCode: "bad_request"},
		{name: "missing conversation_id", text: `{"message": "x"}`, wantCode: "bad_request"},
		{name: "message as number", text: `{"conversation_id": 1, "message": 42}`, wantCode: "bad_request"},
		{name: "missing message", text: `{"conversation_id": 1, "type": "TEXT"}`, wantCode: "bad_request"},
		{name: "empty text", text: `{"conversation_id": 1, "message": ""}`, wantCode: "bad_request"},
		{name: "over-long text", text: fmt.Sprintf(`{"conversation_id": 1, "message": %q}`, strings.Repeat("é", 101)), wantCode: "too_large"},
		{name: "unknown type", text: `{"conversation_id": 1, "message": "x", "type": "SHOUT"}`, wantCode: "bad_request"},
		{name: "lower-case type", text: `{"conversation_id": 1, "message": "x", "type": "text"}`, wantCode: "bad_request"},
		{name: "SYSTEM type from a client", text: `{"conversation_id": 1, "message": "x", "type": "SYSTEM"}`, wantCode: "bad_request"},
		{name: "type as number", text: `{"type": 5}`, wantCode: "bad_request"},
		{name: "client_msg_id as number", text: `{"conversation_id": 1, "message": "x", "client_msg_id": 7}`, wantCode: "bad_request"},
		{name: "client_msg_id too long", text: fmt.Sprintf(`{"conversation_id": 1, "message": "x", "client_msg_id": %q}`, strings.Repeat("k", 129)), wantCode: "bad_request"},
		{name: "another users' conversation", text: `{"conversation_id": 2, "message": "x"}`, wantCode: "forbidden"},
		{name: "nonexistent conversation", text: `{"conversation_id": 404, "message": "x"}`, wantCode: "not_found"},
		{name: "TYPING without is_typing", text: `{"conversation_id": 1, "type": "TYPING"}`, wantCode: "bad_request"},
		{name: "TYPING is_typing as string", text: `{"conversation_id": 1, "type": "TYPING", "is_typing": "yes"}`, wantCode: "bad_request"},
		{name: "TYPING in another users' conversation", text: `{"conversation_id": 2, "type": "TYPING", "is_typing": true}`, wantCode: "forbidden"},
		{name: "READ with nothing", text: `{"conversation_id": 1, "type": "READ"}`, wantCode: "bad_request"},
		{name: "READ of another conversation's message", text: fmt.Sprintf(`{"conversation_id": 1, "type": "READ", "up_to": %d}`, m2), wantCode: "not_found"},
		{name: "READ of a nonexistent message", text: `{"conversation_id": 1, "type": "READ", "message_ids": [999999]}`, wantCode: "not_found"},
		{name: "READ with float ids", text: fmt.Sprintf(`{"conversation_id": 1, "type": "READ", "message_ids": [%d.5]}`, m1), wantCode: "bad_request"},
		{name: "READ with ids not an array", text: fmt.Sprintf(`{"conversation_id": 1, "type": "READ", "message_ids": %d}`, m1), wantCode: "bad_request"},
		{name: "READ negative up_to", text: `{"conversation_id": 1, "type": "READ", "up_to": -3}`, wantCode: "bad_request"},
		{name: "RESUME without since", text: `{"type": "RESUME"}`, wantCode: "bad_request"},
		{name: "RESUME negative since", text: `{"type": "RESUME", "since": -1}`, wantCode: "bad_request"},
		// Ids stay within 2^53−1 (what a JavaScript client holds exactly).
		{name: "conversation_id above 2^53−1", text: `{"conversation_id": 9007199254740992, "message": "x"}`, wantCode: "bad_request"},
		{name: "READ id above 2^53−1", text: `{"conversation_id": 1, "type": "READ", "message_ids": [9007199254740992]}`, wantCode: "bad_request"},
		{name: "READ up_to above 2^53−1", text: `{"conversation_id": 1, "type": "READ", "up_to": 9007199254740992}`, wantCode: "bad_request"},
		{name: "RESUME since above 2^53−1", text: `{"type": "RESUME", "since": 9007199254740992}`, wantCode: "bad_request"},

		// Protocol violations close the socket with their code.
		{name: "binary frame", raw: func(r *rawClient) { r.writeFrame(true, ws.OpBinary, []byte(`{"type":"PING"}`)) }, wantClose: ws.StatusUnsupportedData},
		{name: "invalid UTF-8", raw: func(r *rawClient) { r.writeFrame(true, ws.OpText, []byte("{\"message\": \"\xff\xfe\"}")) }, wantClose: ws.StatusInvalidFramePayloadData},
		{name: "invalid UTF-8 split across fragments", raw: func(r *rawClient) {
			r.writeFrame(false, ws.OpText, []byte("{\"message\": \"\xe2"))
			r.writeFrame(true, ws.OpContinuation, []byte("\x28\"}"))
		}, wantClose: ws.StatusInvalidFramePayloadData},
		{name: "frame over MaxFrameBytes", raw: func(r *rawClient) {
			r.writeFrame(true, ws.OpText, []byte(strings.Repeat(" ", maxFrame+1)))
		}, wantClose: ws.StatusMessageTooBig},
		{name: "fragments over MaxFrameBytes", raw: func(r *rawClient) {
			r.writeFrame(false, ws.OpText, []byte(strings.Repeat(" ", maxFrame/2)))
			r.writeFrame(false, ws.OpContinuation, []byte(strings.Repeat(" ", maxFrame/2)))
			r.writeFrame(true, ws.OpContinuation, []byte("{}"))
		}, wantClose: ws.StatusMessageTooBig},
		{name: "header announcing 1 GiB", raw: func(r *rawClient) {
			r.writeRaw(masked(ws.OpText, true, 0), nil) // a valid empty frame first
			h := masked(ws.OpText, true, 0)
			h.Length = 1 << 30
			r.writeRaw(h, nil)
		}, wantClose: ws.StatusMessageTooBig},
		{name: "unmasked frame", raw: func(r *rawClient) {
			r.writeRaw(ws.Header{Fin: true, OpCode: ws.OpText, Length: 2}, []byte("{}"))
		}, wantClose: ws.StatusProtocolError},
		{name: "reserved bits", raw: func(r *rawClient) {
			h := masked(ws.OpText, true, 2)
			h.Rsv = ws.Rsv(true, false, false)
			r.writeRaw(h, []byte("{}"))
		}, wantClose: ws.StatusProtocolError},
		{name: "continuation without a message", raw: func(r *rawClient) { r.writeFrame(true, ws.OpContinuation, []byte("{}")) }, wantClose: ws.StatusProtocolError},
		{name: "new message inside a fragmented one", raw: func(r *rawClient) {
			r.writeFrame(false, ws.OpText, []byte(`{"type":`))
			r.writeFrame(true, ws.OpText, []byte(`{"type":"PING"}`))
		}, wantClose: ws.StatusProtocolError},
		{name: "fragmented ping", raw: func(r *rawClient) { r.writeFrame(false, ws.OpPing, []byte("x")) }, wantClose: ws.StatusProtocolError},
		{name: "ping over 125 bytes", raw: func(r *rawClient) { r.writeRaw(masked(ws.OpPing, true, 126), make([]byte, 126)) }, wantClose: ws.StatusProtocolError},
		{name: "unknown opcode", raw: func(r *rawClient) { r.writeRaw(masked(ws.OpCode(0x3), true, 0), nil) }, wantClose: ws.StatusProtocolError},
		{name: "close with a reserved code", raw: func(r *rawClient) { r.writeFrame(true, ws.OpClose, []byte{0x03, 0xed}) }, wantClose: ws.StatusProtocolError}, // 1005

		// Refused before the upgrade.
		{name: "missing token", header: http.Header{}, wantStatus: 401},
		{name: "empty bearer", header: http.Header{"Authorization": {"Bearer "}}, wantStatus: 401},
		{name: "garbage token", header: bearer("not.a.jwt"), wantStatus: 401},
		{name: "alg none", header: bearer(signToken(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, jwt.MapClaims{"sub": "alice", "exp": exp})), wantStatus: 401},
		{name: "wrong key", header: bearer(signToken(t, jwt.SigningMethodHS256, []byte("another-secret-another-secret-xx"), jwt.MapClaims{"sub": "alice", "exp": exp})), wantStatus: 401},
		{name: "expired", header: bearer(signToken(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(-time.Hour).Unix()})), wantStatus: 401},
		{name: "no exp", header: bearer(signToken(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "alice"})), wantStatus: 401},
		{name: "malformed sub", header: bearer(signToken(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "alice smith!", "exp": exp})), wantStatus: 401},
		{name: "cookie from a foreign origin", header: http.Header{"Cookie": {"inbox_token=" + valid}, "Origin": {"https://evil.example"}}, wantStatus: 401},
		{name: "legacy socket, not a member", path: "/ws/chat/2/", header: bearer(valid), wantStatus: 403},
		{name: "job socket, not a member", path: "/ws/job/9/", header: bearer(valid), wantStatus: 403},
		{name: "bad since", path: "/ws/inbox/?since=-5", header: bearer(valid), wantStatus: 400},
		{name: "since above 2^53−1", path: "/ws/inbox/?since=9007199254740992", header: bearer(valid), wantStatus: 400},
		{name: "legacy socket id above 2^53−1", path: "/ws/chat/9007199254740992/", header: bearer(valid), wantStatus: 400},
		{name: "unknown endpoint", path: "/ws/everything/", header: bearer(valid), wantStatus: 404},
	}

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			switch {
			case tc.wantStatus != 0:
				checkHandshake(t, n, tc)
			default:
				r, err := n.rawDial(t, valid, "/ws/inbox/", nil)
				if err != nil {
					t.Fatal(err)
				}
				if tc.raw != nil {
					tc.raw(r)
				} else {
					r.writeFrame(true, ws.OpText, []byte(tc.text))
				}
				if tc.wantClose != 0 {
					code, err := r.closeCode()
					if err != nil || code != tc.wantClose {
						t.Fatalf("closed with %d (%v), want %d", code, err, tc.wantClose)
					}
					return
				}
				f, err := r.nextText()
				if err != nil {
					t.Fatal(err)
				}
				if f["type"] != "ERROR" || f["code"] != tc.wantCode || f["error"] == "" {
					t.Fatalf("got %v, want ERROR %s", f, tc.wantCode)
				}
				if _, has := f["message"]; has {
					t.Fatalf("ERROR frames carry no message field: %v", f)
				}
				r.writeFrame(true, ws.OpText, []byte(`{"type":"PING"}`)) // still open
				if f, err := r.nextText(); err != nil || f["type"] != "PONG" {
					t.Fatalf("after the error: %v %v", f, err)
				}
			}
		})
	}

	// The server still serves a normal exchange, and stored nothing bad.
	a := n.dial(t, "alice", "/ws/inbox/")
	b := n.dial(t, "bob", "/ws/inbox/")
	a.Ping()
	b.Ping()
	a.SendRaw(`{"conversation_id": 1, "message": "still fine", "client_msg_id": "ok-1"}`)
	if f := b.Expect(wstest.Message); f["message"] != "still fine" || uint64(testutil.Int(t, f, "seq")) <= m2 {
		t.Fatalf("after the table: %v", f)
	}
	if got := n.dir.Seq(); got.String() != fmt.Sprint(m2+2) { // the job and the message
		t.Errorf("stream at %s, want %d: a bad input was stored", got, m2+2)
	}
	var failures float64
	for _, reason := range []string{"missing", "expired", "invalid"} {
		failures += metricValue(n.m.AuthFailures.WithLabelValues(reason))
	}
	if failures != 9 {
		t.Errorf("%v auth failures counted, want 9", failures)
	}
}

// checkHandshake sends an upgrade request and checks the refusal: status
// and the JSON error body.
func checkHandshake(t *testing.T, n *node, tc badCase) {
	t.Helper()
	path := tc.path
	if path == "" {
		path = "/ws/inbox/"
	}
	req, err := http.NewRequest(http.MethodGet, n.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range tc.header {
		req.Header[k] = v
	}
	wstest.Handshake(req.Header)
	resp, err := n.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct{ Error, Code string }
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("HTTP %d with a body that is not JSON: %v", resp.StatusCode, err)
	}
	if resp.StatusCode != tc.wantStatus || body.Error == "" || body.Code == "" {
		t.Fatalf("HTTP %d %+v, want %d with an error and a code", resp.StatusCode, body, tc.wantStatus)
	}
	if tc.wantStatus == 401 && body.Code != "unauthorized" {
		t.Fatalf("code %q, want unauthorized", body.Code)
	}
}
