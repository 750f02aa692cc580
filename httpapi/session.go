package httpapi

import (
	"net/http"
	"time"
)

type sessionResponse struct {
	UserID    string    `json:"user_id"`
	Name      string    `json:"name"`
	ExpiresAt time.Time `json:"expires_at"`
}

// getSession: GET /api/session. The user the request's credentials name,
// authenticated exactly as the socket upgrade is; a refusal (401) says why.
// A browser cannot read the 401 of a refused WebSocket upgrade, so a page
// asks here after a socket fails to open.
func (a *api) getSession(w http.ResponseWriter, r *http.Request) error {
	c := claims(r)
	writeJSON(w, http.StatusOK, sessionResponse{UserID: c.UserID, Name: c.Name, ExpiresAt: c.ExpiresAt.UTC()})
	return nil
}
