package admission

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"inbox/eventstore"
)

func value(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// clock is a fake time source.
type clock struct{ t time.Time }

func (c *clock) now() time.Time                { return c.t }
func (c *clock) add(d time.Duration)           { c.t = c.t.Add(d) }
func (c *clock) ago(d time.Duration) time.Time { return c.t.Add(-d) }

func newTest(t *testing.T, cfg Config) (*Controller, *clock) {
	t.Helper()
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	cfg.now = clk.now
	cfg.rand = func() float64 { return 0.5 } // no spread: RetryAfter is the hint
	return New(cfg), clk
}

// admits checks what Admit says for a message and for a typing event: nil
// if admitted, else the reason.
func admits(t *testing.T, c *Controller, msg, typing any) {
	t.Helper()
	for _, tc := range []struct {
		k    Kind
		want any
	}{{Message, msg}, {Typing, typing}, {Presence, typing}} {
		err := c.Admit(tc.k)
		var s *Shed
		switch want := tc.want.(type) {
		case nil:
			if err != nil {
				t.Fatalf("%v refused: %v", tc.k, err)
			}
		case Reason:
			if !errors.As(err, &s) || s.Reason != want || s.Kind != tc.k {
				t.Fatalf("%v: err = %v, want shed for %v", tc.k, err, want)
			}
		}
	}
}

func TestAdmitIdle(t *testing.T) {
	c, clk := newTest(t, Config{})
	admits(t, c, nil, nil)
	clk.add(time.Hour)
	admits(t, c, nil, nil)
}

func TestFeedLag(t *testing.T) {
	c, clk := newTest(t, Config{MaxFeedLag: 400 * time.Millisecond})
	// Events dispatched 300 ms after they were stored: messages go ahead,
	// typing (bound 200 ms) does not.
	c.Dispatched(1, clk.ago(300*time.Millisecond))
	admits(t, c, nil, FeedLag)
	c.Dispatched(2, clk.ago(500*time.Millisecond))
	admits(t, c, FeedLag, FeedLag)
	err := c.Admit(Message)
	var s *Shed
	if !errors.As(err, &s) || s.RetryAfter != 500*time.Millisecond || !strings.Contains(err.Error(), "nothing was stored") {
		t.Fatalf("err = %v (%+v)", err, s)
	}
	// Caught up: fresh again.
	c.Dispatched(3, clk.ago(time.Millisecond))
	admits(t, c, nil, nil)

	// A stalled feed: this node stored seq 5, the feed is still at 3.
	b := c.Begin(time.Time{})
	c.Done(b, 5)
	clk.add(150 * time.Millisecond)
	admits(t, c, nil, nil)
	clk.add(300 * time.Millisecond) // 450 ms without a dispatch, work waiting
	admits(t, c, FeedLag, FeedLag)
	c.Dispatched(5, clk.ago(2*time.Millisecond))
	admits(t, c, nil, nil)

	// A lag left by the last dispatch clears once the feed is idle.
	c.Dispatched(6, clk.ago(3*time.Second))
	admits(t, c, FeedLag, FeedLag)
	clk.add(idleLag + time.Millisecond)
	admits(t, c, nil, nil)
	if got := c.FeedLag(); got != 0 {
		t.Fatalf("idle feed lag = %v", got)
	}
}

func TestAppendLatency(t *testing.T) {
	c, clk := newTest(t, Config{MaxAppendLatency: 400 * time.Millisecond})
	b := c.Begin(time.Time{})
	clk.add(300 * time.Millisecond)
	admits(t, c, nil, AppendLatency) // in flight for 300 ms
	c.Done(b, 1)
	c.Dispatched(1, clk.now())
	admits(t, c, nil, AppendLatency) // took 300 ms
	// The slow append counts for its window and the next, then no more.
	clk.add(2 * latencyWindow)
	admits(t, c, nil, nil)

	// Appends stuck in flight count by their mean age.
	b1 := c.Begin(time.Time{})
	clk.add(600 * time.Millisecond)
	b2 := c.Begin(time.Time{})
	admits(t, c, nil, AppendLatency) // mean age 300 ms
	clk.add(200 * time.Millisecond)
	admits(t, c, AppendLatency, AppendLatency) // mean age 500 ms
	c.Done(b1, 0)
	c.Done(b2, 0)
	clk.add(2 * latencyWindow)
	admits(t, c, nil, nil)
}

func TestSocketQueue(t *testing.T) {
	c, _ := newTest(t, Config{MaxQueuedFrames: 1000})
	c.Queued(600)
	admits(t, c, nil, SocketQueue)
	c.Queued(500)
	admits(t, c, SocketQueue, SocketQueue)
	err := c.Admit(Message)
	var s *Shed
	if !errors.As(err, &s) || s.Value != 1100 || s.Bound != 1000 || s.RetryAfter != time.Second {
		t.Fatalf("err = %v (%+v)", err, s)
	}
	c.Queued(-1100)
	admits(t, c, nil, nil)
}

func TestRetryAfterBounds(t *testing.T) {
	c, clk := newTest(t, Config{MaxFeedLag: 10 * time.Millisecond})
	for _, tc := range []struct {
		lag, want time.Duration
	}{{20 * time.Millisecond, minRetry}, {2 * time.Second, 2 * time.Second}, {time.Minute, maxRetry}} {
		c.Dispatched(1, clk.ago(tc.lag))
		var s *Shed
		if err := c.Admit(Message); !errors.As(err, &s) || s.RetryAfter != tc.want {
			t.Fatalf("lag %v: err = %v, want retry after %v", tc.lag, err, tc.want)
		}
	}
	c.cfg.rand = func() float64 { return 0.999 }
	var s *Shed
	if err := c.Admit(Message); !errors.As(err, &s) || s.RetryAfter <= maxRetry || s.RetryAfter > maxRetry*5/4 {
		t.Fatalf("spread: err = %v", err)
	}
}

func TestCounts(t *testing.T) {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "inbox_shed_total"}, []string{"kind", "reason"})
	c, clk := newTest(t, Config{MaxFeedLag: 100 * time.Millisecond, Shed: vec})
	c.Dispatched(1, clk.ago(75*time.Millisecond))
	admits(t, c, nil, FeedLag) // typing and presence shed, the message not
	c.Dispatched(2, clk.ago(150*time.Millisecond))
	admits(t, c, FeedLag, FeedLag)
	if got := value(t, vec.WithLabelValues("typing", "feed_lag")); got != 2 {
		t.Fatalf("typing shed = %v", got)
	}
	if got := value(t, vec.WithLabelValues("message", "feed_lag")); got != 1 {
		t.Fatalf("messages shed = %v", got)
	}
	st := c.Status()
	if st.FeedLag != 150*time.Millisecond || st.Shed["message"]["feed_lag"] != 1 || st.Shed["presence"]["feed_lag"] != 2 || len(st.Shed) != 3 {
		t.Fatalf("status = %+v", st)
	}
}

