package presence

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"inbox/internal/testnats"
	"inbox/internal/testutil"
)

// Short timings for tests; JetStream's per-key TTL is counted in whole seconds.
const (
	testHeartbeat = 250 * time.Millisecond
	testNodeTTL   = time.Second
)

// node is one Tracker with its own connection and a record of its changes.
type node struct {
	*Tracker
	cancel context.CancelFunc

	mu      sync.Mutex
	changes []Change
}

func startNode(t *testing.T, s *server.Server, id string, hb, ttl time.Duration) *node {
	t.Helper()
	return start(t, s, Config{NodeID: id, Heartbeat: hb, NodeTTL: ttl})
}

// startNodeR starts a node with short timings and a replicated bucket.
func startNodeR(t *testing.T, s *server.Server, id string, replicas int) *node {
	t.Helper()
	return start(t, s, Config{NodeID: id, Replicas: replicas, Heartbeat: testHeartbeat, NodeTTL: testNodeTTL})
}

func start(t *testing.T, s *server.Server, cfg Config) *node {
	t.Helper()
	js, err := jetstream.New(testnats.Conn(t, s))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &node{cancel: cancel}
	n.Tracker, err = Start(ctx, cfg, Deps{JetStream: js, Notify: func(c Change) {
		n.mu.Lock()
		n.changes = append(n.changes, c)
		n.mu.Unlock()
	}})
	if err != nil {
		cancel()
		t.Fatalf("start node %s: %v", cfg.NodeID, err)
	}
	t.Cleanup(func() {
		n.Close()
		cancel()
	})
	return n
}

// crash stops the node's goroutines without removing its keys.
func (n *node) crash() {
	n.cancel()
	n.halt()
}

// changesOf returns the changes n was notified of for user.
func (n *node) changesOf(user string) []Change {
	n.mu.Lock()
	defer n.mu.Unlock()
	var cs []Change
	for _, c := range n.changes {
		if c.UserID == user {
			cs = append(cs, c)
		}
	}
	return cs
}

func waitStatus(t *testing.T, n *node, user string, online bool, timeout time.Duration) time.Time {
	t.Helper()
	var seen time.Time
	testutil.CheckFor(t, timeout, 10*time.Millisecond, func() error {
		var on bool
		on, seen = n.Status(user)
		if on != online {
			return fmt.Errorf("node %s: %s online=%v, want %v", n.cfg.NodeID, user, on, online)
		}
		return nil
	})
	return seen
}

func wantChanges(t *testing.T, n *node, user string, online ...bool) {
	t.Helper()
	testutil.CheckFor(t, 2*time.Second, 10*time.Millisecond, func() error {
		cs := n.changesOf(user)
		if len(cs) != len(online) {
			return fmt.Errorf("node %s: changes of %s = %+v, want online %v", n.cfg.NodeID, user, cs, online)
		}
		for i, c := range cs {
			if c.Online != online[i] || c.Online == !c.LastSeen.IsZero() {
				return fmt.Errorf("node %s: changes of %s = %+v, want online %v", n.cfg.NodeID, user, cs, online)
			}
		}
		return nil
	})
}

// userKeysOf lists the user keys node holds in the bucket.
func userKeysOf(t *testing.T, s *server.Server, node string) []string {
	t.Helper()
	js, err := jetstream.New(testnats.Conn(t, s))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, Bucket)
	if err != nil {
		t.Fatal(err)
	}
	l, err := kv.ListKeysFiltered(ctx, "user.*."+node)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range l.Keys() {
		keys = append(keys, k)
	}
	return keys
}

