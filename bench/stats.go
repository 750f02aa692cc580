package bench

import (
	"cmp"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Percentiles summarises a latency distribution, in milliseconds.
type Percentiles struct {
	Count int64   `json:"count"`
	Mean  float64 `json:"mean"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p999"`
	Max   float64 `json:"max"`
}

// Summarize computes nearest-rank percentiles of samples. It sorts samples
// in place.
func Summarize(samples []time.Duration) Percentiles {
	n := len(samples)
	if n == 0 {
		return Percentiles{}
	}
	slices.Sort(samples)
	var sum float64
	for _, d := range samples {
		sum += float64(d)
	}
	rank := func(p float64) float64 {
		i := int(math.Ceil(p/100*float64(n))) - 1
		i = max(0, min(i, n-1))
		return ms(samples[i])
	}
	return Percentiles{
		Count: int64(n),
		Mean:  round3(sum / float64(n) / float64(time.Millisecond)),
		P50:   rank(50),
		P90:   rank(90),
		P99:   rank(99),
		P999:  rank(99.9),
		Max:   ms(samples[n-1]),
	}
}

func ms(d time.Duration) float64 { return round3(float64(d) / float64(time.Millisecond)) }

func round3(f float64) float64 { return math.Round(f*1000) / 1000 }

// Recorder collects latency samples from many goroutines. Samples are kept
// exactly (a run is bounded in count), in shards to keep lock contention low.
type Recorder struct {
	shards [16]struct {
		mu      sync.Mutex
		samples []time.Duration
		_       [40]byte // keep shards on separate cache lines
	}
}

// Add records d in the shard chosen by key (any integer spreading callers).
func (r *Recorder) Add(key int, d time.Duration) {
	if d < 0 {
		d = 0
	}
	s := &r.shards[uint(key)%uint(len(r.shards))]
	s.mu.Lock()
	s.samples = append(s.samples, d)
	s.mu.Unlock()
}

// Summary merges the shards and summarises them.
func (r *Recorder) Summary() Percentiles {
	var all []time.Duration
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		all = append(all, s.samples...)
		s.mu.Unlock()
	}
	return Summarize(all)
}

// maxMembers bounds the members of a conversation the tracker follows.
const maxMembers = 8

// Tracker accounts for the messages of one fan-out run: which were sent,
// acknowledged and delivered to which member, duplicates and order. Every
// method is safe for concurrent use; nothing in it touches the network.
type Tracker struct {
	convs []trackedConv
	lat   Recorder // send -> delivery, measured messages only
	ack   Recorder // send -> ACK, measured messages only

	sent, sendFailed, acked, delivered, dups, ooo, unknown, measuredDelivered atomic.Int64
	refused, refusedMeasured                                                  atomic.Int64

	errMu  sync.Mutex
	errors map[string]int64
}

type trackedConv struct {
	mu      sync.Mutex
	members []int // socket (user) indexes
	msgs    []trackedMsg
	// lastStream[r] is the highest stream seq member r received; lastSeq[r][s]
	// the highest bench seq member r received from sender s.
	lastStream [maxMembers]int64
	lastSeq    [maxMembers][maxMembers]int
}

type trackedMsg struct {
	sender   int8 // member index
	failed   bool // the write failed, or the server refused it: nothing is expected
	refused  bool // the server answered it with an ERROR
	measured bool // sent after warm-up: its latency counts
	acked    bool
	got      [maxMembers]uint8 // deliveries per member index (saturating)
}

// NewTracker follows conversations whose members (socket indexes, at most
// eight each) are members[i] for conversation index i.
func NewTracker(members [][]int) *Tracker {
	t := &Tracker{convs: make([]trackedConv, len(members)), errors: map[string]int64{}}
	for i, m := range members {
		if len(m) > maxMembers {
			m = m[:maxMembers]
		}
		t.convs[i].members = m
	}
	return t
}

// Members returns the socket indexes of conversation conv.
func (t *Tracker) Members(conv int) []int { return t.convs[conv].members }

// Send registers a message about to be sent to conversation conv by member
// index sender and returns its sequence number in the conversation (from 1).
func (t *Tracker) Send(conv, sender int, measured bool) int {
	c := &t.convs[conv]
	c.mu.Lock()
	c.msgs = append(c.msgs, trackedMsg{sender: int8(sender), measured: measured})
	seq := len(c.msgs)
	c.mu.Unlock()
	t.sent.Add(1)
	return seq
}

