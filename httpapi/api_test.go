package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	dto "github.com/prometheus/client_model/go"

	"inbox/chat"
	"inbox/projections"
)

func TestOps(t *testing.T) {
	n := newNode(t, nodeOptions{})

	var st statusResponse
	n.must(t, http.StatusOK, req{method: "GET", path: "/healthz"}).json(t, &st)
	if st.Status != "ok" {
		t.Errorf("healthz status %q", st.Status)
	}
	n.must(t, http.StatusOK, req{method: "GET", path: "/readyz"})
	notReady := errors.New("projection is rebuilding")
	n.notReady.Store(&notReady)
	r := n.must(t, http.StatusServiceUnavailable, req{method: "GET", path: "/readyz"})
	if e := r.error(t); e.Code != chat.CodeUnavailable || !strings.Contains(e.Error, "projection is rebuilding") {
		t.Errorf("readyz error %+v", e)
	}
	n.notReady.Store(nil)
	n.must(t, http.StatusOK, req{method: "GET", path: "/readyz"})

	r = n.must(t, http.StatusOK, req{method: "GET", path: "/api/openapi.json"})
	var d map[string]any
	r.json(t, &d)
	if d["openapi"] != "3.1.0" || r.header.Get("Content-Type") != "application/json" {
		t.Errorf("openapi.json: version %v, Content-Type %q", d["openapi"], r.header.Get("Content-Type"))
	}

	r = n.must(t, http.StatusOK, req{method: "GET", path: "/metrics"})
	if !strings.Contains(string(r.body), `inbox_http_requests_total{code="503",route="GET /readyz"} 1`) {
		t.Errorf("metrics do not count the 503 of /readyz:\n%s", r.body)
	}
	if got := n.requests(t, "GET /healthz", "200"); got != 1 {
		t.Errorf("GET /healthz 200 counted %v times, want 1", got)
	}
}

func TestUnknownRouteAndMethod(t *testing.T) {
	n := newNode(t, nodeOptions{})
	r := n.must(t, http.StatusNotFound, req{method: "GET", path: "/api/nope"})
	if e := r.error(t); e.Code != chat.CodeNotFound {
		t.Errorf("code %q", e.Code)
	}
	r = n.must(t, http.StatusMethodNotAllowed, req{method: "PATCH", path: "/api/conversations/1/messages", auth: n.user("u1")})
	if e := r.error(t); e.Code != CodeMethodNotAllowed || r.header.Get("Allow") != "GET, POST" {
		t.Errorf("405: code %q, Allow %q", e.Code, r.header.Get("Allow"))
	}
	if got := n.requests(t, unmatched, "404"); got != 1 {
		t.Errorf("unmatched 404 counted %v times", got)
	}
}

// userRoutes are one request per user route, for the auth table.
var userRoutes = []req{
	{method: "GET", path: "/api/conversations"},
	{method: "GET", path: "/api/conversations/1/messages"},
	{method: "POST", path: "/api/conversations/1/messages", body: `{"message":"hi"}`},
}

var adminRoutes = []req{
	{method: "POST", path: "/api/admin/conversations", body: `{"members":[{"user_id":"u1","role":"client"}]}`},
	{method: "POST", path: "/api/admin/conversations/1/members", body: `{"user_id":"u3","role":"member"}`},
	{method: "DELETE", path: "/api/admin/conversations/1/members/u1"},
	{method: "PUT", path: "/api/admin/profiles/u1", body: `{"name":"U One"}`},
	{method: "POST", path: "/api/admin/conversations/1/messages", body: `{"message":"system says"}`},
	{method: "POST", path: "/api/admin/jobs", body: `{"members":["u1"]}`},
	{method: "POST", path: "/api/admin/jobs/1/status", body: `{"status":"accepted"}`},
}

