package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// senders is the number of goroutines writing frames; each owns a fixed share
// of the sockets so that one sender's frames stay in order.
const senders = 4

// inFrame is what the bench reads from a server frame.
type inFrame struct {
	Type           string  `json:"type"`
	ConversationID int64   `json:"conversation_id"`
	Message        *string `json:"message"`
	Seq            int64   `json:"seq"`
	ClientMsgID    string  `json:"client_msg_id"`
	Code           string  `json:"code"`
}

// stepState is one step (a ramp rate, an overload phase): the tracker and
// timeline its frames are attributed to.
type stepState struct {
	n    int
	tr   *Tracker
	tl   *Timeline
	done atomic.Bool // accounted: later frames of it are stale
}

// fanoutRun is the state shared by the receivers of a fan-out run.
type fanoutRun struct {
	convIdx map[int64]int // conversation id -> plan index (read-only)
	// steps so far, by number from 1: replaced (copied) when one starts, so
	// receivers read it without a lock.
	steps atomic.Pointer[[]*stepState]

	frameCounts
	stale, undecodable atomic.Int64
}

// step returns step n, or nil.
func (f *fanoutRun) step(n int) *stepState {
	p := f.steps.Load()
	if p == nil || n < 1 || n > len(*p) {
		return nil
	}
	return (*p)[n-1]
}

// latest returns the step begun last, or nil.
func (f *fanoutRun) latest() *stepState {
	p := f.steps.Load()
	if p == nil || len(*p) == 0 {
		return nil
	}
	return (*p)[len(*p)-1]
}

// begin adds step st (numbered after the others).
func (f *fanoutRun) begin(st *stepState) {
	var steps []*stepState
	if p := f.steps.Load(); p != nil {
		steps = append(steps, *p...)
	}
	steps = append(steps, st)
	st.n = len(steps)
	f.steps.Store(&steps)
}

// onText handles one server frame. A message, ACK or ERROR counts for the
// step its text or client_msg_id names, so a step's late frames still count
// for it while the next one runs; after it was accounted they are stale.
func (f *fanoutRun) onText(s *socket, b []byte) {
	now := time.Now().UnixNano()
	f.frames.Add(1)
	f.bytes.Add(int64(len(b)))
	var fr inFrame
	if err := json.Unmarshal(b, &fr); err != nil {
		f.undecodable.Add(1)
		f.types.add("undecodable")
		return
	}
	switch {
	case fr.Message != nil: // a message frame
		f.types.add("message")
		step, seq, nanos, ok := parseMessageText(*fr.Message)
		conv, known := f.convIdx[fr.ConversationID]
		st := f.step(step)
		switch {
		case !ok || !known || st == nil:
			if st := f.latest(); st != nil {
				st.tr.Unknown()
			}
		case st.done.Load():
			f.stale.Add(1)
		default:
			st.tr.Deliver(conv, seq, s.idx, fr.Seq, time.Duration(now-nanos))
			st.tl.Add(now, time.Duration(now-nanos))
		}
	case fr.Type == "ACK":
		f.types.add(fr.Type)
		step, conv, seq, nanos, ok := parseClientMsgID(fr.ClientMsgID)
		if st := f.step(step); ok && st != nil && !st.done.Load() {
			st.tr.Ack(conv, seq, time.Duration(now-nanos))
		}
	case fr.Type == "ERROR":
		f.types.add(fr.Type)
		step, conv, seq, _, ok := parseClientMsgID(fr.ClientMsgID)
		st := f.step(step)
		if !ok || st == nil {
			st = f.latest()
		}
		if st == nil || st.done.Load() {
			return
		}
		st.tr.Error(fr.Code)
		// The message was refused: nothing was stored, nothing will come.
		if ok {
			st.tr.Refused(conv, seq)
		}
	default:
		f.types.add(fr.Type)
	}
}