func TestOnlineOfflineSeenByOtherNode(t *testing.T) {
	s := testnats.Server(t)
	a := startNode(t, s, "a", testHeartbeat, testNodeTTL)
	b := startNode(t, s, "b", testHeartbeat, testNodeTTL)

	before := time.Now().Add(-time.Second)
	a.Online("alice")
	waitStatus(t, b, "alice", true, 2*time.Second)
	waitStatus(t, a, "alice", true, 2*time.Second)

	a.Offline("alice")
	seen := waitStatus(t, b, "alice", false, 2*time.Second)
	if seen.Before(before) || seen.After(time.Now().Add(time.Second)) {
		t.Fatalf("last seen %v, want about now", seen)
	}
	wantChanges(t, b, "alice", true, false)
	wantChanges(t, a, "alice", true, false)
	if cs := b.changesOf("alice"); !cs[1].LastSeen.Equal(seen) {
		t.Fatalf("change last seen %v, status %v", cs[1].LastSeen, seen)
	}
	if on, seen := b.Status("nobody"); on || !seen.IsZero() {
		t.Fatalf("unknown user: online=%v last seen %v", on, seen)
	}
}

func TestUserOnTwoNodesGoesOfflineWithTheLast(t *testing.T) {
	s := testnats.Server(t)
	a := startNode(t, s, "a", testHeartbeat, testNodeTTL)
	b := startNode(t, s, "b", testHeartbeat, testNodeTTL)

	a.Online("bob")
	b.Online("bob")
	waitStatus(t, a, "bob", true, 2*time.Second)
	testutil.CheckFor(t, 2*time.Second, 10*time.Millisecond, func() error {
		if n := len(userKeysOf(t, s, "b")); n != 1 {
			return fmt.Errorf("%d keys of node b", n)
		}
		return nil
	})

	a.Offline("bob")
	testutil.CheckFor(t, 2*time.Second, 10*time.Millisecond, func() error {
		if n := len(userKeysOf(t, s, "a")); n != 0 {
			return fmt.Errorf("%d keys of node a", n)
		}
		return nil
	})
	// a's delete is stored; give the watchers a moment to see it.
	waitStatus(t, b, "bob", true, 0)
	testutil.CheckFor(t, time.Second, 10*time.Millisecond, func() error {
		b.Tracker.mu.RLock()
		defer b.Tracker.mu.RUnlock()
		if _, on := b.users["bob"].nodes["a"]; on {
			return errors.New("b still counts bob on a")
		}
		return nil
	})
	if on, _ := a.Status("bob"); !on {
		t.Fatal("bob offline on a while still connected to b")
	}

	b.Offline("bob")
	waitStatus(t, a, "bob", false, 2*time.Second)
	waitStatus(t, b, "bob", false, 2*time.Second)
	wantChanges(t, a, "bob", true, false)
	wantChanges(t, b, "bob", true, false)
}

func TestCrashedNodeUsersExpire(t *testing.T) {
	s := testnats.Server(t)
	a := startNode(t, s, "a", testHeartbeat, testNodeTTL)
	b := startNode(t, s, "b", testHeartbeat, testNodeTTL)

	a.Online("carol")
	b.Online("dave")
	waitStatus(t, b, "carol", true, 2*time.Second)
	waitStatus(t, a, "dave", true, 2*time.Second)
	online := time.Now()

	a.crash()
	crashed := time.Now()
	seen := waitStatus(t, b, "carol", false, testNodeTTL+2*time.Second)
	took := time.Since(crashed)
	t.Logf("crashed node's user offline after %v (heartbeat %v, node TTL %v)", took, testHeartbeat, testNodeTTL)
	if took > testNodeTTL+time.Second {
		t.Fatalf("offline after %v, want within node TTL %v + 1s", took, testNodeTTL)
	}
	if seen.Before(online.Add(-testHeartbeat-time.Second)) || seen.After(crashed.Add(time.Second)) {
		t.Fatalf("last seen %v, want between %v and %v (the crash)", seen, online, crashed)
	}
	wantChanges(t, b, "carol", true, false)
	if on, _ := b.Status("dave"); !on {
		t.Fatal("a live node's user went offline")
	}
	testutil.CheckFor(t, 2*time.Second, 10*time.Millisecond, func() error {
		if keys := userKeysOf(t, s, "a"); len(keys) != 0 {
			return fmt.Errorf("keys of the dead node left: %v", keys)
		}
		return nil
	})
}

