package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"inbox/auth"
	"inbox/chat"
	"inbox/eventstore"
	"inbox/feed"
	"inbox/internal/testnats"
	"inbox/metrics"
	"inbox/projections"
)

const (
	testSecret     = "httpapi-test-secret-0123456789abcdef"
	testAdminToken = "httpapi-test-admin-token"
)

// node is one inbox node for the API tests: a real nats-server, the INBOX
// stream, a SQLite projection in t.TempDir() kept by a running projector, the
// membership directory fed by the stream, and the API on an httptest server.
type node struct {
	t        *testing.T
	srv      *httptest.Server
	mux      *http.ServeMux
	svc      *chat.Service
	store    *eventstore.Store
	db       *projections.DB
	proj     *projections.Projector
	metrics  *metrics.Metrics
	minter   *auth.Minter
	notReady atomic.Pointer[error]
}

type nodeOptions struct {
	noProjector bool          // never start the projector: every read is stale
	wait        time.Duration // Config.ConsistencyWait
	presence    Presence      // Deps.Presence
	userBurst   int           // Config.UserBurst, refilled at 1 a day; 0: no practical limit
	log         *slog.Logger  // Deps.Logger; nil: the test's output, from debug up
	origins     []string      // auth.Config.AllowedOrigins
	deps        func(*Deps)   // changes the dependencies before New
}