func signed(t *testing.T, secret string, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestUserAuthRefused(t *testing.T) {
	n := newNode(t, nodeOptions{})
	n.createConversation(t, 1, "u1:client")
	exp := time.Now().Add(time.Hour).Unix()
	for _, tc := range []struct {
		name string
		auth string
	}{
		{"no token", ""},
		{"empty bearer", "Bearer "},
		{"garbage", "Bearer not.a.jwt"},
		{"other secret", bearer(signed(t, "another-secret-entirely-0123456789", jwt.MapClaims{"sub": "u1", "exp": exp}))},
		{"expired", bearer(signed(t, testSecret, jwt.MapClaims{"sub": "u1", "exp": time.Now().Add(-time.Hour).Unix()}))},
		{"no exp", bearer(signed(t, testSecret, jwt.MapClaims{"sub": "u1"}))},
		{"bad sub", bearer(signed(t, testSecret, jwt.MapClaims{"sub": "u 1", "exp": exp}))},
		{"admin token", n.admin()},
	} {
		for _, rq := range userRoutes {
			t.Run(tc.name+"/"+rq.method+" "+rq.path, func(t *testing.T) {
				rq.auth = tc.auth
				r := n.must(t, http.StatusUnauthorized, rq)
				if e := r.error(t); e.Code != CodeUnauthorized {
					t.Errorf("code %q", e.Code)
				}
				if r.header.Get("WWW-Authenticate") == "" {
					t.Error("no WWW-Authenticate")
				}
			})
		}
	}
	// Nothing was sent.
	if msgs := n.messages(t, "u1", 1, ""); len(msgs) != 0 {
		t.Errorf("refused sends stored %d messages", len(msgs))
	}
}

// TestUserRateLimit: past its burst a user's requests to the user routes,
// all together, are refused with 429 rate_limited and Retry-After; another
// user and the service API are not held up.
func TestUserRateLimit(t *testing.T) {
	n := newNode(t, nodeOptions{userBurst: 3})
	n.createConversation(t, 1, "u1:member", "u2:member")
	for range 3 {
		n.must(t, http.StatusOK, req{method: "GET", path: "/api/conversations", auth: n.user("u1")})
	}
	r := n.must(t, http.StatusTooManyRequests, req{method: "GET", path: "/api/conversations", auth: n.user("u1")})
	if e := r.error(t); e.Code != "rate_limited" || !strings.Contains(e.Error, "requests per second") {
		t.Errorf("over the limit: %+v", e)
	}
	if ra := r.header.Get("Retry-After"); ra == "" {
		t.Error("429 without Retry-After")
	}
	n.must(t, http.StatusTooManyRequests, req{method: "POST", path: "/api/conversations/1/messages", auth: n.user("u1"), body: `{"message":"hi"}`})
	n.must(t, http.StatusOK, req{method: "GET", path: "/api/conversations", auth: n.user("u2")})
	n.createConversation(t, 2, "u1:member")
}

func TestAdminAuthRefused(t *testing.T) {
	n := newNode(t, nodeOptions{})
	for _, tc := range []struct {
		name   string
		auth   string
		status int
		code   string
	}{
		{"no token", "", http.StatusUnauthorized, CodeUnauthorized},
		{"basic scheme", "Basic dTE6cHc=", http.StatusUnauthorized, CodeUnauthorized},
		{"empty bearer", "Bearer ", http.StatusUnauthorized, CodeUnauthorized},
		{"wrong token", "Bearer " + testAdminToken + "x", http.StatusForbidden, chat.CodeForbidden},
		{"prefix of the token", "Bearer " + testAdminToken[:5], http.StatusForbidden, chat.CodeForbidden},
		{"user token", n.user("u1"), http.StatusForbidden, chat.CodeForbidden},
	} {
		for _, rq := range adminRoutes {
			t.Run(tc.name+"/"+rq.method+" "+rq.path, func(t *testing.T) {
				rq.auth = tc.auth
				r := n.must(t, tc.status, rq)
				if e := r.error(t); e.Code != tc.code {
					t.Errorf("code %q, want %q", e.Code, tc.code)
				}
			})
		}
	}
	if got := n.svc.Directory().MaxConversationID(); got != 0 {
		t.Errorf("refused admin requests created conversation %d", got)
	}
}

func TestSendAndReadYourWrites(t *testing.T) {
	n := newNode(t, nodeOptions{})
	conv := n.createConversation(t, 0, "u1:client", "u2:worker")
	if conv != 1 {
		t.Fatalf("first conversation got id %d", conv)
	}

	m := n.send(t, "u1", conv, "Hello")
	if m.ID <= 0 || m.MessageID != m.ID || m.Seq != m.ID || m.ConversationID != conv || m.SenderID != "u1" ||
		m.SenderName != "Name of u1" || m.Text != "Hello" || m.Type != "TEXT" || m.CreatedAt == "" {
		t.Errorf("stored message %+v", m)
	}
	if _, err := time.Parse(time.RFC3339, m.CreatedAt); err != nil {
		t.Errorf("created_at: %v", err)
	}

	// The raw wire shape: the socket's message fields.
	r := n.must(t, http.StatusOK, req{method: "GET", path: "/api/conversations/1/messages", auth: n.user("u1")})
	var raw struct{ Messages []map[string]any }
	r.json(t, &raw)
	for _, k := range []string{"id", "conversation_id", "sender_id", "sender_name", "sender_avatar", "message", "type", "created_at", "message_id", "seq"} {
		if _, ok := raw.Messages[0][k]; !ok {
			t.Errorf("message has no %q: %v", k, raw.Messages[0])
		}
	}
	if r.header.Get(StaleHeader) != "" {
		t.Errorf("fresh read marked stale")
	}

	// POST then immediate GETs include it, for the sender and the other member.
	for i := range 20 {
		m := n.send(t, "u1", conv, fmt.Sprintf("burst %d", i))
		if got := n.messages(t, "u1", conv, "?limit=1"); len(got) != 1 || got[0].ID != m.ID {
			t.Fatalf("after POST %d, GET newest = %v", m.ID, ids(got))
		}
		cs := n.conversations(t, "u1")
		if len(cs) != 1 || cs[0].LastMessage == nil || cs[0].LastMessage.ID != m.ID {
			t.Fatalf("after POST %d, conversations = %+v", m.ID, cs)
		}
	}

	// A message sent by chat.Service directly (as the socket does) is seen
	// by the sender's next GET.
	for i := range 20 {
		sent, err := n.svc.Send(context.Background(), chat.Sender{UserID: "u2", Name: "Two"},
			chat.SendRequest{ConversationID: conv, Text: fmt.Sprintf("from the socket %d", i)})
		seq := sent.ID
		if err != nil {
			t.Fatal(err)
		}
		if got := n.messages(t, "u2", conv, "?limit=1"); len(got) != 1 || got[0].ID != int64(seq) {
			t.Fatalf("after Send %d, GET newest = %v", seq, ids(got))
		}
		cs := n.conversations(t, "u2")
		if len(cs) != 1 || cs[0].LastMessage == nil || cs[0].LastMessage.ID != int64(seq) {
			t.Fatalf("after Send %d, conversations = %+v", seq, cs)
		}
	}

	// u1 has 20 unread from u2; u2 21 from u1.
	if cs := n.conversations(t, "u1"); cs[0].Unread != 20 {
		t.Errorf("u1 unread %d, want 20", cs[0].Unread)
	}
	if cs := n.conversations(t, "u2"); cs[0].Unread != 21 {
		t.Errorf("u2 unread %d, want 21", cs[0].Unread)
	}
}

func TestConversationsNewestFirst(t *testing.T) {
	n := newNode(t, nodeOptions{})
	if cs := n.conversations(t, "u1"); cs == nil || len(cs) != 0 {
		t.Fatalf("no conversations: %v", cs)
	}
	r := n.must(t, http.StatusOK, req{method: "GET", path: "/api/conversations", auth: n.user("u1")})
	if strings.TrimSpace(string(r.body)) != `{"conversations":[]}` {
		t.Errorf("empty list body %s", r.body)
	}
	a := n.createConversation(t, 10, "u1:client", "u2:worker")
	b := n.createConversation(t, 20, "u1:client", "u3:worker")
	c := n.createConversation(t, 0, "u2:client", "u3:member") // not u1's
	if c != 21 {
		t.Errorf("next free id %d, want 21", c)
	}
	if got := convIDs(n.conversations(t, "u1")); !slices.Equal(got, []int64{b, a}) {
		t.Errorf("u1 conversations %v, want [%d %d]", got, b, a)
	}
	n.send(t, "u2", a, "bump")
	cs := n.conversations(t, "u1")
	if got := convIDs(cs); !slices.Equal(got, []int64{a, b}) {
		t.Errorf("after a message in %d: %v", a, got)
	}
	if cs[0].Unread != 1 || cs[0].LastMessage == nil || cs[0].LastMessage.Text != "bump" || cs[1].LastMessage != nil {
		t.Errorf("conversations %+v", cs)
	}
	want := []projections.Member{{UserID: "u1", Role: "client"}, {UserID: "u2", Role: "worker"}}
	if !slices.Equal(cs[0].Members, want) {
		t.Errorf("members %v, want %v", cs[0].Members, want)
	}
}

func TestHistoryPaging(t *testing.T) {
	n := newNode(t, nodeOptions{})
	conv := n.createConversation(t, 1, "u1", "u2")
	var sent []int64
	for i := range 60 {
		sent = append(sent, n.send(t, "u1", conv, fmt.Sprintf("m%d", i)).ID)
	}
	slices.Reverse(sent) // newest first
	if got := ids(n.messages(t, "u2", conv, "")); !slices.Equal(got, sent[:DefaultLimit]) {
		t.Errorf("default page %v", got)
	}
	if got := ids(n.messages(t, "u2", conv, "?limit=200")); !slices.Equal(got, sent) {
		t.Errorf("limit=200 %v", got)
	}
	page := n.messages(t, "u2", conv, "?limit=7")
	if !slices.Equal(ids(page), sent[:7]) {
		t.Errorf("limit=7 %v", ids(page))
	}
	next := n.messages(t, "u2", conv, fmt.Sprintf("?limit=7&before=%d", page[6].ID))
	if !slices.Equal(ids(next), sent[7:14]) {
		t.Errorf("second page %v, want %v", ids(next), sent[7:14])
	}
	if got := n.messages(t, "u2", conv, "?before=1"); len(got) != 0 {
		t.Errorf("before=1: %v", ids(got))
	}
}

func TestHistoryRefused(t *testing.T) {
	n := newNode(t, nodeOptions{})
	n.createConversation(t, 1, "u1", "u2")
	n.createConversation(t, 2, "u3")
	for _, tc := range []struct {
		name   string
		path   string
		status int
		code   string
		says   string
	}{
		{"id not a number", "/api/conversations/abc/messages", 400, chat.CodeBadRequest, `"abc"`},
		{"id zero", "/api/conversations/0/messages", 400, chat.CodeBadRequest, "positive integer"},
		{"id negative", "/api/conversations/-1/messages", 400, chat.CodeBadRequest, "positive integer"},
		{"id with sign", "/api/conversations/+1/messages", 400, chat.CodeBadRequest, "positive integer"},
		{"id too large", "/api/conversations/99999999999999999999/messages", 400, chat.CodeBadRequest, "positive integer"},
		{"before not a number", "/api/conversations/1/messages?before=x", 400, chat.CodeBadRequest, "before"},
		{"before zero", "/api/conversations/1/messages?before=0", 400, chat.CodeBadRequest, "before"},
		{"before empty", "/api/conversations/1/messages?before=", 400, chat.CodeBadRequest, "before"},
		{"limit zero", "/api/conversations/1/messages?limit=0", 400, chat.CodeBadRequest, "limit"},
		{"limit over max", "/api/conversations/1/messages?limit=201", 400, chat.CodeBadRequest, "1 to 200"},
		{"limit negative", "/api/conversations/1/messages?limit=-5", 400, chat.CodeBadRequest, "limit"},
		{"limit float", "/api/conversations/1/messages?limit=1.5", 400, chat.CodeBadRequest, "limit"},
		{"not a member", "/api/conversations/2/messages", 403, chat.CodeForbidden, "not a member"},
		{"unknown conversation", "/api/conversations/3/messages", 404, chat.CodeNotFound, "not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := n.must(t, tc.status, req{method: "GET", path: tc.path, auth: n.user("u1")})
			if e := r.error(t); e.Code != tc.code || !strings.Contains(e.Error, tc.says) {
				t.Errorf("error %+v, want code %s saying %q", e, tc.code, tc.says)
			}
		})
	}
}

