package httpapi

// Tests of the routes and headers the web console relies on: CORS for
// allowed origins, GET /api/session, the admin status and disconnect, and
// the development sign-in.

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"inbox/internal/logring"
	"inbox/metrics"
)

const (
	appOrigin  = "https://app.example"
	evilOrigin = "https://evil.example"
)

var corsHeaders = []string{
	"Access-Control-Allow-Origin", "Access-Control-Allow-Credentials", "Access-Control-Allow-Methods",
	"Access-Control-Allow-Headers", "Access-Control-Max-Age", "Access-Control-Expose-Headers",
}

func noCORS(t *testing.T, what string, h http.Header) {
	t.Helper()
	for _, k := range corsHeaders {
		if v := h.Get(k); v != "" {
			t.Errorf("%s: %s: %q, want no CORS header", what, k, v)
		}
	}
}

func TestCORSPreflight(t *testing.T) {
	n := newNode(t, nodeOptions{origins: []string{appOrigin}})
	preflight := func(origin, path string) response {
		return n.do(t, req{method: "OPTIONS", path: path, header: map[string]string{
			"Origin": origin, "Access-Control-Request-Method": "POST",
			"Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
		}})
	}

	r := preflight(appOrigin, "/api/conversations/7/messages")
	if r.status != http.StatusNoContent {
		t.Fatalf("preflight from an allowed origin: %d %s, want 204", r.status, r.body)
	}
	want := map[string]string{
		"Access-Control-Allow-Origin":      appOrigin,
		"Access-Control-Allow-Credentials": "true",
		"Access-Control-Allow-Methods":     "GET, POST",
		"Access-Control-Allow-Headers":     "Authorization, Content-Type, Idempotency-Key",
		"Access-Control-Max-Age":           "600",
	}
	for k, v := range want {
		if got := r.header.Get(k); got != v {
			t.Errorf("%s: %q, want %q", k, got, v)
		}
	}
	if !slices.Contains(r.header.Values("Vary"), "Origin") {
		t.Errorf("Vary %q lacks Origin", r.header.Values("Vary"))
	}

	// Another origin gets nothing: OPTIONS stays an unsupported method.
	r = preflight(evilOrigin, "/api/conversations/7/messages")
	if r.status != http.StatusMethodNotAllowed {
		t.Errorf("preflight from another origin: %d, want 405", r.status)
	}
	noCORS(t, "preflight from another origin", r.header)
	// So does an allowed origin on an unknown path: 404.
	if r = preflight(appOrigin, "/api/nope"); r.status != http.StatusNotFound {
		t.Errorf("preflight of an unknown path: %d, want 404", r.status)
	}
}

func TestCORSCookieRequests(t *testing.T) {
	n := newNode(t, nodeOptions{origins: []string{appOrigin}})
	conv := n.createConversation(t, 0, "alice", "bob")
	n.send(t, "bob", conv, "hello")
	cookie := map[string]string{"Cookie": "inbox_token=" + n.token("alice")}

	withOrigin := func(origin string) map[string]string {
		h := map[string]string{"Origin": origin}
		for k, v := range cookie {
			h[k] = v
		}
		return h
	}
	r := n.must(t, http.StatusOK, req{method: "GET", path: "/api/conversations", header: withOrigin(appOrigin)})
	if got := r.header.Get("Access-Control-Allow-Origin"); got != appOrigin {
		t.Errorf("Access-Control-Allow-Origin %q, want %q", got, appOrigin)
	}
	if got := r.header.Get("Access-Control-Allow-Credentials"); got != "true" {
		t.Errorf("Access-Control-Allow-Credentials %q", got)
	}
	if got := r.header.Get("Access-Control-Expose-Headers"); !strings.Contains(got, StaleHeader) {
		t.Errorf("Access-Control-Expose-Headers %q lacks %s", got, StaleHeader)
	}
	// The caller's origin is echoed exactly, whatever the configured spelling.
	r = n.must(t, http.StatusOK, req{method: "GET", path: "/api/conversations", header: withOrigin("https://APP.example:443")})
	if got := r.header.Get("Access-Control-Allow-Origin"); got != "https://APP.example:443" {
		t.Errorf("Access-Control-Allow-Origin %q, want the request's Origin", got)
	}

	r = n.must(t, http.StatusUnauthorized, req{method: "GET", path: "/api/conversations", header: withOrigin(evilOrigin)})
	noCORS(t, "a cookie request from another origin", r.header)
	if e := r.error(t); !strings.Contains(e.Error, "origin") {
		t.Errorf("refusal %q does not name the origin", e.Error)
	}
}