func TestRestartClearsStaleKeys(t *testing.T) {
	s := testnats.Server(t)
	// A long TTL: only the restart can make erin go offline in time.
	a := startNode(t, s, "a", time.Second, 30*time.Second)
	b := startNode(t, s, "b", time.Second, 30*time.Second)

	a.Online("erin")
	waitStatus(t, b, "erin", true, 2*time.Second)
	a.crash()

	a2 := startNode(t, s, "a", time.Second, 30*time.Second)
	if on, _ := a2.Status("erin"); on {
		t.Fatal("restarted node loaded its own stale user")
	}
	if keys := userKeysOf(t, s, "a"); len(keys) != 0 {
		t.Fatalf("stale keys after restart: %v", keys)
	}
	waitStatus(t, b, "erin", false, 2*time.Second)
	wantChanges(t, b, "erin", true, false)

	a2.Online("erin")
	waitStatus(t, b, "erin", true, 2*time.Second)
}

// TestNewRunDropsOldUsers: a node key written by a new run of a node id
// ends the old run's users even when the watcher never saw the old key's
// delete marker (the bucket keeps one entry per key, so the new key can
// replace the marker before a slow watcher reads it). Seen once in CI as
// TestRestartClearsStaleKeys failing: the restarted node's peer kept its
// user online.
func TestNewRunDropsOldUsers(t *testing.T) {
	s := testnats.Server(t)
	a := startNode(t, s, "a", time.Second, 30*time.Second)
	b := startNode(t, s, "b", time.Second, 30*time.Second)
	a.Online("hana")
	waitStatus(t, b, "hana", true, 2*time.Second)
	a.crash()
	// The next run's key, straight over the old one: no delete in between.
	if _, err := b.kv.Put(context.Background(), "node.a", []byte("next run")); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, b, "hana", false, 2*time.Second)
	wantChanges(t, b, "hana", true, false)
}

func TestCloseGoesOfflineNow(t *testing.T) {
	s := testnats.Server(t)
	a := startNode(t, s, "a", time.Second, 30*time.Second)
	b := startNode(t, s, "b", time.Second, 30*time.Second)

	a.Online("frank")
	waitStatus(t, b, "frank", true, 2*time.Second)
	closed := time.Now()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	seen := waitStatus(t, b, "frank", false, 2*time.Second)
	if d := seen.Sub(closed); d < -time.Second || d > 2*time.Second {
		t.Fatalf("last seen %v, closed at %v", seen, closed)
	}
	if keys := userKeysOf(t, s, "a"); len(keys) != 0 {
		t.Fatalf("keys after close: %v", keys)
	}
}

func TestExpiredNodeReregisters(t *testing.T) {
	s := testnats.Server(t)
	a := startNode(t, s, "a", testHeartbeat, testNodeTTL)
	b := startNode(t, s, "b", testHeartbeat, testNodeTTL)

	a.Online("gina")
	waitStatus(t, b, "gina", true, 2*time.Second)

	// As if a's key had expired while a was cut off from NATS.
	if err := a.kv.Purge(context.Background(), a.nodeKey); err != nil {
		t.Fatal(err)
	}
	// b drops gina, then a's next heartbeat re-registers and re-publishes her.
	wantChanges(t, b, "gina", true, false, true)
	waitStatus(t, b, "gina", true, 0)
	waitStatus(t, a, "gina", true, 2*time.Second)
}