func TestSendRefused(t *testing.T) {
	n := newNode(t, nodeOptions{})
	n.createConversation(t, 1, "u1", "u2")
	n.createConversation(t, 2, "u3")
	big := `{"message":"` + strings.Repeat("x", DefaultMaxBodyBytes) + `"}`
	for _, tc := range []struct {
		name   string
		path   string
		body   string
		header map[string]string
		status int
		code   string
		says   string
	}{
		{"no body", "", "", nil, 400, chat.CodeBadRequest, "empty"},
		{"bad JSON", "", `{"message":`, nil, 400, chat.CodeBadRequest, "not valid JSON"},
		{"syntax error", "", `{"message" "x"}`, nil, 400, chat.CodeBadRequest, "not valid JSON at byte"},
		{"not an object", "", `["hi"]`, nil, 400, chat.CodeBadRequest, "JSON object"},
		{"unknown field", "", `{"message":"hi","conversation_id":1}`, nil, 400, chat.CodeBadRequest, `unknown field "conversation_id"`},
		{"trailing data", "", `{"message":"hi"} {"message":"again"}`, nil, 400, chat.CodeBadRequest, "after the JSON value"},
		{"trailing garbage", "", `{"message":"hi"}x`, nil, 400, chat.CodeBadRequest, "after the JSON value"},
		{"message wrong type", "", `{"message":5}`, nil, 400, chat.CodeBadRequest, `field "message" must be a string`},
		{"type wrong type", "", `{"message":"hi","type":true}`, nil, 400, chat.CodeBadRequest, `field "type" must be a string`},
		{"empty message", "", `{"message":""}`, nil, 400, chat.CodeBadRequest, "empty"},
		{"null message", "", `{"message":null}`, nil, 400, chat.CodeBadRequest, "empty"},
		{"unknown type", "", `{"message":"hi","type":"VIDEO"}`, nil, 400, chat.CodeBadRequest, "VIDEO"},
		{"system type", "", `{"message":"hi","type":"SYSTEM"}`, nil, 400, chat.CodeBadRequest, "SYSTEM"},
		{"text over limit", "", `{"message":"` + strings.Repeat("é", 4001) + `"}`, nil, 413, chat.CodeTooLarge, "4001 characters"},
		{"body over limit", "", big, nil, 413, chat.CodeTooLarge, "larger than the limit of 65536 bytes"},
		{"not JSON content type", "", `{"message":"hi"}`, map[string]string{"Content-Type": "text/plain"}, 400, chat.CodeBadRequest, "Content-Type"},
		{"idempotency key too long", "", `{"message":"hi"}`, map[string]string{IdempotencyHeader: strings.Repeat("k", 129)}, 400, chat.CodeBadRequest, "128"},
		{"bad id", "/api/conversations/x/messages", `{"message":"hi"}`, nil, 400, chat.CodeBadRequest, "positive integer"},
		{"not a member", "/api/conversations/2/messages", `{"message":"hi"}`, nil, 403, chat.CodeForbidden, "not a member"},
		{"unknown conversation", "/api/conversations/9/messages", `{"message":"hi"}`, nil, 404, chat.CodeNotFound, "not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := tc.path
			if path == "" {
				path = "/api/conversations/1/messages"
			}
			r := n.must(t, tc.status, req{method: "POST", path: path, auth: n.user("u1"), body: tc.body, header: tc.header})
			if e := r.error(t); e.Code != tc.code || !strings.Contains(e.Error, tc.says) {
				t.Errorf("error %+v, want code %s saying %q", e, tc.code, tc.says)
			}
		})
	}
	if msgs := n.messages(t, "u1", 1, ""); len(msgs) != 0 {
		t.Errorf("refused sends stored %v", ids(msgs))
	}
}