func TestSession(t *testing.T) {
	n := newNode(t, nodeOptions{origins: []string{appOrigin}})
	var s sessionResponse
	n.must(t, http.StatusOK, req{method: "GET", path: "/api/session", auth: n.user("alice")}).json(t, &s)
	if s.UserID != "alice" || s.Name != "Name of alice" || time.Until(s.ExpiresAt) <= 0 || time.Until(s.ExpiresAt) > time.Minute {
		t.Errorf("session %+v", s)
	}
	// The same credentials a socket takes: the token query parameter too.
	n.must(t, http.StatusOK, req{method: "GET", path: "/api/session?token=" + n.token("bob")}).json(t, &s)
	if s.UserID != "bob" {
		t.Errorf("session by ?token=: %+v", s)
	}

	expired := signed(t, testSecret, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(-time.Hour).Unix()})
	for _, c := range []struct {
		name string
		rq   req
		want string
	}{
		{"expired", req{auth: bearer(expired)}, "token expired"},
		{"none", req{}, "no token"},
		{"bad signature", req{auth: bearer(signed(t, "another-secret-entirely-0123456789", jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix()}))}, "invalid token signature"},
		{"cookie from another origin", req{header: map[string]string{"Origin": evilOrigin, "Cookie": "inbox_token=" + n.token("alice")}}, "cookie token not accepted from this origin"},
	} {
		c.rq.method, c.rq.path = "GET", "/api/session"
		e := n.must(t, http.StatusUnauthorized, c.rq).error(t)
		if e.Code != CodeUnauthorized || !strings.Contains(e.Error, c.want) {
			t.Errorf("%s: %+v, want code unauthorized and a reason with %q", c.name, e, c.want)
		}
	}
}

type fakeSockets map[string]int

func (f fakeSockets) Disconnect(user string) int { n := f[user]; delete(f, user); return n }

func TestAdminStatusAndDisconnect(t *testing.T) {
	ring := logring.New(5)
	status := func(ctx context.Context) (Status, error) {
		return Status{Node: "n1", Streams: []StreamStatus{{Name: "INBOX", Subjects: []string{"inbox.>"}, Replicas: 1, Messages: 3, LastSeq: 3, FirstSeq: 1}},
			Totals: metrics.Totals{Appends: 3}, Errors: ring.Entries()}, nil
	}
	socks := fakeSockets{"alice": 2}
	n := newNode(t, nodeOptions{deps: func(d *Deps) { d.Status, d.Sockets = status, socks }})

	n.must(t, http.StatusUnauthorized, req{method: "GET", path: "/api/admin/status"})
	n.must(t, http.StatusForbidden, req{method: "GET", path: "/api/admin/status", auth: bearer("wrong")})
	n.must(t, http.StatusForbidden, req{method: "GET", path: "/api/admin/status", auth: n.user("alice")})
	var s Status
	n.must(t, http.StatusOK, req{method: "GET", path: "/api/admin/status", auth: n.admin()}).json(t, &s)
	if s.Node != "n1" || len(s.Streams) != 1 || s.Streams[0].Messages != 3 || s.Totals.Appends != 3 || s.Errors == nil {
		t.Errorf("status %+v", s)
	}

	var d disconnectResponse
	n.must(t, http.StatusOK, req{method: "POST", path: "/api/admin/users/alice/disconnect", auth: n.admin()}).json(t, &d)
	if d.UserID != "alice" || d.Sockets != 2 {
		t.Errorf("disconnect: %+v, want alice's 2 sockets", d)
	}
	n.must(t, http.StatusOK, req{method: "POST", path: "/api/admin/users/alice/disconnect", auth: n.admin()}).json(t, &d)
	if d.Sockets != 0 {
		t.Errorf("second disconnect closed %d", d.Sockets)
	}
	n.must(t, http.StatusBadRequest, req{method: "POST", path: "/api/admin/users/a%20b/disconnect", auth: n.admin()})
	n.must(t, http.StatusUnauthorized, req{method: "POST", path: "/api/admin/users/alice/disconnect"})

	// Without a source both answer 503.
	bare := newNode(t, nodeOptions{})
	bare.must(t, http.StatusServiceUnavailable, req{method: "GET", path: "/api/admin/status", auth: bare.admin()})
	bare.must(t, http.StatusServiceUnavailable, req{method: "POST", path: "/api/admin/users/alice/disconnect", auth: bare.admin()})
}

