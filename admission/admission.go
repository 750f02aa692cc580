// Package admission sheds load at the door. A node that cannot deliver what
// it already took on in time refuses more work before anything is appended,
// instead of taking everything and delivering it late: a refused client is
// told to retry (and when), an accepted message is delivered in time.
//
// Three signals say the node cannot keep up, each against its bound:
//
//   - feed lag: how far behind the stream the live feed dispatches (the age
//     of the events it dispatches, and how long it has been stuck with work
//     known to be waiting);
//   - append latency: how long a send takes from the service to the stream's
//     acknowledgement (the slowest of those completed in the last quarter
//     second, or the mean age of those still waiting);
//   - socket queues: frames waiting in the sockets' write queues, node-wide.
//
// Messages and read receipts are refused once a signal passes its bound;
// typing events and presence changes already at half of it, so they go first.
package admission

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"inbox/eventstore"
)

// Kind is what is asked for.
type Kind uint8

// Kinds, most valuable first.
const (
	Message  Kind = iota // a message or a read receipt: shed last
	Typing               // a typing event: shed early
	Presence             // a presence change pushed to contacts: shed early
	numKinds
)

var kindNames = [numKinds]string{"message", "typing", "presence"}

func (k Kind) String() string { return kindNames[k] }

// Reason is the signal that shed a request.
type Reason uint8

// Reasons (the reason label of inbox_shed_total).
const (
	FeedLag Reason = iota
	AppendLatency
	SocketQueue
	numReasons
)

var reasonNames = [numReasons]string{"feed_lag", "append_latency", "socket_queue"}

func (r Reason) String() string { return reasonNames[r] }

// Defaults for zero Config fields.
const (
	// DefaultMaxFeedLag: a live event older than this when dispatched means
	// deliveries run late. At the passing rates of `inbox bench` the feed
	// stays within tens of milliseconds.
	DefaultMaxFeedLag = 500 * time.Millisecond
	// DefaultMaxAppendLatency: a send taking longer than this to be stored
	// means sends queue inside the node.
	DefaultMaxAppendLatency = 500 * time.Millisecond
	// DefaultMaxQueuedFrames: frames waiting in socket write queues on the
	// node (a socket holds at most wsedge.DefaultQueueFrames).
	DefaultMaxQueuedFrames = 1 << 16
)

// earlyShare is the share of each bound at which typing and presence are shed.
const earlyShare = 0.5

// latencyWindow is the span over which the slowest completed append counts.
const latencyWindow = 250 * time.Millisecond

// idleLag is how long after its last dispatch a caught-up feed's lag reads 0.
const idleLag = time.Second

// Retry hints: the lag or latency that shed a request, at least minRetry,
// at most maxRetry, spread by ±25% so refused clients do not all return at once.
const (
	minRetry = 250 * time.Millisecond
	maxRetry = 10 * time.Second
)

// Config bounds the signals. Zero fields get the defaults above.
type Config struct {
	MaxFeedLag       time.Duration
	MaxAppendLatency time.Duration
	MaxQueuedFrames  int
	// Partitions is how many streams the event ids name (default 1;
	// eventstore.Split): the feed and the appends are compared per partition.
	Partitions int
	// Sparse: the feed dispatches only the events this node has an interest
	// in (feed's interest mode), not every event it appends, so an appended
	// event it has not dispatched is no sign that it lags: its lag is the
	// age of what it dispatches.
	Sparse bool
	// Shed counts refusals by kind and reason (inbox_shed_total); nil: not
	// counted in Prometheus (Counts still has them).
	Shed *prometheus.CounterVec

	now  func() time.Time // tests: the clock
	rand func() float64   // tests: the retry spread, in [0, 1)
}

func (c Config) withDefaults() Config {
	if c.MaxFeedLag <= 0 {
		c.MaxFeedLag = DefaultMaxFeedLag
	}
	if c.MaxAppendLatency <= 0 {
		c.MaxAppendLatency = DefaultMaxAppendLatency
	}
	if c.MaxQueuedFrames <= 0 {
		c.MaxQueuedFrames = DefaultMaxQueuedFrames
	}
	c.Partitions = min(max(c.Partitions, 1), eventstore.MaxPartitions)
	if c.now == nil {
		c.now = time.Now
	}
	if c.rand == nil {
		c.rand = rand.Float64
	}
	return c
}

// Shed is the error of a refused request. Nothing was done: the client
// retries after RetryAfter.
type Shed struct {
	Kind   Kind
	Reason Reason
	// Value is the signal and Bound the bound it passed: nanoseconds, or
	// frames for SocketQueue.
	Value, Bound int64
	RetryAfter   time.Duration
}

