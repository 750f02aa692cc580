package auth

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// Where a request's token may be.
const (
	// QueryParam is the query parameter carrying a token (?token=<jwt>).
	QueryParam = "token"
	// CookieName is the cookie carrying a token; accepted only from an
	// allowed Origin.
	CookieName = "inbox_token"
)

// Authenticate verifies the token r carries. It looks, in order, at
// "Authorization: Bearer <jwt>", the token query parameter, and the
// inbox_token cookie; the first present is the one verified. The cookie is
// used only when the request's Origin is one of Config.AllowedOrigins, since
// a browser attaches cookies to cross-site WebSocket upgrades too (a
// same-origin GET, which has no Origin, counts as coming from the request's
// own origin; see requestOrigin). Header
// and query tokens are accepted whatever the Origin: a page on another site
// cannot read them. Every error wraps ErrUnauthorized; ErrNoToken if r
// carries no token.
func (v *Verifier) Authenticate(r *http.Request) (Claims, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		// Another scheme (say Basic, for a proxy in front) is not ours:
		// look further.
		if token, ok := bearer(h); ok {
			if token == "" {
				return Claims{}, unauthorized("empty bearer token")
			}
			return v.Verify(token)
		}
	}
	if token := r.URL.Query().Get(QueryParam); token != "" {
		return v.Verify(token)
	}
	c, err := r.Cookie(CookieName)
	if err != nil || c.Value == "" {
		return Claims{}, ErrNoToken
	}
	if !v.OriginAllowed(requestOrigin(r)) {
		return Claims{}, unauthorized("cookie token not accepted from this origin")
	}
	return v.Verify(c.Value)
}

// requestOrigin is the origin of the page that made r: its Origin header or,
// for a browser's same-origin GET (which carries none), the request's own
// origin when the browser says so with Sec-Fetch-Site, a header page
// scripts cannot set. Behind a proxy that ends TLS the own origin reads
// http://, which an https:// allowed origin does not match: refused.
func requestOrigin(r *http.Request) string {
	if o := r.Header.Get("Origin"); o != "" {
		return o
	}
	if r.Header.Get("Sec-Fetch-Site") != "same-origin" || r.Host == "" {
		return ""
	}
	if r.TLS != nil {
		return "https://" + r.Host
	}
	return "http://" + r.Host
}

// OriginAllowed reports whether origin (an Origin header value) exactly
// matches one of the configured allowed origins. Scheme and host compare
// case-insensitively and a default port (80, 443) may be given or omitted;
// nothing else is normalized. An empty or "null" origin is never allowed.
func (v *Verifier) OriginAllowed(origin string) bool {
	if len(v.origins) == 0 || origin == "" {
		return false
	}
	o, err := normalizeOrigin(origin)
	return err == nil && v.origins[o]
}

// bearer returns the credentials of an "Authorization: Bearer <token>"
// header value, and whether its scheme is Bearer.
func bearer(h string) (string, bool) {
	scheme, token, _ := strings.Cut(strings.TrimSpace(h), " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	return strings.TrimSpace(token), true
}

// SplitOrigins splits an INBOX_ALLOWED_ORIGINS value (origins separated by
// commas or spaces) into Config.AllowedOrigins.
func SplitOrigins(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' })
}

// parseOrigins normalizes the allowed origins into a set.
func parseOrigins(origins []string) (map[string]bool, error) {
	set := make(map[string]bool, len(origins))
	for _, o := range origins {
		o = strings.TrimSpace(o)
		if o == "" {
			continue
		}
		n, err := normalizeOrigin(o)
		if err != nil {
			return nil, fmt.Errorf("allowed origin %q: %w", o, err)
		}
		set[n] = true
	}
	return set, nil
}

// normalizeOrigin returns scheme://host[:port] in lower case, without a
// default port, or an error if origin is not of that form.
func normalizeOrigin(origin string) (string, error) {
	if origin == "*" || origin == "null" {
		return "", errors.New("not an exact origin (want scheme://host[:port])")
	}
	u, err := url.Parse(origin)
	if err != nil {
		return "", errors.New("want scheme://host[:port]")
	}
	if u.Scheme == "" || u.Host == "" || u.User != nil || u.Opaque != "" ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.ForceQuery {
		return "", errors.New("want scheme://host[:port]")
	}
	scheme, host := strings.ToLower(u.Scheme), strings.ToLower(u.Host)
	if strings.Contains(host, "*") {
		return "", errors.New("wildcards are not supported")
	}
	switch {
	case scheme == "http" && strings.HasSuffix(host, ":80"):
		host = strings.TrimSuffix(host, ":80")
	case scheme == "https" && strings.HasSuffix(host, ":443"):
		host = strings.TrimSuffix(host, ":443")
	}
	return scheme + "://" + host, nil
}
