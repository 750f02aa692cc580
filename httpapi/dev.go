package httpapi

import (
	"net"
	"net/http"
	"strings"
	"time"

	"inbox/chat"
	"inbox/eventstore"
)

// DevTokens mints user tokens for anyone who asks: the console's one-click
// sign-in on a node that runs on development secrets. A node with configured
// secrets has none, and the /api/dev/ routes answer 404 as if they did not
// exist.
type DevTokens interface {
	// Users lists users to offer, at most limit.
	Users(limit int) []DevUser
	// Mint returns a token for user and its expiry.
	Mint(user string) (token string, expires time.Time, err error)
}

// DevUser is a user offered for sign-in.
type DevUser struct {
	UserID string `json:"user_id"`
	Name   string `json:"name"`
}

// maxDevUsers bounds the list GET /api/dev/users answers.
const maxDevUsers = 100

// devAllowed refuses, as an unknown route would be, a dev request when the
// node has no DevTokens, or one that did not come from this machine to a
// loopback host name (a DNS-rebound page names another host).
func (a *api) devAllowed(r *http.Request) error {
	if a.dev != nil && loopbackRemote(r.RemoteAddr) && loopbackHost(r.Host) {
		return nil
	}
	refused(r, "http_no_route")
	return chat.Errorf(chat.CodeNotFound, "no route for %s %s", r.Method, r.URL.Path)
}

func loopbackRemote(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func loopbackHost(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

type devUsersResponse struct {
	Users []DevUser `json:"users"`
}

// devUsers: GET /api/dev/users.
func (a *api) devUsers(w http.ResponseWriter, r *http.Request) error {
	if err := a.devAllowed(r); err != nil {
		return err
	}
	users := a.dev.Users(maxDevUsers)
	if users == nil {
		users = []DevUser{}
	}
	writeJSON(w, http.StatusOK, devUsersResponse{Users: users})
	return nil
}

type devTokenRequest struct {
	UserID string `json:"user_id"`
}

type devTokenResponse struct {
	UserID    string    `json:"user_id"`
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
}

// devToken: POST /api/dev/token.
func (a *api) devToken(w http.ResponseWriter, r *http.Request) error {
	if err := a.devAllowed(r); err != nil {
		return err
	}
	var req devTokenRequest
	if err := a.decode(w, r, &req); err != nil {
		return err
	}
	if !eventstore.ValidUserID(req.UserID) {
		return badRequest("field \"user_id\" must match [A-Za-z0-9_-]{1,64}")
	}
	tok, exp, err := a.dev.Mint(req.UserID)
	if err != nil {
		return err
	}
	annotate(r, "target_user_id", req.UserID)
	writeJSON(w, http.StatusOK, devTokenResponse{UserID: req.UserID, Token: tok, ExpiresAt: exp.UTC()})
	return nil
}
