package wsedge

import (
	"container/heap"
	"sync"
	"time"

	"inbox/auth"
	"inbox/chat"
)

// Token expiry. A socket lives as long as its token (auth.Claims.ExpiresAt)
// plus TokenGrace; a REFRESH frame with a new token of the same user moves
// that. TokenGrace before the token expires the socket is told
// (TOKEN_EXPIRING); TokenGrace after, unless refreshed, it is closed with
// 4001. One hub goroutine, the expirer, keeps every socket's next deadline
// in a heap and sleeps until the earliest: no timer per socket.

// expiries is the expirer's schedule. Its lock is a leaf: nothing else is
// locked while it is held.
type expiries struct {
	mu   sync.Mutex
	due  expHeap
	wake chan struct{} // the earliest deadline moved earlier
}

// expiry is a socket's place in the schedule, guarded by expiries.mu.
type expiry struct {
	token  time.Time // the token's exp
	next   time.Time // the next deadline: the warning, then the close
	warned bool      // TOKEN_EXPIRING was sent for this token
	gone   bool      // unregistered: never scheduled again
	idx    int       // in expiries.due; -1 if not scheduled
}

// expHeap orders sockets by their next deadline (container/heap).
type expHeap []*conn

func (q expHeap) Len() int           { return len(q) }
func (q expHeap) Less(i, j int) bool { return q[i].exp.next.Before(q[j].exp.next) }
func (q expHeap) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].exp.idx, q[j].exp.idx = i, j
}
func (q *expHeap) Push(x any) {
	c := x.(*conn)
	c.exp.idx = len(*q)
	*q = append(*q, c)
}
func (q *expHeap) Pop() any {
	old := *q
	c := old[len(old)-1]
	old[len(old)-1] = nil
	c.exp.idx = -1
	*q = old[:len(old)-1]
	return c
}

// schedule sets c's token expiry and its next deadline.
func (h *Hub) schedule(c *conn, exp time.Time) {
	x := &h.exp
	x.mu.Lock()
	defer x.mu.Unlock()
	if exp.IsZero() || c.exp.gone {
		return // a token without exp (tests), or a REFRESH handled after the socket ended
	}
	c.exp.token, c.exp.warned = exp, false
	c.exp.next = exp.Add(-h.cfg.TokenGrace)
	if c.exp.idx >= 0 {
		heap.Fix(&x.due, c.exp.idx)
	} else {
		heap.Push(&x.due, c)
	}
	if x.due[0] == c {
		select {
		case x.wake <- struct{}{}:
		default:
		}
	}
}

// unschedule forgets c for good; it is called once c is unregistered.
func (h *Hub) unschedule(c *conn) {
	x := &h.exp
	x.mu.Lock()
	c.exp.gone = true
	if c.exp.idx >= 0 {
		heap.Remove(&x.due, c.exp.idx)
	}
	x.mu.Unlock()
}

// expiring is a socket the expirer acts on.
type expiring struct {
	c     *conn
	token time.Time
	close bool // else warn
}

// takeDue returns the sockets whose deadline has come, in order, and moves
// a warned socket's deadline to its close.
func (x *expiries) takeDue(now time.Time, grace time.Duration) []expiring {
	x.mu.Lock()
	defer x.mu.Unlock()
	var out []expiring
	for len(x.due) > 0 && !x.due[0].exp.next.After(now) {
		c := x.due[0]
		if c.exp.warned {
			heap.Pop(&x.due)
			out = append(out, expiring{c: c, token: c.exp.token, close: true})
			continue
		}
		c.exp.warned = true
		c.exp.next = c.exp.token.Add(grace)
		heap.Fix(&x.due, 0)
		out = append(out, expiring{c: c, token: c.exp.token})
	}
	return out
}

// nextDue is the earliest deadline, if any.
func (x *expiries) nextDue() (time.Time, bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if len(x.due) == 0 {
		return time.Time{}, false
	}
	return x.due[0].exp.next, true
}

// expirer warns and closes sockets as their tokens expire, until Shutdown.
func (h *Hub) expirer() {
	defer h.wg.Done()
	grace := h.cfg.TokenGrace
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		for _, e := range h.exp.takeDue(time.Now(), grace) {
			if e.close {
				h.refusals.Info("token_expired", "closing socket: token expired", "user_id", e.c.user, "endpoint", endpointNames[e.c.ep], "expired_at", e.token)
				e.c.closeWith(CloseTokenExpired, "token expired; reconnect with a fresh token")
				continue
			}
			e.c.enqueue(encodeTokenExpiring(e.token, e.token.Add(grace)))
		}
		wait := time.Hour
		if next, ok := h.exp.nextDue(); ok {
			wait = max(time.Until(next), 0)
		}
		t.Reset(wait)
		select {
		case <-h.ctx.Done():
			return
		case <-h.exp.wake:
		case <-t.C:
		}
	}
}

// refresh handles a REFRESH frame: the token is verified like the one the
// socket opened with and must name the same user; the socket then lives by
// the new token's expiry (and sends with its name and picture).
func (c *conn) refresh(token string) {
	h := c.hub
	claims, err := h.authn.Verify(token)
	switch {
	case err != nil:
		h.m.AuthFailures.WithLabelValues(authReason(err)).Inc()
		h.refusals.Info("refresh_"+authReason(err), "refresh refused: authentication", "user_id", c.user, "err", err)
		c.replyError(chat.Errorf(codeUnauthorized, "%s", err.Error()), request{})
		return
	case claims.UserID != c.user:
		h.refusals.Info("refresh_other_user", "refresh refused: the token names another user", "user_id", c.user, "token_user", claims.UserID)
		c.replyError(chat.Errorf(chat.CodeForbidden, "the token names another user; a socket keeps its user"), request{})
		return
	}
	c.sender = senderOf(claims)
	h.schedule(c, claims.ExpiresAt)
	c.enqueue(encodeRefreshed(claims.ExpiresAt))
}

// codeUnauthorized answers a REFRESH whose token does not verify, as HTTP
// 401 bodies do.
const codeUnauthorized = "unauthorized"

// senderOf is who a socket's messages are from.
func senderOf(claims auth.Claims) chat.Sender {
	s := chat.Sender{UserID: claims.UserID, Name: claims.Name}
	if claims.Picture != "" {
		pic := claims.Picture
		s.Avatar = &pic
	}
	return s
}
