package node_test

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"inbox/auth"
)

// TestSystemImpersonationRefused: the user id "system" is the sender of
// system messages (issue 15, item 9). A token whose sub is system (in any
// case), signed with the right secret, is refused on the API and the socket;
// the service API refuses it as a member, a job member or a profile; nothing
// is stored; and system messages still post.
func TestSystemImpersonationRefused(t *testing.T) {
	n := rtStart(t, rtNATS(t), "reserved", nil)
	rtCreate(t, 1, []string{"alice", "bob"}, n)
	do := func(method, path, bearer, body string) (int, string) {
		t.Helper()
		r := rtDo(t, n, method, path, bearer, body)
		return r.status, r.body
	}

	for _, sub := range []string{"system", "System", "SYSTEM"} {
		signed, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
			"sub": sub, "exp": time.Now().Add(time.Hour).Unix(),
		}).SignedString([]byte(rtSecret))
		if err != nil {
			t.Fatal(err)
		}
		if code, body := do("GET", "/api/conversations", signed, ""); code != http.StatusUnauthorized || !strings.Contains(body, "reserved") {
			t.Errorf("GET /api/conversations as %s: %d %s, want 401 saying reserved", sub, code, body)
		}
		if code, body := do("GET", "/ws/inbox/?token="+signed, "", ""); code != http.StatusUnauthorized || !strings.Contains(body, "reserved") {
			t.Errorf("socket as %s: %d %s, want 401 saying reserved", sub, code, body)
		}
		m, err := auth.NewMinter(auth.MinterConfig{Secret: rtSecret})
		if err != nil {
			t.Fatal(err)
		}
		if tok, err := m.Mint(sub, "", time.Hour); err == nil {
			t.Errorf("Mint(%q) = %s, want an error", sub, tok)
		}
	}

	before, err := n.Store().Last(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ method, path, body string }{
		{"POST", "/api/admin/conversations", `{"members":[{"user_id":"alice","role":"member"},{"user_id":"system","role":"member"}]}`},
		{"POST", "/api/admin/conversations/1/members", `{"user_id":"System","role":"member"}`},
		{"PUT", "/api/admin/profiles/system", `{"name":"Mallory"}`},
		{"POST", "/api/admin/jobs", `{"members":["alice","SYSTEM"]}`},
	} {
		if code, body := do(tc.method, tc.path, rtAdmin, tc.body); code != http.StatusBadRequest || !strings.Contains(body, "reserved") {
			t.Errorf("%s %s %s: %d %s, want 400 saying reserved", tc.method, tc.path, tc.body, code, body)
		}
	}
	after, err := n.Store().Last(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(after, before) {
		t.Errorf("refused requests stored events: the stream moved from %s to %s", before, after)
	}

	if code, body := do("POST", "/api/admin/conversations/1/messages", rtAdmin, `{"message":"This conversation is recorded"}`); code/100 != 2 || !strings.Contains(body, `"sender_id":"system"`) {
		t.Errorf("system message: %d %s, want 2xx from sender system", code, body)
	}
}