func TestStartLoadsCurrentState(t *testing.T) {
	s := testnats.Server(t)
	a := startNode(t, s, "a", testHeartbeat, testNodeTTL)
	a.Online("hana")
	a.Online("ivan")
	a.Offline("ivan")
	waitStatus(t, a, "hana", true, 2*time.Second)
	waitStatus(t, a, "ivan", false, 2*time.Second)

	b := startNode(t, s, "b", testHeartbeat, testNodeTTL)
	if on, _ := b.Status("hana"); !on {
		t.Fatal("hana not online on a node started later")
	}
	if on, seen := b.Status("ivan"); on || seen.IsZero() {
		t.Fatalf("ivan online=%v last seen %v, want offline with last seen", on, seen)
	}
	if cs := b.changesOf("hana"); len(cs) != 0 {
		t.Fatalf("changes for the loaded state: %v", cs)
	}
}

func TestChurnKeepsLastState(t *testing.T) {
	s := testnats.Server(t)
	a := startNode(t, s, "a", testHeartbeat, testNodeTTL)
	b := startNode(t, s, "b", testHeartbeat, testNodeTTL)

	const users = 2000
	start := time.Now()
	for i := range users {
		a.Online(fmt.Sprintf("u%d", i))
	}
	for i := range 101 {
		if i%2 == 0 {
			a.Online("flip")
		} else {
			a.Offline("flip")
		}
	}
	testutil.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		for i := range users {
			if on, _ := b.Status(fmt.Sprintf("u%d", i)); !on {
				return fmt.Errorf("u%d not online", i)
			}
		}
		return nil
	})
	t.Logf("%d users online on the other node after %v", users, time.Since(start))
	waitStatus(t, b, "flip", true, 2*time.Second)
	if keys := userKeysOf(t, s, "a"); len(keys) != users+1 {
		t.Fatalf("%d user keys, want %d", len(keys), users+1)
	}
}

func TestConfig(t *testing.T) {
	tests := []struct {
		name      string
		cfg       Config
		withError error
		ttl       time.Duration
	}{
		{name: "defaults", cfg: Config{NodeID: "n1"}, ttl: 15 * time.Second},
		{name: "ttl rounded up to seconds", cfg: Config{NodeID: "n1", Heartbeat: 200 * time.Millisecond, NodeTTL: 600 * time.Millisecond}, ttl: time.Second},
		{name: "empty node id", cfg: Config{}, withError: ErrBadConfig},
		{name: "dotted node id", cfg: Config{NodeID: "a.b"}, withError: ErrBadConfig},
		{name: "ttl not above heartbeat", cfg: Config{NodeID: "n1", Heartbeat: 2 * time.Second, NodeTTL: 2 * time.Second}, withError: ErrBadConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := tt.cfg.withDefaults()
			if !errors.Is(err, tt.withError) {
				t.Fatalf("err = %v, want %v", err, tt.withError)
			}
			if err == nil && cfg.NodeTTL != tt.ttl {
				t.Fatalf("node TTL %v, want %v", cfg.NodeTTL, tt.ttl)
			}
		})
	}
}

func TestStartPurgesKeysOfDeadNodes(t *testing.T) {
	s := testnats.Server(t)
	a := startNode(t, s, "a", testHeartbeat, testNodeTTL)
	a.Online("lena")
	waitStatus(t, a, "lena", true, 2*time.Second)
	a.crash() // nobody watches: its user key outlives its node key
	testutil.CheckFor(t, testNodeTTL+2*time.Second, 20*time.Millisecond, func() error {
		if _, err := a.kv.Get(context.Background(), a.nodeKey); err == nil {
			return errors.New("node key of a still alive")
		}
		return nil
	})
	if keys := userKeysOf(t, s, "a"); len(keys) != 1 {
		t.Fatalf("keys of a: %v, want lena's", keys)
	}

	b := startNode(t, s, "b", testHeartbeat, testNodeTTL)
	if on, _ := b.Status("lena"); on {
		t.Fatal("user of a dead node loaded as online")
	}
	testutil.CheckFor(t, 2*time.Second, 20*time.Millisecond, func() error {
		if keys := userKeysOf(t, s, "a"); len(keys) != 0 {
			return fmt.Errorf("keys of the dead node left: %v", keys)
		}
		return nil
	})
}