// connectFanout seeds two-member conversations and connects every user:
// how a fan-out run and an overload run start. finish closes the sockets.
func (r *runner) connectFanout(ctx context.Context, rep *Report) (f *fanoutRun, p *pool, plan [][]int, ids []int64, finish func(), err error) {
	cfg := r.cfg
	plan = seedPlan(ModeFanout, cfg.Users, cfg.Conversations, 0, cfg.ConvSize, cfg.Seed)
	r.logf("seeding %d conversations of %d members for %d users", len(plan), cfg.ConvSize, cfg.Users)
	ids, seedDur, err := r.seed(ctx, plan)
	if err != nil {
		return nil, nil, nil, nil, nil, err
	}
	rep.Conversations, rep.SeedSeconds = len(plan), round3(seedDur.Seconds())
	f = &fanoutRun{convIdx: make(map[int64]int, len(ids)), frameCounts: frameCounts{types: newTypeCounter()}}
	for i, id := range ids {
		f.convIdx[id] = i
	}
	p = newPool(cfg.Users)
	finish, err = r.openSockets(ctx, p, &f.frameCounts, f.onText, rep)
	if err != nil {
		return nil, nil, nil, nil, nil, err
	}
	return f, p, plan, ids, finish, nil
}

// fanout seeds two-member conversations, connects every user, then sends at
// the target rate (or each ramp rate in turn) and accounts for every
// delivery.
func (r *runner) fanout(ctx context.Context, rep *Report) error {
	cfg := r.cfg
	f, p, plan, ids, finish, err := r.connectFanout(ctx, rep)
	if err != nil {
		return err
	}
	sleep(ctx, cfg.Settle)

	rates := cfg.Ramp
	if len(rates) == 0 {
		rates = []float64{cfg.Rate}
	} else {
		rep.RampP99MS = ms(cfg.RampP99)
	}
	for i, rate := range rates {
		if ctx.Err() != nil {
			break
		}
		r.logf("step %d: %.0f msg/s for %v (warm-up %v)", i+1, rate, cfg.Duration, cfg.Warmup)
		sr, err := r.step(ctx, f, p, plan, ids, rate)
		if err != nil {
			finish()
			return err
		}
		if len(cfg.Ramp) == 0 {
			rep.Fanout = &sr
			break
		}
		rep.Ramp = append(rep.Ramp, sr)
		if !sr.Pass {
			r.logf("step %d failed: %s; stopping the ramp", i+1, sr.Fail)
			break
		}
		rep.MaxRateOK = rate
		rep.Fanout = &rep.Ramp[len(rep.Ramp)-1]
	}
	finish()
	if ctx.Err() != nil && rep.Fanout == nil && len(rep.Ramp) == 0 {
		return ctx.Err()
	}
	return nil
}

// A step reports its slowestWindows windows of timelineWindow.
const (
	timelineWindow = 100 * time.Millisecond
	slowestWindows = 5
)

// sendJob is one message for a sender goroutine.
type sendJob struct {
	sock *socket
	conv int
	seq  int
	due  int64 // scheduled send time, unix nanos
}

// stepRun is a step being run: what send began and account finishes.
type stepRun struct {
	st                  *stepState
	rate                float64
	warmup, duration    time.Duration
	m0                  Sample
	cpu0                time.Duration
	t0, measureFrom     time.Time
	sendEnd             time.Time
	scheduled, measured int64
	lag                 Recorder
	storm               *storm
}

// step sends at rate for warm-up plus duration, waits for the deliveries to
// drain (bounded), and accounts.
func (r *runner) step(ctx context.Context, f *fanoutRun, p *pool, plan [][]int, ids []int64, rate float64) (StepReport, error) {
	run, err := r.send(ctx, f, p, plan, ids, rate, r.cfg.Warmup, r.cfg.Duration)
	if err != nil {
		return StepReport{}, err
	}
	drainEnd := r.drain(ctx, r.cfg.Drain, run)
	return r.account(ctx, f, run, drainEnd)
}

