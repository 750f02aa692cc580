package httpapi

import (
	"net/http"
	"time"

	"inbox/chat"
	"inbox/eventstore"
)

// presenceResponse is a user's presence. LastSeen is null while the user is
// online, and when it was never seen offline since the presence bucket knew it.
type presenceResponse struct {
	UserID   string  `json:"user_id"`
	Online   bool    `json:"online"`
	LastSeen *string `json:"last_seen"`
}

// getPresence: GET /api/presence?user_id=. Only for the caller itself and
// users it shares a conversation with (the same rule as PRESENCE frames).
func (a *api) getPresence(w http.ResponseWriter, r *http.Request) error {
	c := claims(r)
	q := r.URL.Query()
	who := q.Get("user_id")
	if !q.Has("user_id") || !eventstore.ValidUserID(who) {
		return badRequest("query parameter user_id=%q must match [A-Za-z0-9_-]{1,64}", who)
	}
	annotate(r, "target_user_id", who)
	if who != c.UserID && !a.dir.ShareConversation(c.UserID, who) {
		return chat.Errorf(chat.CodeForbidden, "you share no conversation with %s", who)
	}
	if a.pres == nil {
		return chat.Errorf(chat.CodeUnavailable, "presence is not tracked on this node")
	}
	online, seen := a.pres.Status(who)
	resp := presenceResponse{UserID: who, Online: online}
	if !online && !seen.IsZero() {
		s := seen.UTC().Format(time.RFC3339)
		resp.LastSeen = &s
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, resp)
	return nil
}
