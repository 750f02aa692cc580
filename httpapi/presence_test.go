package httpapi

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakePresence is a presence table; the real tracker is exercised end to end
// in node's tests.
type fakePresence struct {
	mu sync.Mutex
	m  map[string]presenceResponse
}

func (f *fakePresence) Status(user string) (bool, time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.m[user]
	if !ok || p.LastSeen == nil {
		return ok && p.Online, time.Time{}
	}
	at, _ := time.Parse(time.RFC3339, *p.LastSeen)
	return p.Online, at
}

func TestPresenceEndpoint(t *testing.T) {
	seen := "2025-01-15T10:31:00Z"
	pres := &fakePresence{m: map[string]presenceResponse{
		"alice": {Online: true},
		"bob":   {Online: false, LastSeen: &seen},
	}}
	n := newNode(t, nodeOptions{presence: pres})
	n.createConversation(t, 0, "alice", "bob")
	n.createConversation(t, 0, "carol", "dave")

	get := func(caller, query string, want int) presenceResponse {
		t.Helper()
		var p presenceResponse
		r := n.must(t, want, req{method: "GET", path: "/api/presence" + query, auth: n.user(caller)})
		if want == http.StatusOK {
			r.json(t, &p)
		} else {
			r.error(t)
		}
		return p
	}
	if p := get("alice", "?user_id=bob", http.StatusOK); p.UserID != "bob" || p.Online || p.LastSeen == nil || *p.LastSeen != seen {
		t.Errorf("bob as seen by alice: %+v", p)
	}
	if p := get("bob", "?user_id=alice", http.StatusOK); !p.Online || p.LastSeen != nil {
		t.Errorf("alice as seen by bob: %+v", p)
	}
	if p := get("carol", "?user_id=carol", http.StatusOK); p.Online || p.LastSeen != nil {
		t.Errorf("carol asking about herself (never seen): %+v", p)
	}
	get("carol", "?user_id=alice", http.StatusForbidden) // no shared conversation
	get("alice", "?user_id=nobody", http.StatusForbidden)
	for _, q := range []string{"", "?user_id=", "?user_id=a.b", "?user_id=%20x", "?user_id=" + strings.Repeat("x", 65)} {
		get("alice", q, http.StatusBadRequest)
	}
	n.must(t, http.StatusUnauthorized, req{method: "GET", path: "/api/presence?user_id=bob"})
}

func TestPresenceEndpointWithoutTracker(t *testing.T) {
	n := newNode(t, nodeOptions{})
	n.createConversation(t, 0, "alice", "bob")
	n.must(t, http.StatusServiceUnavailable, req{method: "GET", path: "/api/presence?user_id=bob", auth: n.user("alice")}).error(t)
}
