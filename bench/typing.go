package bench

import (
	"context"
	"strconv"
	"sync/atomic"
	"time"
)

// DefaultTypingEvery is how often a storming socket sends a TYPING start:
// a client that re-sends while its user keeps typing.
const DefaultTypingEvery = 250 * time.Millisecond

// typer is one storming socket and the conversation it types in.
type typer struct {
	sock  *socket
	frame []byte
}

// storm is a typing storm: sockets that each send a TYPING start every
// TypingEvery, spread evenly over time, while messages are measured. The
// server appends at most one per user and conversation per second and fans
// each out to the other members, so the storm loads the stream, the feed and
// the sockets the messages travel through.
type storm struct {
	typers      []typer
	every       time.Duration
	sent, fails atomic.Int64
}

// newStorm picks the first n users that are in a conversation as typers,
// each typing in its first conversation.
func newStorm(p *pool, plan [][]int, ids []int64, n int, every time.Duration) *storm {
	s := &storm{every: every}
	taken := make(map[int]bool, n)
	for c, members := range plan {
		for _, u := range members {
			if len(s.typers) == n {
				return s
			}
			if taken[u] || p.socks[u] == nil {
				continue
			}
			taken[u] = true
			f := `{"conversation_id":` + strconv.FormatInt(ids[c], 10) + `,"type":"TYPING","is_typing":true}`
			s.typers = append(s.typers, typer{sock: p.socks[u], frame: []byte(f)})
		}
	}
	return s
}

// run sends until ctx ends: typer i sends at i/len × every past each period.
func (s *storm) run(ctx context.Context) {
	if len(s.typers) == 0 {
		return
	}
	t0 := time.Now()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	perPeriod := float64(len(s.typers))
	var done int64
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		due := int64(float64(time.Since(t0)) / float64(s.every) * perPeriod)
		for ; done < due && ctx.Err() == nil; done++ {
			t := s.typers[done%int64(len(s.typers))]
			if !t.sock.alive() {
				continue
			}
			if err := t.sock.writeText(t.frame); err != nil {
				s.fails.Add(1)
				continue
			}
			s.sent.Add(1)
		}
	}
}
