// Package console serves inbox's web console from files embedded in the
// binary: the chat view at / and the operator view at /ops, plain ES modules
// and CSS under /console/, no build step and nothing fetched from elsewhere.
// The pages speak only the public protocol (the WebSocket at /ws/inbox/ and
// the HTTP API), so they double as a reference client.
//
// Every answer carries a strict Content-Security-Policy (scripts, styles and
// connections from the node's own origin only; no inline code; no framing)
// and the usual hardening headers.
package console

import (
	"embed"
	"io/fs"
	"net/http"
	"strings"
)

//go:embed static
var files embed.FS

// Handler serves the console. Mount it for "GET /{$}", "GET /ops" and
// "GET /console/"; any other path it is given answers 404.
func Handler() http.Handler {
	static, err := fs.Sub(files, "static")
	if err != nil {
		panic("console: " + err.Error()) // the embed pattern guarantees the folder
	}
	assets := http.StripPrefix("/console/", http.FileServerFS(static))
	mux := http.NewServeMux()
	mux.Handle("GET /{$}", page(static, "chat.html"))
	mux.Handle("GET /ops", page(static, "ops.html"))
	mux.Handle("GET /console/", noIndex(assets))
	return secure(mux)
}

// page serves one HTML file.
func page(static fs.FS, name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		http.ServeFileFS(w, r, static, name)
	})
}

// noIndex refuses directory listings.
func noIndex(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/") {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Cache-Control", "no-cache")
		h.ServeHTTP(w, r)
	})
}

// secure adds the security headers to every answer.
func secure(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", CSP(r.Host))
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("Cross-Origin-Opener-Policy", "same-origin")
		hd.Set("Cross-Origin-Resource-Policy", "same-origin")
		hd.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=()")
		h.ServeHTTP(w, r)
	})
}

// CSP is the console's Content-Security-Policy for a page served to host:
// everything from the node's own origin, WebSockets to the same host, no
// inline script or style, no plugins, no framing, forms nowhere.
func CSP(host string) string {
	connect := "'self'"
	if validHost(host) {
		connect += " ws://" + host + " wss://" + host
	}
	return "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; " +
		"connect-src " + connect + "; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
}

// validHost reports whether host (a Host header) is a plain host[:port], fit
// to write into the policy.
func validHost(host string) bool {
	if host == "" || len(host) > 255 {
		return false
	}
	for _, c := range host {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', strings.ContainsRune(".-:[]", c):
		default:
			return false
		}
	}
	return true
}