// TestFeedLagAfterIdle: work arriving at a feed that has been idle (caught
// up, nothing dispatched for a while) is not late for the idle time: a feed
// that dispatched nothing for a minute because nothing was sent is not a
// minute behind when the first send of a burst is stored.
func TestFeedLagAfterIdle(t *testing.T) {
	c, clk := newTest(t, Config{MaxFeedLag: 400 * time.Millisecond})
	c.Dispatched(1, clk.ago(time.Millisecond))
	clk.add(time.Minute)
	c.Done(c.Begin(time.Time{}), 2)
	admits(t, c, nil, nil)
	clk.add(150 * time.Millisecond)
	admits(t, c, nil, nil)
	clk.add(300 * time.Millisecond) // 450 ms with work waiting and no dispatch
	admits(t, c, FeedLag, FeedLag)
	c.Dispatched(2, clk.ago(time.Millisecond))
	admits(t, c, nil, nil)
	// While the feed is behind, later appends do not restart the clock.
	c.Done(c.Begin(time.Time{}), 3)
	clk.add(300 * time.Millisecond)
	c.Done(c.Begin(time.Time{}), 4)
	clk.add(150 * time.Millisecond)
	admits(t, c, FeedLag, FeedLag)
}

// TestFeedLagPartitions: with partitioned streams an event id carries its
// partition, and a stall is told per partition: another partition's newer
// events do not hide one whose feed is stuck.
func TestFeedLagPartitions(t *testing.T) {
	c, clk := newTest(t, Config{MaxFeedLag: 400 * time.Millisecond, Partitions: 4})
	c.Dispatched(eventstore.ID(4, 2, 10), clk.now())
	c.Done(c.Begin(time.Time{}), eventstore.ID(4, 2, 11)) // stored in partition 2, not yet dispatched
	c.Dispatched(eventstore.ID(4, 1, 500), clk.now())
	clk.add(500 * time.Millisecond)
	admits(t, c, FeedLag, FeedLag)
	c.Dispatched(eventstore.ID(4, 2, 11), clk.ago(time.Millisecond))
	admits(t, c, nil, nil)
}

// TestAdmitWaited: a request that waited in the node past the append
// latency bound is refused (what is accepted did not wait that long), and
// the wait counts against the requests after it for a window or two.
func TestAdmitWaited(t *testing.T) {
	c, clk := newTest(t, Config{MaxAppendLatency: 400 * time.Millisecond})
	if err := c.AdmitWaited(Message, 100*time.Millisecond); err != nil {
		t.Fatalf("waited 100 ms: %v", err)
	}
	clk.add(2 * latencyWindow)
	var s *Shed
	if err := c.AdmitWaited(Message, 600*time.Millisecond); !errors.As(err, &s) || s.Reason != AppendLatency || s.Value != int64(600*time.Millisecond) {
		t.Fatalf("waited 600 ms: %v", err)
	}
	admits(t, c, AppendLatency, AppendLatency)
	clk.add(2 * latencyWindow)
	admits(t, c, nil, nil)
	// Begin at the arrival: the wait before it is part of the append's time.
	b := c.Begin(clk.ago(450 * time.Millisecond))
	c.Done(b, 0)
	admits(t, c, AppendLatency, AppendLatency)
}

// TestInFlightSnapshot: the age of the appends in flight is read from one
// consistent snapshot of their count and start times. Appends that all begin
// and end at the same instant are never seen as old, however long the node
// has run, while others begin and end concurrently (a torn read, the count
// of one moment with the start times of another, made an hour-old node look
// minutes behind and shed a send now and then on a quiet machine).
func TestInFlightSnapshot(t *testing.T) {
	c, clk := newTest(t, Config{MaxAppendLatency: 400 * time.Millisecond})
	clk.add(time.Hour) // starts are counted from the controller's creation
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				c.Done(c.Begin(time.Time{}), 0)
			}
		})
	}
	busy := 0
	for range 200_000 {
		if c.Busy(Message) {
			busy++
		}
	}
	close(stop)
	wg.Wait()
	if busy > 0 {
		t.Fatalf("appends of no age seen as late %d times in 200,000: %v", busy, c.Status().AppendLatency)
	}
}