// SendFailed marks a message whose write failed: no delivery is expected.
func (t *Tracker) SendFailed(conv, seq int) {
	c := &t.convs[conv]
	c.mu.Lock()
	if seq >= 1 && seq <= len(c.msgs) && !c.msgs[seq-1].failed {
		c.msgs[seq-1].failed = true
		t.sendFailed.Add(1)
	}
	c.mu.Unlock()
}

// Refused marks a message the server answered with an ERROR: nothing was
// stored, no delivery is expected (it counts as a failed send too).
func (t *Tracker) Refused(conv, seq int) {
	if conv < 0 || conv >= len(t.convs) {
		return
	}
	c := &t.convs[conv]
	c.mu.Lock()
	defer c.mu.Unlock()
	if seq < 1 || seq > len(c.msgs) || c.msgs[seq-1].refused {
		return
	}
	m := &c.msgs[seq-1]
	m.refused = true
	t.refused.Add(1)
	if m.measured {
		t.refusedMeasured.Add(1)
	}
	if !m.failed {
		m.failed = true
		t.sendFailed.Add(1)
	}
}

// Ack records the server's acknowledgement of a message, latency after its
// send.
func (t *Tracker) Ack(conv, seq int, latency time.Duration) {
	if conv < 0 || conv >= len(t.convs) {
		t.unknown.Add(1)
		return
	}
	c := &t.convs[conv]
	c.mu.Lock()
	if seq < 1 || seq > len(c.msgs) {
		c.mu.Unlock()
		t.unknown.Add(1)
		return
	}
	m := &c.msgs[seq-1]
	first, measured := !m.acked, m.measured
	m.acked = true
	c.mu.Unlock()
	if first {
		t.acked.Add(1)
		if measured {
			t.ack.Add(conv, latency)
		}
	}
}

// Deliver records that socket receiver got message seq of conversation conv
// with stream sequence streamSeq (0 if unknown), latency after its send.
func (t *Tracker) Deliver(conv, seq, receiver int, streamSeq int64, latency time.Duration) {
	if conv < 0 || conv >= len(t.convs) {
		t.unknown.Add(1)
		return
	}
	c := &t.convs[conv]
	c.mu.Lock()
	r := slices.Index(c.members, receiver)
	if r < 0 || seq < 1 || seq > len(c.msgs) {
		c.mu.Unlock()
		t.unknown.Add(1)
		return
	}
	m := &c.msgs[seq-1]
	if m.got[r] > 0 {
		if m.got[r] < math.MaxUint8 {
			m.got[r]++
		}
		c.mu.Unlock()
		t.dups.Add(1)
		return
	}
	m.got[r] = 1
	outOfOrder := false
	if streamSeq > 0 {
		if streamSeq <= c.lastStream[r] {
			outOfOrder = true
		} else {
			c.lastStream[r] = streamSeq
		}
	}
	s := int(m.sender)
	if seq <= c.lastSeq[r][s] {
		outOfOrder = true
	} else {
		c.lastSeq[r][s] = seq
	}
	measured := m.measured
	c.mu.Unlock()

	t.delivered.Add(1)
	if outOfOrder {
		t.ooo.Add(1)
	}
	if measured {
		t.measuredDelivered.Add(1)
		t.lat.Add(receiver, latency)
	}
}

// Unknown counts a message frame the tracker cannot attribute (not sent by
// this run, or from an earlier ramp step).
func (t *Tracker) Unknown() { t.unknown.Add(1) }

// Error counts an ERROR frame by its code.
func (t *Tracker) Error(code string) {
	if code == "" {
		code = "(none)"
	}
	t.errMu.Lock()
	t.errors[code]++
	t.errMu.Unlock()
}

