package node_test

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"

	"inbox/auth"
	"inbox/node"
)

// TestConsoleMounted: the console's pages and files are served with a strict
// Content-Security-Policy beside the API, whose unknown paths still answer
// JSON 404s; a node with configured secrets has no development sign-in,
// --demo or not.
func TestConsoleMounted(t *testing.T) {
	n := rtStart(t, rtNATS(t), "console", nil)
	if _, err := n.SeedDemo(context.Background()); err != nil {
		t.Fatal(err)
	}
	host := n.HTTPAddr()
	for _, path := range []string{"/", "/ops"} {
		r := rtDo(t, n, "GET", path, "", "")
		if r.status != http.StatusOK || !strings.HasPrefix(r.header.Get("Content-Type"), "text/html") || !strings.Contains(r.body, `<script type="module" src="/console/js/`) {
			t.Errorf("GET %s: %d %s %.80q", path, r.status, r.header.Get("Content-Type"), r.body)
		}
		csp := r.header.Get("Content-Security-Policy")
		for _, want := range []string{"default-src 'self'", "script-src 'self'", "style-src 'self'", "connect-src 'self' ws://" + host + " wss://" + host + ";", "frame-ancestors 'none'", "object-src 'none'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("GET %s: Content-Security-Policy %q lacks %q", path, csp, want)
			}
		}
		if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
			t.Errorf("GET %s: Content-Security-Policy %q allows inline code", path, csp)
		}
		for k, v := range map[string]string{"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"} {
			if got := r.header.Get(k); got != v {
				t.Errorf("GET %s: %s %q, want %q", path, k, got, v)
			}
		}
	}
	if r := rtDo(t, n, "GET", "/console/js/chat.js", "", ""); r.status != http.StatusOK || !strings.Contains(r.header.Get("Content-Type"), "javascript") || r.header.Get("Content-Security-Policy") == "" {
		t.Errorf("GET /console/js/chat.js: %d %q", r.status, r.header.Get("Content-Type"))
	}
	if r := rtDo(t, n, "GET", "/console/js/", "", ""); r.status != http.StatusNotFound {
		t.Errorf("GET /console/js/ (a listing): %d, want 404", r.status)
	}

	// The API keeps its JSON answers, for unknown paths too.
	for _, c := range []struct{ method, path string }{
		{"GET", "/api/nope"}, {"GET", "/nope"}, {"POST", "/"}, {"POST", "/api/dev/token"}, {"GET", "/api/dev/users"},
	} {
		r := rtDo(t, n, c.method, c.path, "", "")
		var e struct{ Error, Code string }
		if r.status != http.StatusNotFound || json.Unmarshal([]byte(r.body), &e) != nil || e.Code != "not_found" {
			t.Errorf("%s %s: %d %s, want a JSON 404", c.method, c.path, r.status, r.body)
		}
	}
	if r := rtDo(t, n, "GET", "/healthz", "", ""); r.status != http.StatusOK || !strings.Contains(r.body, `"ok"`) {
		t.Errorf("GET /healthz: %d %s", r.status, r.body)
	}
}

// TestDevSignIn: on development secrets the node offers its users and mints
// tokens for them, which the API accepts; its status names the stream and
// keeps the development-mode warning among its last log records.
func TestDevSignIn(t *testing.T) {
	n := rtStart(t, rtNATS(t), "dev", func(c *node.Config) { c.JWTSecret, c.AdminToken = "", "" })
	if _, err := n.SeedDemo(context.Background()); err != nil {
		t.Fatal(err)
	}
	r := rtDo(t, n, "GET", "/api/dev/users", "", "")
	var users struct {
		Users []struct{ UserID, Name string } `json:"users"`
	}
	if r.status != http.StatusOK || json.Unmarshal([]byte(r.body), &users) != nil || len(users.Users) != 3 || users.Users[0].Name != "Alice Doe" {
		t.Fatalf("GET /api/dev/users: %d %s, want the three demo users", r.status, r.body)
	}
	r = rtDo(t, n, "POST", "/api/dev/token", "", `{"user_id":"bob"}`)
	var tok struct{ Token string }
	if r.status != http.StatusOK || json.Unmarshal([]byte(r.body), &tok) != nil || tok.Token == "" {
		t.Fatalf("POST /api/dev/token: %d %s", r.status, r.body)
	}
	r = rtDo(t, n, "GET", "/api/session", tok.Token, "")
	if r.status != http.StatusOK || !strings.Contains(r.body, `"user_id":"bob"`) || !strings.Contains(r.body, `"name":"Bob Worker"`) {
		t.Errorf("GET /api/session with the development token: %d %s", r.status, r.body)
	}

	secrets, err := auth.LoadDevSecrets(n.Config().DataDir)
	if err != nil {
		t.Fatal(err)
	}
	r = rtDo(t, n, "GET", "/api/admin/status", secrets.AdminToken, "")
	var st struct {
		Node    string
		Streams []struct{ Name string }
		Errors  []struct{ Level, Message string }
	}
	if r.status != http.StatusOK || json.Unmarshal([]byte(r.body), &st) != nil {
		t.Fatalf("GET /api/admin/status: %d %s", r.status, r.body)
	}
	if st.Node != "dev" || len(st.Streams) != 1 || st.Streams[0].Name != "INBOX" {
		t.Errorf("status %s", r.body)
	}
	if !slices.ContainsFunc(st.Errors, func(e struct{ Level, Message string }) bool {
		return e.Level == "WARN" && strings.HasPrefix(e.Message, "DEVELOPMENT MODE")
	}) {
		t.Errorf("status errors %+v, want the development-mode warning", st.Errors)
	}
}
