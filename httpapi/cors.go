package httpapi

import (
	"net/http"
	"strings"
)

// Origins says which browser origins may call the API with credentials
// (INBOX_ALLOWED_ORIGINS); *auth.Verifier is one. The API finds it on
// Deps.Verifier.
type Origins interface {
	OriginAllowed(origin string) bool
}

// CORS, for browser pages on an allowed origin (the app's own site): a
// preflight (OPTIONS with Access-Control-Request-Method) from an allowed
// origin is answered 204 with what the path accepts; every response to an
// allowed origin carries Access-Control-Allow-Origin (that exact origin) and
// Access-Control-Allow-Credentials, so the page may send the inbox_token
// cookie. Any other origin gets no CORS header at all, and its preflight is
// answered like any OPTIONS request (405).
const (
	corsAllowHeaders  = "Authorization, Content-Type, " + IdempotencyHeader
	corsExposeHeaders = StaleHeader + ", Retry-After, WWW-Authenticate"
	corsMaxAge        = "600"
)

// allowCORS adds the CORS headers of an allowed origin to w, and reports
// whether r is a preflight it answered (204).
func (a *api) allowCORS(w http.ResponseWriter, r *http.Request) (preflight bool) {
	h := w.Header()
	h.Add("Vary", "Origin")
	origin := r.Header.Get("Origin")
	if a.origins == nil || origin == "" || !a.origins.OriginAllowed(origin) {
		return false
	}
	h.Set("Access-Control-Allow-Origin", origin)
	h.Set("Access-Control-Allow-Credentials", "true")
	if r.Method != http.MethodOptions || r.Header.Get("Access-Control-Request-Method") == "" {
		h.Set("Access-Control-Expose-Headers", corsExposeHeaders)
		return false
	}
	methods := a.methods(r)
	if len(methods) == 0 {
		return false // no such path: a 404 with the origin's headers
	}
	h.Add("Vary", "Access-Control-Request-Method")
	h.Add("Vary", "Access-Control-Request-Headers")
	h.Set("Access-Control-Allow-Methods", strings.Join(methods, ", "))
	h.Set("Access-Control-Allow-Headers", corsAllowHeaders)
	h.Set("Access-Control-Max-Age", corsMaxAge)
	w.WriteHeader(http.StatusNoContent)
	return true
}

// methods lists the methods a route serves r's path under.
func (a *api) methods(r *http.Request) []string {
	var allow []string
	for _, m := range []string{"GET", "POST", "PUT", "DELETE", "PATCH"} {
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := a.mux.Handler(probe); pattern != "" && pattern != "/" {
			allow = append(allow, m)
		}
	}
	return allow
}
