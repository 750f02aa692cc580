package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// seedPlan builds the membership of the conversations to seed, as user
// indexes. Fan-out: conversation i holds users i*size .. i*size+size-1
// (mod users). Idle: convsPerUser rounds; each round shuffles the users and
// cuts them into groups of size, folding a short tail into the last group.
func seedPlan(mode string, users, conversations, convsPerUser, size int, seed uint64) [][]int {
	if mode == ModeFanout {
		plan := make([][]int, conversations)
		for i := range plan {
			m := make([]int, size)
			for j := range m {
				m[j] = (i*size + j) % users
			}
			plan[i] = m
		}
		return plan
	}
	if users < size {
		size = users
	}
	if size < 2 || convsPerUser == 0 {
		return nil
	}
	rng := rand.New(rand.NewPCG(seed, 1))
	var plan [][]int
	perm := make([]int, users)
	for i := range perm {
		perm[i] = i
	}
	for range convsPerUser {
		rng.Shuffle(len(perm), func(i, j int) { perm[i], perm[j] = perm[j], perm[i] })
		start := len(plan)
		for i := 0; i+size <= users; i += size {
			plan = append(plan, append([]int(nil), perm[i:i+size]...))
		}
		if tail := users % size; tail > 0 {
			last := &plan[len(plan)-1]
			if len(plan) == start || len(*last)+tail > maxMembers {
				plan = append(plan, append([]int(nil), perm[users-tail:]...))
			} else {
				*last = append(*last, perm[users-tail:]...)
			}
		}
	}
	return plan
}

// seed creates the conversations of plan (and, if asked, the profiles) and
// returns their ids in plan order.
func (r *runner) seed(ctx context.Context, plan [][]int) ([]int64, time.Duration, error) {
	start := time.Now()
	ids := make([]int64, len(plan))
	if len(plan) > 0 {
		bar := r.bar(len(plan), "conversations")
		err := parallel(ctx, len(plan), r.cfg.SeedConcurrency, func() { _ = bar.Add(1) }, func(ctx context.Context, i int) error {
			members := make([]memberSpec, len(plan[i]))
			for j, u := range plan[i] {
				members[j] = memberSpec{UserID: userID(r.cfg.UserPrefix, u), Role: roleOf(j)}
			}
			var want int64
			if r.cfg.IDBase > 0 {
				want = r.cfg.IDBase + int64(i)
			}
			id, err := r.admin.createConversation(ctx, want, members)
			ids[i] = id
			return err
		})
		_ = bar.Finish()
		if err != nil {
			return nil, 0, err
		}
	}
	if r.cfg.Profiles {
		bar := r.bar(r.cfg.Users, "profiles")
		err := parallel(ctx, r.cfg.Users, r.cfg.SeedConcurrency, func() { _ = bar.Add(1) }, func(ctx context.Context, i int) error {
			return r.admin.setProfile(ctx, userID(r.cfg.UserPrefix, i), fmt.Sprintf("Bench User %d", i))
		})
		_ = bar.Finish()
		if err != nil {
			return nil, 0, err
		}
	}
	return ids, time.Since(start), nil
}

// pool is the set of open sockets, indexed by user.
type pool struct {
	socks []*socket

	mu          sync.Mutex
	disconnects map[string]int64 // by close code or "eof" for sockets the server closed
	lost        atomic.Int64
}

func newPool(n int) *pool {
	return &pool{socks: make([]*socket, n), disconnects: map[string]int64{}}
}

// onExit counts sockets the server ended while the bench still used them.
func (p *pool) onExit(s *socket) {
	if s.local.Load() {
		return
	}
	p.lost.Add(1)
	key := "eof"
	if c := s.closeCode.Load(); c != 0 {
		key = fmt.Sprint(c)
	}
	p.mu.Lock()
	p.disconnects[key]++
	p.mu.Unlock()
}

func (p *pool) disconnectCounts() map[string]int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]int64, len(p.disconnects))
	for k, v := range p.disconnects {
		out[k] = v
	}
	return out
}

// connect opens one socket per user in p with bounded concurrency and
// retries. It fails on the first socket that cannot be opened.
func (r *runner) connect(ctx context.Context, p *pool, onText frameFunc) (time.Duration, error) {
	start := time.Now()
	ttl := r.cfg.Warmup + r.cfg.Duration*time.Duration(max(1, len(r.cfg.Ramp))) + r.cfg.Hold + r.cfg.Settle + 2*time.Hour
	bar := r.bar(len(p.socks), "sockets")
	err := parallel(ctx, len(p.socks), r.cfg.ConnectConcurrency, func() { _ = bar.Add(1) }, func(ctx context.Context, i int) error {
		token, err := r.minter.Mint(userID(r.cfg.UserPrefix, i), fmt.Sprintf("Bench User %d", i), ttl)
		if err != nil {
			return err
		}
		s, err := r.dialer.openSocket(ctx, i, token, 5, onText, p.onExit)
		if err != nil {
			return fmt.Errorf("socket %d of %d: %w", i+1, len(p.socks), err)
		}
		p.socks[i] = s
		return nil
	})
	_ = bar.Finish()
	return time.Since(start), err
}

// frameCounts counts what the server sends to a run's sockets.
type frameCounts struct {
	frames, bytes atomic.Int64
	types         *typeCounter
}

func newFrameCounts() *frameCounts { return &frameCounts{types: newTypeCounter()} }

// count counts one frame of type typ.
func (fc *frameCounts) count(b []byte, typ string) {
	fc.frames.Add(1)
	fc.bytes.Add(int64(len(b)))
	fc.types.add(typ)
}

// openSockets connects one socket per user of p and fills in rep's connect
// figures. finish closes them all and fills in the rest of rep's socket
// figures from fc; it is due however the run ends, and is called here
// already if connecting fails.
func (r *runner) openSockets(ctx context.Context, p *pool, fc *frameCounts, onText frameFunc, rep *Report) (finish func(), err error) {
	r.logf("opening %d sockets", r.cfg.Users)
	connDur, err := r.connect(ctx, p, onText)
	finish = func() {
		rep.AliveAtEnd = p.aliveCount()
		rep.CloseSeconds = round3(r.closeAll(p).Seconds())
		rep.FramesIn, rep.BytesIn = fc.frames.Load(), fc.bytes.Load()
		rep.FramesByType = fc.types.snapshot()
		rep.Disconnects = p.disconnectCounts()
	}
	if err != nil {
		finish()
		return nil, err
	}
	rep.Sockets, rep.ConnectSeconds = r.cfg.Users, round3(connDur.Seconds())
	rep.ConnectPerSec = round3(float64(r.cfg.Users) / connDur.Seconds())
	return finish, nil
}

// closeAll closes every open socket (1000, then waits briefly for the
// server's close) with bounded concurrency.
func (r *runner) closeAll(p *pool) time.Duration {
	start := time.Now()
	var open []*socket
	for _, s := range p.socks {
		if s != nil {
			open = append(open, s)
		}
	}
	_ = parallel(context.Background(), len(open), 256, nil, func(_ context.Context, i int) error {
		open[i].close(2 * time.Second)
		return nil
	})
	return time.Since(start)
}

// aliveCount is the number of sockets whose reader still runs.
func (p *pool) aliveCount() int {
	n := 0
	for _, s := range p.socks {
		if s != nil && s.alive() {
			n++
		}
	}
	return n
}