// Counts are the accounting figures of a run.
type Counts struct {
	Sent              int64            `json:"sent"`
	SendFailed        int64            `json:"send_failed"`
	Acked             int64            `json:"acked"`
	Expected          int64            `json:"expected"`
	Delivered         int64            `json:"delivered"`
	MeasuredDelivered int64            `json:"measured_delivered"`
	Lost              int64            `json:"lost"`
	Duplicated        int64            `json:"duplicated"`
	OutOfOrder        int64            `json:"out_of_order"`
	Unknown           int64            `json:"unknown"`
	Errors            map[string]int64 `json:"errors"`
	// Refused sends were answered with an ERROR (RefusedMeasured: of those
	// sent after the warm-up); AckedLost counts deliveries of acknowledged
	// messages that never came; Unanswered, sends neither acknowledged nor
	// refused (nor failed to write).
	Refused         int64 `json:"refused"`
	RefusedMeasured int64 `json:"refused_measured"`
	AckedLost       int64 `json:"acked_lost"`
	Unanswered      int64 `json:"unanswered"`
}

// Counts returns the accounting figures. Lost counts members that have not
// received a message sent to them (so far).
func (t *Tracker) Counts() Counts {
	var expected, lost, ackedLost, unanswered int64
	for i := range t.convs {
		c := &t.convs[i]
		c.mu.Lock()
		for j := range c.msgs {
			m := &c.msgs[j]
			if m.failed {
				continue
			}
			if !m.acked {
				unanswered++
			}
			for r := range c.members {
				expected++
				if m.got[r] == 0 {
					lost++
					if m.acked {
						ackedLost++
					}
				}
			}
		}
		c.mu.Unlock()
	}
	t.errMu.Lock()
	errs := make(map[string]int64, len(t.errors))
	for k, v := range t.errors {
		errs[k] = v
	}
	t.errMu.Unlock()
	return Counts{
		Sent:              t.sent.Load(),
		SendFailed:        t.sendFailed.Load(),
		Acked:             t.acked.Load(),
		Expected:          expected,
		Delivered:         t.delivered.Load(),
		MeasuredDelivered: t.measuredDelivered.Load(),
		Lost:              lost,
		Duplicated:        t.dups.Load(),
		OutOfOrder:        t.ooo.Load(),
		Unknown:           t.unknown.Load(),
		Errors:            errs,
		Refused:           t.refused.Load(),
		RefusedMeasured:   t.refusedMeasured.Load(),
		AckedLost:         ackedLost,
		Unanswered:        unanswered,
	}
}

// Latency summarises send -> delivery latency of measured messages.
func (t *Tracker) Latency() Percentiles { return t.lat.Summary() }

// AckLatency summarises send -> ACK latency of measured messages.
func (t *Tracker) AckLatency() Percentiles { return t.ack.Summary() }

// Timeline keeps the slowest delivery of each fixed window of arrival time,
// so a report can show when the tail happened: a periodic stall (a timer
// firing for every socket at once) and an evenly slow run can have the same
// p99. Safe for concurrent use.
type Timeline struct {
	start, width int64 // unix ns, ns
	max          []atomic.Int64
}

// Window is one window of a Timeline.
type Window struct {
	AtS   float64 `json:"at_s"`   // its start, seconds after the timeline's
	MaxMS float64 `json:"max_ms"` // the slowest delivery that arrived in it
}

// NewTimeline covers span from start in windows of width.
func NewTimeline(start time.Time, width, span time.Duration) *Timeline {
	return &Timeline{start: start.UnixNano(), width: int64(width), max: make([]atomic.Int64, span/width+1)}
}

// Add records a delivery that arrived at (unix ns) after latency; arrivals
// outside the span are ignored.
func (tl *Timeline) Add(at int64, latency time.Duration) {
	i := (at - tl.start) / tl.width
	if at < tl.start || i >= int64(len(tl.max)) {
		return
	}
	m := &tl.max[i]
	for {
		old := m.Load()
		if int64(latency) <= old || m.CompareAndSwap(old, int64(latency)) {
			return
		}
	}
}

// Slowest returns the n windows with the slowest deliveries, in time order.
func (tl *Timeline) Slowest(n int) []Window {
	var ws []Window
	for i := range tl.max {
		if v := tl.max[i].Load(); v > 0 {
			ws = append(ws, Window{AtS: round3(float64(int64(i)*tl.width) / 1e9), MaxMS: ms(time.Duration(v))})
		}
	}
	slices.SortStableFunc(ws, func(a, b Window) int { return cmp.Compare(b.MaxMS, a.MaxMS) })
	ws = ws[:min(n, len(ws))]
	slices.SortFunc(ws, func(a, b Window) int { return cmp.Compare(a.AtS, b.AtS) })
	return ws
}
