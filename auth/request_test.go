package auth_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"

	"inbox/auth"
)

func TestAuthenticate(t *testing.T) {
	withOrigins := newVerifier(t, auth.Config{
		Secret:         testSecret,
		AllowedOrigins: []string{"https://app.example.com", " http://localhost:3000 ", "https://admin.example.com:443"},
	})
	noOrigins := newVerifier(t, auth.Config{Secret: testSecret})
	good := sign(t, jwt.SigningMethodHS256, []byte(testSecret), claims("alice"))
	bad := sign(t, jwt.SigningMethodHS256, []byte("wrong"), claims("mallory"))

	type req struct {
		auth   string // Authorization header
		query  string // token query parameter
		cookie string // inbox_token cookie
		origin string
		host   string // Host (default example.com)
		site   string // Sec-Fetch-Site
	}
	tests := []struct {
		name      string
		verifier  *auth.Verifier
		req       req
		withError error
		reason    string
	}{
		{name: "bearer header", req: req{auth: "Bearer " + good}},
		{name: "bearer header, any case", req: req{auth: "bearer  " + good}},
		{name: "bearer header, foreign origin", req: req{auth: "Bearer " + good, origin: "https://evil.example"}},
		{name: "query", req: req{query: good}},
		{name: "query, foreign origin", req: req{query: good, origin: "https://evil.example"}},
		{name: "query, no allowlist", verifier: noOrigins, req: req{query: good, origin: "https://evil.example"}},
		{name: "cookie, allowed origin", req: req{cookie: good, origin: "https://app.example.com"}},
		{name: "cookie, allowed origin with port", req: req{cookie: good, origin: "http://localhost:3000"}},
		{name: "cookie, allowed origin upper case", req: req{cookie: good, origin: "HTTPS://APP.example.com"}},
		{name: "cookie, allowed origin default port given", req: req{cookie: good, origin: "https://app.example.com:443"}},
		{name: "cookie, allowed origin default port configured", req: req{cookie: good, origin: "https://admin.example.com"}},
		{name: "cookie, same-origin GET to an allowed host", req: req{cookie: good, host: "localhost:3000", site: "same-origin"}},
		{name: "other scheme falls through to query", req: req{auth: "Basic dXNlcjpwYXNz", query: good}},
		{name: "header first", req: req{auth: "Bearer " + good, query: bad, cookie: bad, origin: "https://app.example.com"}},

		{name: "nothing", req: req{}, withError: auth.ErrNoToken},
		{name: "nothing is unauthorized", req: req{}, withError: auth.ErrUnauthorized, reason: "no token"},
		{name: "other scheme only", req: req{auth: "Basic dXNlcjpwYXNz"}, withError: auth.ErrNoToken},
		{name: "empty bearer", req: req{auth: "Bearer ", query: good}, withError: auth.ErrUnauthorized, reason: "empty bearer"},
		{name: "bad header token, good query", req: req{auth: "Bearer " + bad, query: good}, withError: auth.ErrUnauthorized, reason: "signature"},
		{name: "bad query token, good cookie", req: req{query: bad, cookie: good, origin: "https://app.example.com"}, withError: auth.ErrUnauthorized, reason: "signature"},
		{name: "cookie, allowed origin, bad token", req: req{cookie: bad, origin: "https://app.example.com"}, withError: auth.ErrUnauthorized, reason: "signature"},
		{name: "cookie, no origin", req: req{cookie: good}, withError: auth.ErrUnauthorized, reason: "origin"},
		{name: "cookie, null origin", req: req{cookie: good, origin: "null"}, withError: auth.ErrUnauthorized, reason: "origin"},
		{name: "cookie, foreign origin", req: req{cookie: good, origin: "https://evil.example"}, withError: auth.ErrUnauthorized, reason: "origin"},
		{name: "cookie, other scheme", req: req{cookie: good, origin: "http://app.example.com"}, withError: auth.ErrUnauthorized, reason: "origin"},
		{name: "cookie, other port", req: req{cookie: good, origin: "https://app.example.com:8443"}, withError: auth.ErrUnauthorized, reason: "origin"},
		{name: "cookie, missing port", req: req{cookie: good, origin: "http://localhost"}, withError: auth.ErrUnauthorized, reason: "origin"},
		{name: "cookie, subdomain", req: req{cookie: good, origin: "https://evil.app.example.com"}, withError: auth.ErrUnauthorized, reason: "origin"},
		{name: "cookie, suffix", req: req{cookie: good, origin: "https://app.example.com.evil.example"}, withError: auth.ErrUnauthorized, reason: "origin"},
		{name: "cookie, path", req: req{cookie: good, origin: "https://app.example.com/x"}, withError: auth.ErrUnauthorized, reason: "origin"},
		{name: "cookie, same-origin GET to another host", req: req{cookie: good, host: "evil.example", site: "same-origin"}, withError: auth.ErrUnauthorized, reason: "origin"},
		{name: "cookie, same-site GET without origin", req: req{cookie: good, host: "localhost:3000", site: "same-site"}, withError: auth.ErrUnauthorized, reason: "origin"},
		{name: "cookie, origin counts before fetch site", req: req{cookie: good, origin: "https://evil.example", host: "localhost:3000", site: "same-origin"}, withError: auth.ErrUnauthorized, reason: "origin"},
		{name: "cookie, no allowlist", verifier: noOrigins, req: req{cookie: good, origin: "https://app.example.com"}, withError: auth.ErrUnauthorized, reason: "origin"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := tt.verifier
			if v == nil {
				v = withOrigins
			}
			target := "/ws/inbox/"
			if tt.req.query != "" {
				target += "?token=" + url.QueryEscape(tt.req.query)
			}
			r := httptest.NewRequest(http.MethodGet, target, nil)
			if tt.req.auth != "" {
				r.Header.Set("Authorization", tt.req.auth)
			}
			if tt.req.cookie != "" {
				r.AddCookie(&http.Cookie{Name: auth.CookieName, Value: tt.req.cookie})
			}
			if tt.req.origin != "" {
				r.Header.Set("Origin", tt.req.origin)
			}
			if tt.req.host != "" {
				r.Host = tt.req.host
			}
			if tt.req.site != "" {
				r.Header.Set("Sec-Fetch-Site", tt.req.site)
			}
			c, err := v.Authenticate(r)
			if tt.withError != nil {
				if !errors.Is(err, tt.withError) {
					t.Fatalf("Authenticate error = %v, want %v", err, tt.withError)
				}
				if !strings.Contains(err.Error(), tt.reason) {
					t.Fatalf("Authenticate error = %q, want it to say %q", err, tt.reason)
				}
				return
			}
			if err != nil {
				t.Fatalf("Authenticate: %v", err)
			}
			if c.UserID != "alice" {
				t.Fatalf("UserID = %q, want alice", c.UserID)
			}
		})
	}
}

func TestSplitOrigins(t *testing.T) {
	got := auth.SplitOrigins(" https://a.example, http://localhost:3000 https://b.example,,")
	want := []string{"https://a.example", "http://localhost:3000", "https://b.example"}
	if !slices.Equal(got, want) {
		t.Fatalf("SplitOrigins = %q, want %q", got, want)
	}
	if got := auth.SplitOrigins(""); len(got) != 0 {
		t.Fatalf("SplitOrigins(\"\") = %q, want none", got)
	}
}