func TestIdempotencyKey(t *testing.T) {
	n := newNode(t, nodeOptions{})
	conv := n.createConversation(t, 1, "u1", "u2")
	post := func(user, key, text string) projections.Message {
		var m projections.Message
		n.must(t, http.StatusCreated, req{method: "POST", path: "/api/conversations/1/messages", auth: n.user(user),
			body: fmt.Sprintf(`{"message":%q,"type":"IMAGE"}`, text), header: map[string]string{IdempotencyHeader: key}}).json(t, &m)
		return m
	}
	first := post("u1", "k-1", "photo.png")
	again := post("u1", "k-1", "photo.png")
	if again.ID != first.ID || again.ClientMsgID != "k-1" || again.Type != "IMAGE" {
		t.Errorf("retry answered %+v, first %+v", again, first)
	}
	other := post("u2", "k-1", "same key, other user")
	fresh := post("u1", "k-2", "photo.png")
	if other.ID == first.ID || fresh.ID == first.ID || other.ID == fresh.ID {
		t.Errorf("distinct sends share ids: %d %d %d", first.ID, other.ID, fresh.ID)
	}
	got := n.messages(t, "u1", conv, "")
	if want := []int64{fresh.ID, other.ID, first.ID}; !slices.Equal(ids(got), want) {
		t.Errorf("stored %v, want %v", ids(got), want)
	}
}