// send begins a step and sends at rate for warmup plus duration (a typing
// storm alongside, if configured), then returns; its deliveries keep
// counting for it until it is accounted.
func (r *runner) send(ctx context.Context, f *fanoutRun, p *pool, plan [][]int, ids []int64, rate float64, warmup, duration time.Duration) (*stepRun, error) {
	cfg := r.cfg
	run := &stepRun{rate: rate, warmup: warmup, duration: duration}
	tr := NewTracker(plan)
	// Windows from the end of the warm-up, as the latency figures.
	tl := NewTimeline(time.Now().Add(warmup), timelineWindow, duration+cfg.Drain)
	run.st = &stepState{tr: tr, tl: tl}
	f.begin(run.st)
	n := run.st.n

	var err error
	if run.m0, err = scrape(ctx, r.http, r.base+"/metrics"); err != nil {
		return nil, err
	}
	run.cpu0, run.t0 = cpuTime(), time.Now()
	t0 := run.t0

	stormCtx, stopStorm := context.WithCancel(ctx)
	defer stopStorm()
	var stormDone sync.WaitGroup
	if cfg.TypingSockets > 0 {
		run.storm = newStorm(p, plan, ids, cfg.TypingSockets, cfg.TypingEvery)
		stormDone.Go(func() { run.storm.run(stormCtx) })
	}

	var wg sync.WaitGroup
	jobs := make([]chan sendJob, senders)
	for w := range jobs {
		jobs[w] = make(chan sendJob, 4096)
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf []byte
			for j := range jobs[w] {
				now := time.Now().UnixNano()
				run.lag.Add(j.conv, time.Duration(now-j.due))
				buf = appendMessageFrame(buf[:0], ids[j.conv], n, j.conv, j.seq, now)
				if err := j.sock.writeText(buf); err != nil {
					tr.SendFailed(j.conv, j.seq)
				}
			}
		}()
	}

	rng := rand.New(rand.NewPCG(cfg.Seed, uint64(n)))
	total := int64(rate * (warmup + duration).Seconds())
	run.measureFrom = t0.Add(warmup)
	ticker := time.NewTicker(time.Millisecond)
	interval := float64(time.Second) / rate
pace:
	for run.scheduled < total {
		select {
		case <-ctx.Done():
			break pace
		case <-ticker.C:
		}
		now := time.Now()
		due := min(total, int64(float64(now.Sub(t0))/interval)+1)
		for ; run.scheduled < due; run.scheduled++ {
			conv, member, sock := pickSender(rng, plan, p)
			if sock == nil {
				continue // nobody left to send from: counted by the missing sends
			}
			at := t0.Add(time.Duration(float64(run.scheduled) * interval))
			measured := !at.Before(run.measureFrom)
			if measured {
				run.measured++
			}
			seq := tr.Send(conv, member, measured)
			jobs[sock.idx%senders] <- sendJob{sock: sock, conv: conv, seq: seq, due: at.UnixNano()}
		}
	}
	ticker.Stop()
	for _, c := range jobs {
		close(c)
	}
	wg.Wait()
	run.sendEnd = time.Now()
	stopStorm()
	stormDone.Wait()
	return run, nil
}

// drain waits until every expected delivery and every answer (ACK or ERROR)
// of runs came, or for at most bound, and returns when it stopped.
func (r *runner) drain(ctx context.Context, bound time.Duration, runs ...*stepRun) time.Time {
	deadline := time.Now().Add(bound)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		drained := true
		for _, run := range runs {
			c := run.st.tr.Counts()
			if c.Delivered < c.Expected || c.Acked < c.Sent-c.SendFailed {
				drained = false
			}
		}
		if drained {
			break
		}
		sleep(ctx, 20*time.Millisecond)
	}
	return time.Now()
}

