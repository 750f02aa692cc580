package httpapi

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// userLimits is a token bucket per user for the user routes. A bucket that
// has filled up again is the same as a new one, so those are dropped once
// the map grows: an idle user costs nothing.
type userLimits struct {
	rate  rate.Limit
	burst int

	mu      sync.Mutex
	users   map[string]*rate.Limiter
	pruneAt int
}

// minPruneAt is the map size below which buckets are never pruned.
const minPruneAt = 10_000

func newUserLimits(perSecond float64, burst int) *userLimits {
	return &userLimits{rate: rate.Limit(perSecond), burst: burst, users: make(map[string]*rate.Limiter), pruneAt: minPruneAt}
}

// allow takes a token from user's bucket at now, if there is one.
func (l *userLimits) allow(user string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	lim := l.users[user]
	if lim == nil {
		if len(l.users) >= l.pruneAt {
			l.prune(now)
		}
		lim = rate.NewLimiter(l.rate, l.burst)
		l.users[user] = lim
	}
	return lim.AllowN(now, 1)
}

// prune drops the full buckets and sets the size of the next pruning.
func (l *userLimits) prune(now time.Time) {
	for u, lim := range l.users {
		if lim.TokensAt(now) >= float64(l.burst) {
			delete(l.users, u)
		}
	}
	l.pruneAt = max(minPruneAt, 2*len(l.users))
}