func TestStaleAnswers(t *testing.T) {
	// The projector never runs: the read model stays behind every write.
	n := newNode(t, nodeOptions{noProjector: true, wait: 50 * time.Millisecond})
	n.createConversation(t, 1, "u1", "u2") // directory settles; the projection does not
	r := n.must(t, http.StatusAccepted, req{method: "POST", path: "/api/conversations/1/messages", auth: n.user("u1"), body: `{"message":"hi"}`})
	var s stored
	r.json(t, &s)
	if r.header.Get(StaleHeader) != "true" || s.ID == 0 || s.Seq != s.ID || s.MessageID != s.ID || s.ConversationID != 1 {
		t.Errorf("202 %+v, stale header %q", s, r.header.Get(StaleHeader))
	}
	r = n.must(t, http.StatusOK, req{method: "GET", path: "/api/conversations/1/messages", auth: n.user("u1")})
	if r.header.Get(StaleHeader) != "true" {
		t.Error("stale history not marked")
	}
	r = n.must(t, http.StatusOK, req{method: "GET", path: "/api/conversations", auth: n.user("u1")})
	if r.header.Get(StaleHeader) != "true" {
		t.Error("stale conversation list not marked")
	}
	// u2 wrote nothing: nothing to wait for, not stale.
	r = n.must(t, http.StatusOK, req{method: "GET", path: "/api/conversations", auth: n.user("u2")})
	if r.header.Get(StaleHeader) != "" {
		t.Error("a reader without writes marked stale")
	}
}