func newNode(t *testing.T, opt nodeOptions) *node {
	t.Helper()
	ns := testnats.Server(t)
	st := testnats.Store(t, ns)
	db, err := projections.Open(filepath.Join(t.TempDir(), "inbox.db"))
	if err != nil {
		t.Fatalf("open projection: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	proj := projections.NewProjector(projections.ProjectorConfig{Name: "httpapi"}, projections.ProjectorDeps{DB: db, Store: st})
	dir := chat.NewDirectory()

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	if !opt.noProjector {
		wg.Go(func() {
			if err := proj.Run(ctx); err != nil {
				t.Errorf("projector: %v", err)
			}
		})
	}
	live := feed.New(feed.Config{}, feed.Deps{Source: st, Directory: dir})
	wg.Go(func() {
		_ = live.Run(ctx, feed.Discard) // the API has no sockets: the feed keeps the directory current
	})
	t.Cleanup(func() { cancel(); wg.Wait() })

	svc := chat.New(chat.Limits{}, chat.Deps{Store: st, Locator: st, Directory: dir, ReadModel: proj})
	verifier, err := auth.NewVerifier(auth.Config{Secret: testSecret, AllowedOrigins: opt.origins})
	if err != nil {
		t.Fatal(err)
	}
	minter, err := auth.NewMinter(auth.MinterConfig{Secret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	admin, err := auth.NewAdminToken(testAdminToken)
	if err != nil {
		t.Fatal(err)
	}
	if opt.log == nil {
		opt.log = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	n := &node{t: t, svc: svc, store: st, db: db, proj: proj, minter: minter,
		metrics: metrics.New(metrics.Sources{})}
	cfg := Config{ConsistencyWait: opt.wait, UserRate: 1e6, UserBurst: 1e6}
	if opt.userBurst > 0 {
		cfg.UserRate, cfg.UserBurst = 1.0/(24*60*60), opt.userBurst
	}
	deps := Deps{
		Service: svc, Verifier: verifier, Admin: admin, DB: db, Projection: proj, Metrics: n.metrics, Presence: opt.presence,
		Logger: opt.log,
		Ready: func(context.Context) error {
			if p := n.notReady.Load(); p != nil {
				return *p
			}
			return nil
		},
	}
	if opt.deps != nil {
		opt.deps(&deps)
	}
	h := New(cfg, deps)
	n.mux = h.(*http.ServeMux)
	n.srv = httptest.NewServer(h)
	t.Cleanup(n.srv.Close)
	return n
}

// token mints a user token valid for a minute.
func (n *node) token(user string) string {
	n.t.Helper()
	tok, err := n.minter.Mint(user, "Name of "+user, time.Minute)
	if err != nil {
		n.t.Fatal(err)
	}
	return tok
}

// response is one HTTP answer.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

// errorBody decodes an error response and checks its shape.
func (r response) error(t *testing.T) errorBody {
	t.Helper()
	var e errorBody
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil || e.Error == "" || e.Code == "" {
		t.Fatalf("status %d: not an error body (%v): %s", r.status, err, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("error Content-Type %q", ct)
	}
	return e
}

// req is a request to send: auth is the whole Authorization header value
// ("" for none), body is sent as is.
type req struct {
	method, path string
	auth         string
	body         string
	header       map[string]string
}

func bearer(tok string) string { return "Bearer " + tok }

func (n *node) admin() string { return bearer(testAdminToken) }

func (n *node) user(u string) string { return bearer(n.token(u)) }

// do sends rq and checks the answer against the OpenAPI document: its
// status must be documented for the route, and a JSON body must have what the
// documented schema requires.
func (n *node) do(t *testing.T, rq req) response {
	t.Helper()
	var body io.Reader
	if rq.body != "" {
		body = strings.NewReader(rq.body)
	}
	hr, err := http.NewRequest(rq.method, n.srv.URL+rq.path, body)
	if err != nil {
		t.Fatal(err)
	}
	if rq.auth != "" {
		hr.Header.Set("Authorization", rq.auth)
	}
	if rq.body != "" {
		hr.Header.Set("Content-Type", "application/json")
	}
	for k, v := range rq.header {
		hr.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(hr)
	if err != nil {
		t.Fatalf("%s %s: %v", rq.method, rq.path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	r := response{status: resp.StatusCode, header: resp.Header, body: b}
	if _, pattern := n.mux.Handler(hr); pattern != "/" && pattern != "" {
		method, path, _ := strings.Cut(pattern, " ")
		if errs := conform(testDoc(t), path, method, r); len(errs) > 0 {
			t.Errorf("%s %s → %d does not match the OpenAPI document:\n  %s\nbody: %s", rq.method, rq.path, r.status, strings.Join(errs, "\n  "), b)
		}
	}
	return r
}

// must sends rq and fails unless the status is want.
func (n *node) must(t *testing.T, want int, rq req) response {
	t.Helper()
	r := n.do(t, rq)
	if r.status != want {
		t.Fatalf("%s %s: status %d, want %d: %s", rq.method, rq.path, r.status, want, r.body)
	}
	return r
}

// createConversation creates conversation id (0: the next) with members as
// "user:role" and returns its id.
func (n *node) createConversation(t *testing.T, id int64, members ...string) int64 {
	t.Helper()
	var ms []string
	for _, m := range members {
		u, role, _ := strings.Cut(m, ":")
		if role == "" {
			role = "member"
		}
		ms = append(ms, fmt.Sprintf(`{"user_id":%q,"role":%q}`, u, role))
	}
	body := `{"members":[` + strings.Join(ms, ",") + `]}`
	if id != 0 {
		body = `{"id":` + strconv.FormatInt(id, 10) + `,"members":[` + strings.Join(ms, ",") + `]}`
	}
	var out conversationResponse
	n.must(t, http.StatusCreated, req{method: "POST", path: "/api/admin/conversations", auth: n.admin(), body: body}).json(t, &out)
	return out.ID
}

// send posts a message as user and returns the stored message.
func (n *node) send(t *testing.T, user string, conv int64, text string) projections.Message {
	t.Helper()
	var m projections.Message
	n.must(t, http.StatusCreated, req{method: "POST", path: fmt.Sprintf("/api/conversations/%d/messages", conv),
		auth: n.user(user), body: fmt.Sprintf(`{"message":%q}`, text)}).json(t, &m)
	return m
}

// messages lists conv's history as user.
func (n *node) messages(t *testing.T, user string, conv int64, query string) []projections.Message {
	t.Helper()
	var out messagesResponse
	n.must(t, http.StatusOK, req{method: "GET", path: fmt.Sprintf("/api/conversations/%d/messages%s", conv, query),
		auth: n.user(user)}).json(t, &out)
	return out.Messages
}

// conversations lists user's conversations.
func (n *node) conversations(t *testing.T, user string) []projections.Conversation {
	t.Helper()
	var out conversationsResponse
	n.must(t, http.StatusOK, req{method: "GET", path: "/api/conversations", auth: n.user(user)}).json(t, &out)
	return out.Conversations
}

func ids(msgs []projections.Message) []int64 {
	out := make([]int64, len(msgs))
	for i, m := range msgs {
		out[i] = m.ID
	}
	return out
}

func convIDs(cs []projections.Conversation) []int64 {
	out := make([]int64, len(cs))
	for i, c := range cs {
		out[i] = c.ID
	}
	return out
}
