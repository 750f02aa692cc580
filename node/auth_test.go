package node_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"inbox/auth"
	"inbox/node"
)

// TestTokenIssuerAudience: with JWTIssuer and JWTAudience set, a token
// signed with the right secret but without them is refused with a reason
// that names the claim; one that carries them, and the demo's, are accepted.
func TestTokenIssuerAudience(t *testing.T) {
	const iss, aud = "https://id.example", "inbox"
	n := rtStart(t, rtNATS(t), "scoped", func(c *node.Config) { c.JWTIssuer, c.JWTAudience = iss, aud })
	get := func(token string) (int, string) {
		t.Helper()
		r := rtDo(t, n, "GET", "/api/conversations", token, "")
		return r.status, r.body
	}
	mint := func(cfg auth.MinterConfig) string {
		t.Helper()
		m, err := auth.NewMinter(cfg)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := m.Mint("alice", "", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}

	if code, body := get(rtToken(t, "alice")); code != http.StatusUnauthorized || !strings.Contains(body, "iss") {
		t.Errorf("token without iss: %d %s, want 401 naming iss", code, body)
	}
	if code, body := get(mint(auth.MinterConfig{Secret: rtSecret, Issuer: iss, Audience: "billing"})); code != http.StatusUnauthorized || !strings.Contains(body, "aud") {
		t.Errorf("token for another audience: %d %s, want 401 naming aud", code, body)
	}
	if code, body := get(mint(auth.MinterConfig{Secret: rtSecret, Issuer: iss, Audience: aud})); code != http.StatusOK {
		t.Errorf("scoped token: %d %s, want 200", code, body)
	}
	d, err := n.SeedDemo(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if code, body := get(d.Users[0].Token); code != http.StatusOK {
		t.Errorf("demo token: %d %s, want 200", code, body)
	}
}
