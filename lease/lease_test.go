package lease_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"inbox/internal/testnats"
	"inbox/internal/testutil"
	"inbox/lease"
)

// Short leases keep the tests quick: JetStream's per-key TTLs are whole
// seconds.
const (
	ttl   = 2 * time.Second
	renew = 300 * time.Millisecond
)

// holder is a Leases with what its OnChange was told.
type holder struct {
	*lease.Leases
	mu    sync.Mutex
	owned []int
}

func (h *holder) told() []int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.owned)
}

func start(t *testing.T, js jetstream.JetStream, id string, partitions int, keep []int, ready func() []int) *holder {
	t.Helper()
	h := &holder{}
	deps := lease.Deps{
		JetStream: js, Logger: testutil.Logger(),
		OnChange: func(owned []int) { h.mu.Lock(); h.owned = owned; h.mu.Unlock() },
	}
	if ready != nil {
		deps.Ready = func(context.Context) []int { return ready() }
	}
	l, err := lease.Start(context.Background(), lease.Config{
		NodeID: id, Partitions: partitions, Keep: keep, TTL: ttl, Renew: renew, Replicas: 1,
	}, deps)
	if err != nil {
		t.Fatalf("start leases of %s: %v", id, err)
	}
	h.Leases = l
	t.Cleanup(func() { l.Close() })
	return h
}

func jetStream(t *testing.T) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(testnats.Conn(t, testnats.Server(t)))
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// owners checks that hs own every one of n partitions, each exactly once,
// and returns how many each owns.
func owners(hs []*holder, n int) ([]int, error) {
	seen := make(map[int]int)
	counts := make([]int, len(hs))
	for i, h := range hs {
		owned := h.Owned()
		if !slices.Equal(owned, h.told()) {
			return nil, fmt.Errorf("holder %d owns %v but was told %v", i, owned, h.told())
		}
		counts[i] = len(owned)
		for _, k := range owned {
			seen[k]++
		}
	}
	for k := range n {
		if seen[k] != 1 {
			return nil, fmt.Errorf("partition %d has %d owners (%v)", k, seen[k], counts)
		}
	}
	return counts, nil
}

func TestLeasesShareAndTakeOver(t *testing.T) {
	js := jetStream(t)
	a := start(t, js, "a", 3, []int{0, 1, 2}, nil)
	testutil.CheckFor(t, 5*time.Second, 50*time.Millisecond, func() error {
		_, err := owners([]*holder{a}, 3)
		return err
	})
	// A second projector keeping every partition: the first lets go of one.
	b := start(t, js, "b", 3, []int{0, 1, 2}, nil)
	testutil.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		counts, err := owners([]*holder{a, b}, 3)
		if err != nil {
			return err
		}
		if slices.Max(counts) != 2 {
			return fmt.Errorf("shares %v, want 2 and 1", counts)
		}
		return nil
	})

	// a dies without letting go: b takes its partitions once they expire.
	had := a.Owned()
	died := time.Now()
	a.Halt()
	testutil.CheckFor(t, 3*ttl, 20*time.Millisecond, func() error {
		_, err := owners([]*holder{b}, 3)
		return err
	})
	took := time.Since(died)
	t.Logf("takeover of %v after a crash: %v (TTL %v)", had, took, ttl)
	if took < ttl-renew {
		t.Errorf("b took a's partitions %v after it stopped renewing, before the TTL %v", took, ttl)
	}

	// A projector that closes lets go at once.
	c := start(t, js, "c", 3, []int{0, 1, 2}, nil)
	testutil.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		counts, err := owners([]*holder{b, c}, 3)
		if err == nil && slices.Min(counts) == 0 {
			return fmt.Errorf("shares %v", counts)
		}
		return err
	})
	closed := time.Now()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if got := b.told(); len(got) != 0 {
		t.Errorf("closed leases still told %v", got)
	}
	testutil.CheckFor(t, ttl, 20*time.Millisecond, func() error {
		_, err := owners([]*holder{c}, 3)
		return err
	})
	t.Logf("takeover after a close: %v", time.Since(closed))
}

// A projector takes only what it keeps and is caught up on.
func TestLeasesKeepAndReady(t *testing.T) {
	js := jetStream(t)
	var mu sync.Mutex
	var ready []int
	slow := start(t, js, "slow", 4, []int{0, 1, 2, 3}, func() []int { mu.Lock(); defer mu.Unlock(); return slices.Clone(ready) })
	some := start(t, js, "some", 4, []int{1, 3}, nil)
	testutil.CheckFor(t, 5*time.Second, 50*time.Millisecond, func() error {
		if got := some.Owned(); !slices.Equal(got, []int{1, 3}) {
			return fmt.Errorf("some owns %v", got)
		}
		return nil
	})
	// Two renewals with nothing ready: slow takes nothing.
	time.Sleep(3 * renew)
	if got := slow.Owned(); len(got) != 0 {
		t.Fatalf("a projector caught up on nothing owns %v", got)
	}
	mu.Lock()
	ready = []int{0, 1, 2, 3}
	mu.Unlock()
	testutil.CheckFor(t, 5*time.Second, 50*time.Millisecond, func() error {
		counts, err := owners([]*holder{slow, some}, 4)
		if err != nil {
			return err
		}
		if counts[0] != 2 || !slices.Equal(some.Owned(), []int{1, 3}) {
			return fmt.Errorf("slow owns %v, some %v", slow.Owned(), some.Owned())
		}
		return nil
	})
}

// A restarted projector (same node id) adopts its leases without waiting
// for them to expire.
func TestLeasesAdoptedAfterRestart(t *testing.T) {
	js := jetStream(t)
	a := start(t, js, "a", 2, []int{0, 1}, nil)
	testutil.CheckFor(t, 5*time.Second, 50*time.Millisecond, func() error {
		_, err := owners([]*holder{a}, 2)
		return err
	})
	a.Halt()
	again := start(t, js, "a", 2, []int{0, 1}, nil)
	restarted := time.Now()
	testutil.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		_, err := owners([]*holder{again}, 2)
		return err
	})
	if took := time.Since(restarted); took >= ttl {
		t.Errorf("adopting the leases of the run before took %v, as long as their TTL", took)
	}
}

func TestLeasesBadConfig(t *testing.T) {
	js := jetStream(t)
	for _, tc := range []struct {
		name string
		cfg  lease.Config
	}{
		{"bad node id", lease.Config{NodeID: "a.b", Partitions: 1, Keep: []int{0}}},
		{"no partitions", lease.Config{NodeID: "a", Partitions: 0, Keep: []int{0}}},
		{"nothing kept", lease.Config{NodeID: "a", Partitions: 2}},
		{"kept partition out of range", lease.Config{NodeID: "a", Partitions: 2, Keep: []int{2}}},
		{"renewal not within the TTL", lease.Config{NodeID: "a", Partitions: 1, Keep: []int{0}, TTL: 2 * time.Second, Renew: time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := lease.Start(context.Background(), tc.cfg, lease.Deps{JetStream: js})
			if !errors.Is(err, lease.ErrBadConfig) {
				t.Fatalf("Start = %v, want ErrBadConfig", err)
			}
		})
	}
}