type fakeDev struct{}

func (fakeDev) Users(limit int) []DevUser {
	return []DevUser{{UserID: "alice", Name: "Alice"}, {UserID: "bob"}}[:min(limit, 2)]
}

func (fakeDev) Mint(user string) (string, time.Time, error) {
	if user == "broken" {
		return "", time.Time{}, errors.New("mint broke")
	}
	return "token-of-" + user, time.Now().Add(time.Hour), nil
}

func TestDevSignIn(t *testing.T) {
	n := newNode(t, nodeOptions{deps: func(d *Deps) { d.Dev = fakeDev{} }})
	var users devUsersResponse
	n.must(t, http.StatusOK, req{method: "GET", path: "/api/dev/users"}).json(t, &users)
	if len(users.Users) != 2 || users.Users[0].UserID != "alice" {
		t.Errorf("users %+v", users)
	}
	var tok devTokenResponse
	n.must(t, http.StatusOK, req{method: "POST", path: "/api/dev/token", body: `{"user_id":"carol"}`}).json(t, &tok)
	if tok.UserID != "carol" || tok.Token != "token-of-carol" || tok.ExpiresAt.IsZero() {
		t.Errorf("token %+v", tok)
	}
	n.must(t, http.StatusBadRequest, req{method: "POST", path: "/api/dev/token", body: `{"user_id":"no such user!"}`})
	n.must(t, http.StatusBadRequest, req{method: "POST", path: "/api/dev/token", body: `{"user":"carol"}`})
	n.must(t, http.StatusInternalServerError, req{method: "POST", path: "/api/dev/token", body: `{"user_id":"broken"}`})

	// A request naming another host (a DNS-rebound page) finds nothing.
	for _, host := range []string{"evil.example", "evil.example:8000", "10.0.0.1"} {
		hr, _ := http.NewRequest("GET", n.srv.URL+"/api/dev/users", nil)
		hr.Host = host
		resp, err := http.DefaultClient.Do(hr)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET /api/dev/users with Host %s: %d, want 404", host, resp.StatusCode)
		}
	}
	for _, host := range []string{"localhost:8000", "LOCALHOST", "127.0.0.2", "[::1]:80", "app.localhost"} {
		if !loopbackHost(host) {
			t.Errorf("loopbackHost(%q) = false", host)
		}
	}
	for _, addr := range []string{"10.0.0.1:5000", "[2001:db8::1]:80", "garbage"} {
		if loopbackRemote(addr) {
			t.Errorf("loopbackRemote(%q) = true", addr)
		}
	}

	// A node without development tokens has no such routes.
	real := newNode(t, nodeOptions{})
	for _, rq := range []req{{method: "GET", path: "/api/dev/users"}, {method: "POST", path: "/api/dev/token", body: `{"user_id":"alice"}`}} {
		e := real.must(t, http.StatusNotFound, rq).error(t)
		if want := "no route for " + rq.method + " " + rq.path; e.Error != want {
			t.Errorf("%s %s: %q, want %q as for an unknown path", rq.method, rq.path, e.Error, want)
		}
	}
}