// account ends a step: its figures, from its start to drainEnd, and whether
// it passed.
func (r *runner) account(ctx context.Context, f *fanoutRun, run *stepRun, drainEnd time.Time) (StepReport, error) {
	cfg := r.cfg
	m1, err := scrape(context.WithoutCancel(ctx), r.http, r.base+"/metrics")
	if err != nil {
		return StepReport{}, err
	}
	cpu1 := cpuTime()
	tr, tl := run.st.tr, run.st.tl
	run.st.done.Store(true)

	sr := StepReport{
		RateTarget:    run.rate,
		WarmupSeconds: run.warmup.Seconds(),
		Seconds:       round3(run.sendEnd.Sub(run.measureFrom).Seconds()),
		DrainSeconds:  round3(drainEnd.Sub(run.sendEnd).Seconds()),
		Counts:        tr.Counts(),
		Stale:         f.stale.Swap(0),
		Latency:       tr.Latency(),
		AckLatency:    tr.AckLatency(),
		SendLag:       run.lag.Summary(),
		Slowest:       tl.Slowest(slowestWindows),
		BenchCPUPct:   cpuPct(cpu1-run.cpu0, drainEnd.Sub(run.t0), runtimeCores()),
		ServerCPUPct:  serverCPUPct(run.m0, m1, drainEnd.Sub(run.t0), runtimeCores()),
		ServerRSS:     gauge(m1, "process_resident_memory_bytes"),
	}
	if w := delta(run.m0, m1, "inbox_socket_writes_total"); w > 0 {
		sr.ServerFramesPerWrite = round3(delta(run.m0, m1, "inbox_frames_out_total") / w)
	}
	sr.ServerCPUSeconds, sr.BenchCPUSeconds = round3(serverCPUSeconds(run.m0, m1)), round3((cpu1 - run.cpu0).Seconds())
	if sr.Delivered > 0 {
		sr.ServerCPUPerDelivery = round3(1e6 * serverCPUSeconds(run.m0, m1) / float64(sr.Delivered))
		sr.BenchCPUPerDelivery = round3(1e6 * (cpu1 - run.cpu0).Seconds() / float64(sr.Delivered))
	}
	if st := run.storm; st != nil {
		sr.TypingSockets, sr.TypingSent, sr.TypingFailed = len(st.typers), st.sent.Load(), st.fails.Load()
		if d := run.sendEnd.Sub(run.t0).Seconds(); d > 0 {
			sr.TypingPerS = round3(float64(sr.TypingSent) / d)
		}
	}
	if sr.Seconds > 0 {
		sr.RateAchieved = round3(float64(run.measured) / sr.Seconds)
		sr.DeliveredPerS = round3(float64(sr.MeasuredDelivered) / sr.Seconds)
	}
	sr.Pass, sr.Fail = judge(sr, cfg.RampP99, cfg.keepUp)
	if ctx.Err() != nil {
		sr.Pass, sr.Fail = false, "interrupted"
	}
	return sr, nil
}

// judge says whether a step passed: everything delivered, nothing refused,
// p99 within bound, and the bench kept up with the target rate (sent at
// least keepUp of it).
func judge(s StepReport, p99 time.Duration, keepUp float64) (bool, string) {
	var errs int64
	for _, n := range s.Errors {
		errs += n
	}
	switch {
	case s.Sent == 0:
		return false, "nothing sent"
	case s.Lost > 0:
		return false, fmt.Sprintf("%d deliveries lost", s.Lost)
	case errs > 0 || s.SendFailed > 0:
		return false, fmt.Sprintf("%d sends refused or failed", max(errs, s.SendFailed))
	case s.Latency.P99 > ms(p99):
		return false, fmt.Sprintf("p99 %.1f ms > %.0f ms", s.Latency.P99, ms(p99))
	case s.RateAchieved < keepUp*s.RateTarget:
		return false, fmt.Sprintf("bench sent only %.0f msg/s", s.RateAchieved)
	}
	return true, ""
}

// pickSender chooses a random conversation and a random member with an open
// socket.
func pickSender(rng *rand.Rand, plan [][]int, p *pool) (conv, member int, sock *socket) {
	for range 8 {
		conv = rng.IntN(len(plan))
		member = rng.IntN(len(plan[conv]))
		if s := p.socks[plan[conv][member]]; s != nil && s.alive() {
			return conv, member, s
		}
	}
	return 0, 0, nil
}
