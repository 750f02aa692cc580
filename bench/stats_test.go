package bench

import (
	"math/rand/v2"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestSummarize(t *testing.T) {
	var s []time.Duration
	for i := 100; i >= 1; i-- { // 1..100 ms, unsorted
		s = append(s, time.Duration(i)*time.Millisecond)
	}
	p := Summarize(s)
	want := Percentiles{Count: 100, Mean: 50.5, P50: 50, P90: 90, P99: 99, P999: 100, Max: 100}
	if p != want {
		t.Fatalf("Summarize = %+v, want %+v", p, want)
	}
	if p := Summarize(nil); p != (Percentiles{}) {
		t.Fatalf("Summarize(nil) = %+v", p)
	}
	one := Summarize([]time.Duration{1500 * time.Microsecond})
	if one.P50 != 1.5 || one.P99 != 1.5 || one.Max != 1.5 || one.Count != 1 {
		t.Fatalf("Summarize(one) = %+v", one)
	}
}

func TestRecorderConcurrent(t *testing.T) {
	var r Recorder
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 1000 {
				r.Add(g*1000+i, time.Duration(g*1000+i+1)*time.Microsecond)
			}
		}()
	}
	wg.Wait()
	p := r.Summary()
	if p.Count != 8000 || p.Max != 8 || p.P50 != 4 {
		t.Fatalf("Summary = %+v", p)
	}
}

func TestTrackerClean(t *testing.T) {
	// Two conversations of two members: sockets 0,1 and 2,3.
	tr := NewTracker([][]int{{0, 1}, {2, 3}})
	for i := range 10 {
		conv := i % 2
		sender := i % 3 % 2
		seq := tr.Send(conv, sender, true)
		tr.Ack(conv, seq, time.Millisecond)
		for _, sock := range tr.Members(conv) {
			tr.Deliver(conv, seq, sock, int64(i+1), 2*time.Millisecond)
		}
	}
	c := tr.Counts()
	if c.Sent != 10 || c.Acked != 10 || c.Expected != 20 || c.Delivered != 20 || c.Lost != 0 || c.Duplicated != 0 || c.OutOfOrder != 0 || c.Unknown != 0 {
		t.Fatalf("Counts = %+v", c)
	}
	if l := tr.Latency(); l.Count != 20 || l.P99 != 2 {
		t.Fatalf("Latency = %+v", l)
	}
	if l := tr.AckLatency(); l.Count != 10 || l.Max != 1 {
		t.Fatalf("AckLatency = %+v", l)
	}
}

func TestTrackerLossDupOrder(t *testing.T) {
	tr := NewTracker([][]int{{0, 1}})
	s1 := tr.Send(0, 0, true)  // delivered to both, one duplicate
	s2 := tr.Send(0, 0, true)  // delivered only to socket 0: one lost
	s3 := tr.Send(0, 1, true)  // write failed: nothing expected
	s4 := tr.Send(0, 0, false) // warm-up: counts, no latency
	s5 := tr.Send(0, 1, true)  // refused by the server: nothing expected
	tr.SendFailed(0, s3)
	tr.SendFailed(0, s3) // idempotent
	tr.Refused(0, s5)
	tr.Refused(0, s5)                 // idempotent
	tr.Ack(0, s2, 2*time.Millisecond) // acknowledged, then lost at socket 1

	tr.Deliver(0, s1, 0, 10, time.Millisecond)
	tr.Deliver(0, s1, 1, 10, time.Millisecond)
	tr.Deliver(0, s1, 1, 10, time.Millisecond) // duplicate
	tr.Deliver(0, s4, 0, 13, time.Millisecond)
	tr.Deliver(0, s2, 0, 11, time.Millisecond) // after s4 on socket 0: out of order
	tr.Deliver(0, s4, 1, 13, time.Millisecond)
	tr.Deliver(0, 99, 1, 14, time.Millisecond) // never sent
	tr.Deliver(0, s1, 7, 10, time.Millisecond) // not a member
	tr.Error("rate_limited")
	tr.Error("rate_limited")

	c := tr.Counts()
	want := Counts{Sent: 5, SendFailed: 2, Acked: 1, Expected: 6, Delivered: 5, MeasuredDelivered: 3, Lost: 1, Duplicated: 1, OutOfOrder: 1, Unknown: 2,
		Refused: 1, RefusedMeasured: 1, AckedLost: 1, Unanswered: 2}
	c.Errors = nil
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("Counts = %+v\nwant     %+v", c, want)
	}
	if n := tr.Counts().Errors["rate_limited"]; n != 2 {
		t.Fatalf("errors[rate_limited] = %d", n)
	}
	if l := tr.Latency(); l.Count != 3 {
		t.Fatalf("Latency count = %d, want 3 (warm-up excluded)", l.Count)
	}
}