func (e *Shed) Error() string {
	retry := e.RetryAfter.Round(10 * time.Millisecond)
	if e.Reason == SocketQueue {
		return fmt.Sprintf("server busy: %d frames wait in socket queues (bound %d); nothing was stored, retry in %v", e.Value, e.Bound, retry)
	}
	what := "the live feed is"
	if e.Reason == AppendLatency {
		what = "sends are"
	}
	return fmt.Sprintf("server busy: %s %v behind (bound %v); nothing was stored, retry in %v",
		what, time.Duration(e.Value).Round(time.Millisecond), time.Duration(e.Bound), retry)
}

// Controller decides. Its methods are safe for concurrent use and do not block.
type Controller struct {
	cfg   Config
	epoch time.Time // in-flight start times are milliseconds since it

	// The feed (Dispatched), and what this node appended (Done): the last
	// stream sequence of each, per partition.
	dispatchedSeq [eventstore.MaxPartitions]atomic.Uint64
	appendedSeq   [eventstore.MaxPartitions]atomic.Uint64
	// waitingSince: unix ns at which an append found the feed caught up
	// with this node's appends in its partition, so the feed had work
	// waiting from then on (not from its last dispatch, which may be long
	// before, after an idle spell).
	waitingSince [eventstore.MaxPartitions]atomic.Int64
	dispatchedAt atomic.Int64 // unix ns of the last dispatch
	dispatchLag  atomic.Int64 // ns: the last dispatched event's age then

	// Under latMu, so they are read together: the appends in flight (Begin,
	// Done), how many and the sum of their start times (ms since epoch), so
	// their mean age needs no list; and the slowest completed append of the
	// current and the previous window.
	latMu          sync.Mutex
	inFlight       int64
	startSumMS     int64
	latWindow      int64 // the current window's number (unix ns / latencyWindow)
	latMax, latPrv time.Duration

	queued atomic.Int64 // frames in socket write queues

	shed     [numKinds][numReasons]atomic.Uint64
	counters [numKinds][numReasons]prometheus.Counter
}

// New returns a Controller.
func New(cfg Config) *Controller {
	cfg = cfg.withDefaults()
	c := &Controller{cfg: cfg, epoch: cfg.now()}
	c.dispatchedAt.Store(c.epoch.UnixNano())
	if cfg.Shed != nil {
		for k := range numKinds {
			for r := range numReasons {
				c.counters[k][r] = cfg.Shed.WithLabelValues(k.String(), r.String())
			}
		}
	}
	return c
}

// Config is the controller's configuration, defaults filled in.
func (c *Controller) Config() Config { return c.cfg }

// Admit returns nil if a request of kind k may go ahead, else a *Shed
// saying why and when to retry (and counts it).
func (c *Controller) Admit(k Kind) error { return c.AdmitWaited(k, 0) }

// AdmitWaited is Admit for a request that has already waited in the node
// for waited (since it arrived): one that waited past the append latency
// bound is refused, so what is accepted was not left waiting. The wait
// counts as append latency for the requests after it.
func (c *Controller) AdmitWaited(k Kind, waited time.Duration) error {
	if waited > 0 {
		c.observe(c.cfg.now(), waited)
	}
	s := c.check(k)
	if s == nil {
		return nil
	}
	c.shed[k][s.Reason].Add(1)
	if ctr := c.counters[k][s.Reason]; ctr != nil {
		ctr.Inc()
	}
	return s
}

// Busy reports whether a request of kind k would be refused now, without
// counting a refusal: for work held back and retried (presence changes).
func (c *Controller) Busy(k Kind) bool { return c.check(k) != nil }

// check is Admit's decision.
func (c *Controller) check(k Kind) *Shed {
	share := 1.0
	if k != Message {
		share = earlyShare
	}
	now := c.cfg.now()
	bound := func(d time.Duration) time.Duration { return time.Duration(share * float64(d)) }
	var s *Shed
	if lag, b := c.feedLag(now), bound(c.cfg.MaxFeedLag); lag > b {
		s = &Shed{Kind: k, Reason: FeedLag, Value: int64(lag), Bound: int64(b)}
	} else if lat, b := c.appendLatency(now), bound(c.cfg.MaxAppendLatency); lat > b {
		s = &Shed{Kind: k, Reason: AppendLatency, Value: int64(lat), Bound: int64(b)}
	} else if q, b := c.queued.Load(), int64(share*float64(c.cfg.MaxQueuedFrames)); q > b {
		s = &Shed{Kind: k, Reason: SocketQueue, Value: q, Bound: b}
	}
	if s == nil {
		return nil
	}
	hint := time.Second
	if s.Reason != SocketQueue {
		hint = time.Duration(s.Value)
	}
	hint = min(maxRetry, max(minRetry, hint))
	s.RetryAfter = time.Duration(float64(hint) * (0.75 + 0.5*c.cfg.rand()))
	return s
}

// Dispatched records that the feed dispatched event id, stored at stored
// (its stream time).
func (c *Controller) Dispatched(id uint64, stored time.Time) {
	now := c.cfg.now()
	k, seq := eventstore.Split(c.cfg.Partitions, id)
	c.dispatchedSeq[k].Store(seq)
	c.dispatchLag.Store(max(0, int64(now.Sub(stored))))
	c.dispatchedAt.Store(now.UnixNano())
}

