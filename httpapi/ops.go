package httpapi

import (
	"context"
	_ "embed"
	"net/http"
	"strings"
	"time"

	"inbox/chat"
)

// OpenAPI is the API's OpenAPI 3.1 document, served at GET /api/openapi.json.
//
//go:embed openapi.json
var OpenAPI []byte

// readyTimeout bounds a readiness check.
const readyTimeout = 2 * time.Second

type statusResponse struct {
	Status string `json:"status"`
}

// healthz: GET /healthz. The process is up and serving.
func (a *api) healthz(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, statusResponse{Status: "ok"})
	return nil
}

// readyz: GET /readyz. 200 when Deps.Ready passes, 503 with its reason when not.
func (a *api) readyz(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
	defer cancel()
	if err := a.ready(ctx); err != nil {
		return &chat.Error{Code: chat.CodeUnavailable, Msg: "not ready: " + err.Error(), Err: err}
	}
	writeJSON(w, http.StatusOK, statusResponse{Status: "ok"})
	return nil
}

// metrics: GET /metrics, the Prometheus registry.
func (a *api) metrics(w http.ResponseWriter, r *http.Request) error {
	a.m.Handler().ServeHTTP(w, r)
	return nil
}

// openapi: GET /api/openapi.json.
func (a *api) openapi(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write(OpenAPI)
	return nil
}

// notFound answers a request no route matched: 405 with Allow if the path
// exists under other methods, else 404. Both as JSON errors.
func (a *api) notFound(w http.ResponseWriter, r *http.Request) error {
	if allow := a.methods(r); len(allow) > 0 {
		w.Header().Set("Allow", strings.Join(allow, ", "))
		writeJSON(w, http.StatusMethodNotAllowed, errorBody{
			Error: "method " + r.Method + " is not allowed on " + r.URL.Path + " (allowed: " + strings.Join(allow, ", ") + ")",
			Code:  CodeMethodNotAllowed,
		})
		return nil
	}
	return chat.Errorf(chat.CodeNotFound, "no route for %s %s", r.Method, r.URL.Path)
}