func TestTrackerSenderOrder(t *testing.T) {
	// Without stream sequences, order is judged per sender.
	tr := NewTracker([][]int{{0, 1}})
	a1 := tr.Send(0, 0, true)
	b1 := tr.Send(0, 1, true)
	a2 := tr.Send(0, 0, true)
	// Two senders interleave freely: b1 before a1 is fine.
	tr.Deliver(0, b1, 0, 0, 0)
	tr.Deliver(0, a1, 0, 0, 0)
	tr.Deliver(0, a2, 0, 0, 0)
	// But a2 before a1 from the same sender is not.
	tr.Deliver(0, a2, 1, 0, 0)
	tr.Deliver(0, a1, 1, 0, 0)
	tr.Deliver(0, b1, 1, 0, 0)
	if c := tr.Counts(); c.OutOfOrder != 1 || c.Lost != 0 || c.Delivered != 6 {
		t.Fatalf("Counts = %+v", c)
	}
}

func TestTrackerConcurrent(t *testing.T) {
	const convs, msgs = 50, 200
	members := make([][]int, convs)
	for i := range members {
		members[i] = []int{2 * i, 2*i + 1}
	}
	tr := NewTracker(members)
	type sent struct{ conv, seq int }
	var all []sent
	for range msgs {
		c := rand.IntN(convs)
		all = append(all, sent{c, tr.Send(c, rand.IntN(2), true)})
	}
	var wg sync.WaitGroup
	for _, m := range all {
		for _, sock := range tr.Members(m.conv) {
			wg.Add(1)
			go func() { defer wg.Done(); tr.Deliver(m.conv, m.seq, sock, 0, time.Millisecond) }()
		}
	}
	wg.Wait()
	if c := tr.Counts(); c.Delivered != 2*msgs || c.Lost != 0 || c.Duplicated != 0 || c.Expected != 2*msgs {
		t.Fatalf("Counts = %+v", c)
	}
}

func TestTimelineSlowest(t *testing.T) {
	start := time.Unix(100, 0)
	tl := NewTimeline(start, 100*time.Millisecond, time.Second)
	at := func(d time.Duration) int64 { return start.Add(d).UnixNano() }
	tl.Add(at(-time.Millisecond), time.Hour) // before the span: ignored
	tl.Add(at(2*time.Second), time.Hour)     // after it: ignored
	tl.Add(at(50*time.Millisecond), 5*time.Millisecond)
	tl.Add(at(60*time.Millisecond), 3*time.Millisecond) // not the window's slowest
	tl.Add(at(510*time.Millisecond), 90*time.Millisecond)
	tl.Add(at(900*time.Millisecond), 40*time.Millisecond)
	tl.Add(at(320*time.Millisecond), time.Millisecond)
	got := tl.Slowest(3)
	want := []Window{{0, 5}, {0.5, 90}, {0.9, 40}}
	if !slices.Equal(got, want) {
		t.Fatalf("Slowest(3) = %v, want %v", got, want)
	}
	if got := NewTimeline(start, time.Second, time.Second).Slowest(3); len(got) != 0 {
		t.Fatalf("an empty timeline's slowest windows: %v", got)
	}
}