// Begin records an append about to be made for a request that arrived at
// at (zero: now); pass what it returns to Done.
func (c *Controller) Begin(at time.Time) Started {
	if at.IsZero() {
		at = c.cfg.now()
	}
	ms := at.Sub(c.epoch).Milliseconds()
	c.latMu.Lock()
	c.inFlight++
	c.startSumMS += ms
	c.latMu.Unlock()
	return Started(ms)
}

// Started is when an append began (Begin).
type Started int64

// Done records the end of the append begun at s; id is the event it stored
// (0: nothing, it failed).
func (c *Controller) Done(s Started, id uint64) {
	now := c.cfg.now()
	c.latMu.Lock()
	c.inFlight--
	c.startSumMS -= int64(s)
	c.observeLocked(now, now.Sub(c.epoch)-time.Duration(s)*time.Millisecond)
	c.latMu.Unlock()
	if id != 0 {
		k, seq := eventstore.Split(c.cfg.Partitions, id)
		for {
			old := c.appendedSeq[k].Load()
			if seq <= old {
				break
			}
			if c.appendedSeq[k].CompareAndSwap(old, seq) {
				if old <= c.dispatchedSeq[k].Load() {
					c.waitingSince[k].Store(now.UnixNano()) // the feed had caught up: work waits from now
				}
				break
			}
		}
	}
}

// observe records a request that took (or has waited) d, at now.
func (c *Controller) observe(now time.Time, d time.Duration) {
	c.latMu.Lock()
	c.observeLocked(now, d)
	c.latMu.Unlock()
}

// observeLocked is observe with c.latMu held.
func (c *Controller) observeLocked(now time.Time, d time.Duration) {
	c.rotateLocked(now.UnixNano() / int64(latencyWindow))
	c.latMax = max(c.latMax, d)
}

// Queued adds n (negative: removes) to the frames waiting in socket queues.
func (c *Controller) Queued(n int) { c.queued.Add(int64(n)) }

// rotateLocked moves the latency windows on to window w.
func (c *Controller) rotateLocked(w int64) {
	switch {
	case w == c.latWindow:
	case w == c.latWindow+1:
		c.latPrv, c.latMax, c.latWindow = c.latMax, 0, w
	default:
		c.latPrv, c.latMax, c.latWindow = 0, 0, w
	}
}

// feedLag is how far behind the live feed is: the age of the event it
// dispatched last, plus, while an event this node appended waits to be
// dispatched, the time since the feed last made progress or, if later,
// since that work arrived. A caught-up feed idle for idleLag reads 0.
func (c *Controller) feedLag(now time.Time) time.Duration {
	at := c.dispatchedAt.Load()
	lag := time.Duration(c.dispatchLag.Load())
	since := now.Sub(time.Unix(0, at))
	for k := range c.cfg.Partitions {
		if !c.cfg.Sparse && c.appendedSeq[k].Load() > c.dispatchedSeq[k].Load() {
			return lag + max(0, now.Sub(time.Unix(0, max(at, c.waitingSince[k].Load()))))
		}
	}
	if since > idleLag {
		return 0
	}
	return lag
}

// appendLatency is the slowest append completed in the last window or so,
// or the mean age of those in flight if that is more.
func (c *Controller) appendLatency(now time.Time) time.Duration {
	w := now.UnixNano() / int64(latencyWindow)
	c.latMu.Lock()
	c.rotateLocked(w)
	lat := max(c.latMax, c.latPrv)
	if n := c.inFlight; n > 0 {
		mean := time.Duration(c.startSumMS/n) * time.Millisecond
		lat = max(lat, now.Sub(c.epoch)-mean)
	}
	c.latMu.Unlock()
	return lat
}

// Status is what the controller sees now and has shed so far.
type Status struct {
	FeedLag       time.Duration
	AppendLatency time.Duration
	QueuedFrames  int64
	// Shed counts refusals by kind, then reason ("message" → "feed_lag" → n);
	// only non-zero counts appear.
	Shed map[string]map[string]uint64
}

// Status reports the signals and the refusals so far.
func (c *Controller) Status() Status {
	now := c.cfg.now()
	s := Status{FeedLag: c.feedLag(now), AppendLatency: c.appendLatency(now), QueuedFrames: c.queued.Load(), Shed: map[string]map[string]uint64{}}
	for k := range numKinds {
		for r := range numReasons {
			if n := c.shed[k][r].Load(); n > 0 {
				if s.Shed[k.String()] == nil {
					s.Shed[k.String()] = map[string]uint64{}
				}
				s.Shed[k.String()][r.String()] = n
			}
		}
	}
	return s
}

// FeedLag is how far behind the live feed is now (inbox_feed_lag_seconds).
func (c *Controller) FeedLag() time.Duration { return c.feedLag(c.cfg.now()) }