func TestAdminConversations(t *testing.T) {
	n := newNode(t, nodeOptions{})
	var c conversationResponse
	n.must(t, http.StatusCreated, req{method: "POST", path: "/api/admin/conversations", auth: n.admin(),
		body: `{"id":123,"members":[{"user_id":"u1","role":"client"},{"user_id":"u2","role":"worker"}]}`}).json(t, &c)
	if c.ID != 123 || c.Seq == 0 || len(c.Members) != 2 || c.Members[1].UserID != "u2" || c.Members[1].Role != "worker" {
		t.Errorf("created %+v", c)
	}
	// Visible to a member at once.
	if got := convIDs(n.conversations(t, "u2")); !slices.Equal(got, []int64{123}) {
		t.Errorf("u2 conversations %v", got)
	}
	r := n.must(t, http.StatusConflict, req{method: "POST", path: "/api/admin/conversations", auth: n.admin(),
		body: `{"id":123,"members":[{"user_id":"u9","role":"client"}]}`})
	if e := r.error(t); e.Code != chat.CodeConflict || !strings.Contains(e.Error, "123") {
		t.Errorf("409 %+v", e)
	}
	if got := n.svc.Directory().Members(123); !slices.Equal(got, []string{"u1", "u2"}) {
		t.Errorf("members after 409: %v", got)
	}
	n.must(t, http.StatusCreated, req{method: "POST", path: "/api/admin/conversations", auth: n.admin(),
		body: `{"members":[{"user_id":"u1","role":"member"}]}`}).json(t, &c)
	if c.ID != 124 {
		t.Errorf("next free id %d, want 124", c.ID)
	}

	for _, tc := range []struct {
		name, body string
		status     int
		says       string
	}{
		{"empty body", "", 400, "empty"},
		{"no members", `{"id":5}`, 400, "at least one member"},
		{"empty members", `{"members":[]}`, 400, "at least one member"},
		{"bad member id", `{"members":[{"user_id":"u 1","role":"client"}]}`, 400, `"u 1"`},
		{"member id with dot", `{"members":[{"user_id":"u.1","role":"client"}]}`, 400, `"u.1"`},
		{"member id too long", `{"members":[{"user_id":"` + strings.Repeat("u", 65) + `","role":"client"}]}`, 400, "[A-Za-z0-9_-]{1,64}"},
		{"bad role", `{"members":[{"user_id":"u1","role":"owner"}]}`, 400, `"owner"`},
		{"duplicate member", `{"members":[{"user_id":"u1","role":"client"},{"user_id":"u1","role":"worker"}]}`, 400, "twice"},
		{"negative id", `{"id":-4,"members":[{"user_id":"u1","role":"client"}]}`, 400, "positive integer"},
		{"id as string", `{"id":"5","members":[{"user_id":"u1","role":"client"}]}`, 400, `field "id" must be an integer`},
		{"id fractional", `{"id":1.5,"members":[{"user_id":"u1","role":"client"}]}`, 400, `field "id" must be an integer`},
		{"members not an array", `{"members":{"user_id":"u1"}}`, 400, `field "members" must be an array`},
		{"member id a number", `{"members":[{"user_id":7,"role":"client"}]}`, 400, `field "members[0].user_id" must be a string`},
		{"unknown field", `{"members":[{"user_id":"u1","role":"client"}],"title":"x"}`, 400, `unknown field "title"`},
		{"unknown member field", `{"members":[{"user_id":"u1","role":"client","admin":true}]}`, 400, `unknown field "members[0].admin"`},
		{"trailing data", `{"members":[{"user_id":"u1","role":"client"}]}]`, 400, "after the JSON value"},
		{"too large", `{"members":[` + strings.Repeat(`{"user_id":"u1","role":"client"},`, 3000) + `]}`, 413, "larger than the limit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := n.must(t, tc.status, req{method: "POST", path: "/api/admin/conversations", auth: n.admin(), body: tc.body})
			if e := r.error(t); !strings.Contains(e.Error, tc.says) {
				t.Errorf("error %+v, want it to say %q", e, tc.says)
			}
		})
	}
	if got := n.svc.Directory().MaxConversationID(); got != 124 {
		t.Errorf("refused creates moved the max id to %d", got)
	}
}

func TestAdminMembers(t *testing.T) {
	n := newNode(t, nodeOptions{})
	n.createConversation(t, 1, "u1:client", "u2:worker")

	var mr memberResponse
	n.must(t, http.StatusOK, req{method: "POST", path: "/api/admin/conversations/1/members", auth: n.admin(),
		body: `{"user_id":"u3","role":"member"}`}).json(t, &mr)
	if mr.ConversationID != 1 || mr.UserID != "u3" || mr.Role != "member" || mr.Seq == 0 {
		t.Errorf("added %+v", mr)
	}
	// The new member can read and send at once.
	if got := convIDs(n.conversations(t, "u3")); !slices.Equal(got, []int64{1}) {
		t.Errorf("u3 conversations %v", got)
	}
	n.send(t, "u3", 1, "joined")

	n.must(t, http.StatusOK, req{method: "DELETE", path: "/api/admin/conversations/1/members/u2", auth: n.admin()}).json(t, &mr)
	if mr.ConversationID != 1 || mr.UserID != "u2" || mr.Seq == 0 {
		t.Errorf("removed %+v", mr)
	}
	if got := n.conversations(t, "u2"); len(got) != 0 {
		t.Errorf("removed member still lists %v", convIDs(got))
	}
	r := n.must(t, http.StatusForbidden, req{method: "GET", path: "/api/conversations/1/messages", auth: n.user("u2")})
	r.error(t)
	n.must(t, http.StatusForbidden, req{method: "POST", path: "/api/conversations/1/messages", auth: n.user("u2"), body: `{"message":"still here?"}`})

	for _, tc := range []struct {
		name, method, path, body string
		status                   int
		says                     string
	}{
		{"add: unknown conversation", "POST", "/api/admin/conversations/9/members", `{"user_id":"u3","role":"member"}`, 404, "not found"},
		{"add: bad conversation id", "POST", "/api/admin/conversations/x/members", `{"user_id":"u3","role":"member"}`, 400, "positive integer"},
		{"add: bad user id", "POST", "/api/admin/conversations/1/members", `{"user_id":"u/3","role":"member"}`, 400, `"u/3"`},
		{"add: no user id", "POST", "/api/admin/conversations/1/members", `{"role":"member"}`, 400, `""`},
		{"add: bad role", "POST", "/api/admin/conversations/1/members", `{"user_id":"u3","role":"boss"}`, 400, `"boss"`},
		{"add: no role", "POST", "/api/admin/conversations/1/members", `{"user_id":"u3"}`, 400, "role"},
		{"add: unknown field", "POST", "/api/admin/conversations/1/members", `{"user_id":"u3","role":"member","x":1}`, 400, `unknown field "x"`},
		{"add: bad JSON", "POST", "/api/admin/conversations/1/members", `{"user_id":`, 400, "not valid JSON"},
		{"add: trailing", "POST", "/api/admin/conversations/1/members", `{"user_id":"u3","role":"member"}{}`, 400, "after the JSON value"},
		{"add: wrong type", "POST", "/api/admin/conversations/1/members", `{"user_id":["u3"],"role":"member"}`, 400, `field "user_id" must be a string`},
		{"remove: not a member", "DELETE", "/api/admin/conversations/1/members/u2", "", 404, "not a member"},
		{"remove: unknown conversation", "DELETE", "/api/admin/conversations/9/members/u1", "", 404, "not found"},
		{"remove: bad user id", "DELETE", "/api/admin/conversations/1/members/u%201", "", 400, `"u 1"`},
		{"remove: bad conversation id", "DELETE", "/api/admin/conversations/0/members/u1", "", 400, "positive integer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := n.must(t, tc.status, req{method: tc.method, path: tc.path, auth: n.admin(), body: tc.body})
			if e := r.error(t); !strings.Contains(e.Error, tc.says) {
				t.Errorf("error %+v, want it to say %q", e, tc.says)
			}
		})
	}
}

func TestAdminProfiles(t *testing.T) {
	n := newNode(t, nodeOptions{})
	n.createConversation(t, 1, "u1", "u2")
	var p profileResponse
	n.must(t, http.StatusOK, req{method: "PUT", path: "/api/admin/profiles/u1", auth: n.admin(),
		body: `{"name":"John Doe","avatar":"https://example.com/a.png"}`}).json(t, &p)
	if p.UserID != "u1" || p.Name != "John Doe" || p.Avatar == nil || *p.Avatar != "https://example.com/a.png" || p.Seq == 0 {
		t.Errorf("profile %+v", p)
	}
	// A profile set by the service wins over the token's name.
	m := n.send(t, "u1", 1, "hi")
	if m.SenderName != "John Doe" || m.SenderAvatar == nil || *m.SenderAvatar != "https://example.com/a.png" {
		t.Errorf("message sender %q %v", m.SenderName, m.SenderAvatar)
	}
	n.must(t, http.StatusOK, req{method: "PUT", path: "/api/admin/profiles/u2", auth: n.admin(), body: `{"name":"No Avatar"}`}).json(t, &p)
	if p.Avatar != nil {
		t.Errorf("avatar %v", *p.Avatar)
	}
	for _, tc := range []struct {
		name, path, body string
		status           int
		says             string
	}{
		{"empty name", "/api/admin/profiles/u1", `{"name":""}`, 400, "name"},
		{"no name", "/api/admin/profiles/u1", `{"avatar":"https://x"}`, 400, "name"},
		{"name too long", "/api/admin/profiles/u1", `{"name":"` + strings.Repeat("n", 201) + `"}`, 400, "1 to 200"},
		{"avatar too long", "/api/admin/profiles/u1", `{"name":"n","avatar":"` + strings.Repeat("a", 2049) + `"}`, 400, "2048"},
		{"avatar wrong type", "/api/admin/profiles/u1", `{"name":"n","avatar":1}`, 400, `field "avatar" must be a string`},
		{"bad user id", "/api/admin/profiles/u@1", `{"name":"n"}`, 400, `"u@1"`},
		{"unknown field", "/api/admin/profiles/u1", `{"name":"n","email":"e"}`, 400, `unknown field "email"`},
		{"bad JSON", "/api/admin/profiles/u1", `{name:"n"}`, 400, "not valid JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := n.must(t, tc.status, req{method: "PUT", path: tc.path, auth: n.admin(), body: tc.body})
			if e := r.error(t); !strings.Contains(e.Error, tc.says) {
				t.Errorf("error %+v, want it to say %q", e, tc.says)
			}
		})
	}
}

func TestAdminSystemMessages(t *testing.T) {
	n := newNode(t, nodeOptions{})
	n.createConversation(t, 1, "u1", "u2")
	var m projections.Message
	n.must(t, http.StatusCreated, req{method: "POST", path: "/api/admin/conversations/1/messages", auth: n.admin(),
		body: `{"message":"Job accepted"}`}).json(t, &m)
	if m.ID == 0 || m.SenderID != "system" || m.Type != "SYSTEM" || m.Text != "Job accepted" || m.ConversationID != 1 {
		t.Errorf("system message %+v", m)
	}
	if got := n.messages(t, "u1", 1, ""); len(got) != 1 || got[0].ID != m.ID {
		t.Errorf("history %v", ids(got))
	}
	for _, tc := range []struct {
		name, path, body string
		status           int
		says             string
	}{
		{"empty", "/api/admin/conversations/1/messages", `{"message":""}`, 400, "empty"},
		{"too long", "/api/admin/conversations/1/messages", `{"message":"` + strings.Repeat("x", 4001) + `"}`, 413, "limit"},
		{"type not accepted", "/api/admin/conversations/1/messages", `{"message":"x","type":"TEXT"}`, 400, `unknown field "type"`},
		{"unknown conversation", "/api/admin/conversations/5/messages", `{"message":"x"}`, 404, "not found"},
		{"bad id", "/api/admin/conversations/1x/messages", `{"message":"x"}`, 400, "positive integer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := n.must(t, tc.status, req{method: "POST", path: tc.path, auth: n.admin(), body: tc.body})
			if e := r.error(t); !strings.Contains(e.Error, tc.says) {
				t.Errorf("error %+v, want it to say %q", e, tc.says)
			}
		})
	}
}

func TestAdminJobs(t *testing.T) {
	n := newNode(t, nodeOptions{})
	var j jobResponse
	n.must(t, http.StatusCreated, req{method: "POST", path: "/api/admin/jobs", auth: n.admin(),
		body: `{"id":55,"members":["u1","u2"]}`}).json(t, &j)
	if j.ID != 55 || !slices.Equal(j.Members, []string{"u1", "u2"}) || j.Seq == 0 {
		t.Errorf("job %+v", j)
	}
	if !n.svc.Directory().IsJobMember(55, "u2") {
		t.Error("job member not in the directory")
	}
	n.must(t, http.StatusCreated, req{method: "POST", path: "/api/admin/jobs", auth: n.admin(), body: `{}`}).json(t, &j)
	if j.ID != 56 || j.Members == nil || len(j.Members) != 0 {
		t.Errorf("auto job %+v", j)
	}
	r := n.must(t, http.StatusConflict, req{method: "POST", path: "/api/admin/jobs", auth: n.admin(), body: `{"id":55,"members":["u3"]}`})
	if e := r.error(t); e.Code != chat.CodeConflict {
		t.Errorf("409 %+v", e)
	}

	var s jobStatusResponse
	n.must(t, http.StatusCreated, req{method: "POST", path: "/api/admin/jobs/55/status", auth: n.admin(),
		body: `{"status":"accepted","detail":{"by":"u2","eta":15}}`}).json(t, &s)
	if s.JobID != 55 || s.Status != "accepted" || s.Seq == 0 {
		t.Errorf("status %+v", s)
	}
	var detail map[string]any
	if err := json.Unmarshal(s.Detail, &detail); err != nil || detail["by"] != "u2" {
		t.Errorf("detail %s", s.Detail)
	}
	n.must(t, http.StatusCreated, req{method: "POST", path: "/api/admin/jobs/55/status", auth: n.admin(), body: `{"status":"done"}`}).json(t, &s)
	if string(s.Detail) != "{}" {
		t.Errorf("absent detail answered %s", s.Detail)
	}

	for _, tc := range []struct {
		name, path, body string
		status           int
		says             string
	}{
		{"job: bad member id", "/api/admin/jobs", `{"members":["u1","bad id"]}`, 400, `"bad id"`},
		{"job: members not strings", "/api/admin/jobs", `{"members":[1]}`, 400, `field "members[0]" must be a string`},
		{"job: negative id", "/api/admin/jobs", `{"id":-1}`, 400, "positive integer"},
		{"job: unknown field", "/api/admin/jobs", `{"name":"x"}`, 400, `unknown field "name"`},
		{"status: unknown job", "/api/admin/jobs/77/status", `{"status":"x"}`, 404, "job 77 not found"},
		{"status: empty", "/api/admin/jobs/55/status", `{"status":""}`, 400, "status"},
		{"status: too long", "/api/admin/jobs/55/status", `{"status":"` + strings.Repeat("s", 65) + `"}`, 400, "1 to 64"},
		{"status: detail not an object", "/api/admin/jobs/55/status", `{"status":"x","detail":[1]}`, 400, `"detail" must be a JSON object`},
		{"status: detail a string", "/api/admin/jobs/55/status", `{"status":"x","detail":"d"}`, 400, `"detail" must be a JSON object`},
		{"status: bad job id", "/api/admin/jobs/zero/status", `{"status":"x"}`, 400, "positive integer"},
		{"status: unknown field", "/api/admin/jobs/55/status", `{"status":"x","extra":1}`, 400, `unknown field "extra"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := n.must(t, tc.status, req{method: "POST", path: tc.path, auth: n.admin(), body: tc.body})
			if e := r.error(t); !strings.Contains(e.Error, tc.says) {
				t.Errorf("error %+v, want it to say %q", e, tc.says)
			}
		})
	}
}

// requests is the count of route's requests answered with code.
func (n *node) requests(t *testing.T, route, code string) float64 {
	t.Helper()
	var m dto.Metric
	if err := n.metrics.HTTPRequests.WithLabelValues(route, code).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
