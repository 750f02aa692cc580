package cluster_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"inbox/eventstore"
	"inbox/internal/testnats"
	"inbox/internal/testutil"
	"inbox/node"
)

// twoNodes starts a three-server JetStream cluster and two inboxd nodes on
// it with a replicated stream.
func twoNodes(t *testing.T) (*testnats.Cluster, *node.Node, *node.Node) {
	t.Helper()
	c := testnats.NewCluster(t, 3)
	n1 := startNode(t, c.URL(), 3, "n1")
	n2 := startNode(t, c.URL(), 3, "n2")
	return c, n1, n2
}

// clusterStore opens the INBOX stream on the cluster with its own connection.
func clusterStore(t *testing.T, c *testnats.Cluster) *eventstore.Store {
	t.Helper()
	nc, err := nats.Connect(c.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	st, err := eventstore.Open(context.Background(), eventstore.Config{Conn: nc, Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestClusterStreamReplicated(t *testing.T) {
	c, _, _ := twoNodes(t)
	st := clusterStore(t, c)
	info, err := st.Streams()[0].Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
		t.Fatalf("stream replicas %d, cluster %+v", info.Config.Replicas, info.Cluster)
	}
	for _, name := range []string{"inbox-proj-n1", "inbox-proj-n2"} {
		testutil.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error { // a JS API call may time out on a busy cluster
			ci, err := st.JetStream().Consumer(context.Background(), eventstore.StreamName, name)
			if err != nil {
				return fmt.Errorf("consumer %s: %w", name, err)
			}
			if r := ci.CachedInfo().Config.Replicas; r != 0 && r != 3 {
				t.Fatalf("consumer %s has %d replicas", name, r)
			}
			return nil
		})
	}
}

func TestCrossNodeChat(t *testing.T) {
	_, n1, n2 := twoNodes(t)
	createConv(t, n1, 1, []eventstore.Member{{UserID: "alice", Role: "client"}, {UserID: "bob", Role: "worker"}}, n2)

	alice := dial(t, n1.HTTPAddr(), "alice", 0)
	bob := dial(t, n2.HTTPAddr(), "bob", 0)
	alice.ping()
	bob.ping()

	seq := alice.mustAck(1, "a-1", "hello from node 1")
	bob.waitMessages(frameWait, hasSeq(seq))
	reply := bob.mustAck(1, "b-1", "hello from node 2")
	alice.waitMessages(frameWait, hasSeq(reply))

	// Membership across nodes: carol joins on node 1 (service API) while
	// connected to node 2, then hears the conversation live.
	carol := dial(t, n2.HTTPAddr(), "carol", 0)
	carol.ping()
	if _, err := n1.Service().AddMember(context.Background(), 1, eventstore.Member{UserID: "carol", Role: "member"}); err != nil {
		t.Fatal(err)
	}
	if j := carol.next("CONVERSATION_JOINED"); j.ConversationID != 1 {
		t.Fatalf("carol joined %d, want 1", j.ConversationID)
	}
	testutil.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if !n2.Service().Directory().IsMember(1, "carol") {
			return fmt.Errorf("carol not a member on node 2 yet")
		}
		return nil
	})
	third := alice.mustAck(1, "a-2", "welcome carol")
	carol.waitMessages(frameWait, hasSeq(third))
	bob.waitMessages(frameWait, hasSeq(third))

	// Both read models hold the same history.
	for _, n := range []*node.Node{n1, n2} {
		testutil.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
			h, err := history(t, n.HTTPAddr(), "bob", 1)
			if err != nil {
				return err
			}
			if got := seqs(h); !slices.Equal(got, []uint64{seq, reply, third}) {
				return fmt.Errorf("history on %s = %v", n.HTTPAddr(), got)
			}
			return nil
		})
	}
}

func hasSeq(seq uint64) func([]frame) error {
	return func(ms []frame) error {
		for _, m := range ms {
			if m.Seq == seq {
				return nil
			}
		}
		return fmt.Errorf("message %d not received (have %d messages)", seq, len(ms))
	}
}

func seqs(fs []frame) []uint64 {
	out := make([]uint64, len(fs))
	for i, f := range fs {
		out[i] = f.Seq
	}
	return out
}

// sender sends numbered messages on c until stop closes, recording what was
// acknowledged and what was not (an ERROR or no answer).
type sender struct {
	c      *client
	conv   int64
	prefix string

	mu      sync.Mutex
	acked   map[string]uint64 // client_msg_id -> seq
	unacked []string          // in send order
	codes   map[string]int    // error codes seen
	n       int
}

func newSender(c *client, conv int64, prefix string) *sender {
	return &sender{c: c, conv: conv, prefix: prefix, acked: make(map[string]uint64), codes: make(map[string]int)}
}

// run sends until stop closes, pacing at most one message per every.
func (s *sender) run(stop <-chan struct{}, every time.Duration) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		s.mu.Lock()
		s.n++
		cmid := fmt.Sprintf("%s-%d", s.prefix, s.n)
		s.mu.Unlock()
		s.sendOne(cmid, 10*time.Second)
	}
}

func (s *sender) sendOne(cmid string, wait time.Duration) bool {
	r, ok := s.c.send(s.conv, cmid, "text "+cmid, wait)
	s.mu.Lock()
	defer s.mu.Unlock()
	if ok && r.Seq > 0 {
		s.acked[cmid] = r.Seq
		return true
	}
	code := r.Code
	if !ok {
		code = "no answer"
	}
	s.codes[code]++
	if !slices.Contains(s.unacked, cmid) {
		s.unacked = append(s.unacked, cmid)
	}
	return false
}

// retryUnacked resends every un-acknowledged message with its client_msg_id
// until each is acknowledged.
func (s *sender) retryUnacked(t *testing.T, total time.Duration) {
	t.Helper()
	deadline := time.Now().Add(total)
	s.mu.Lock()
	todo := append([]string(nil), s.unacked...)
	s.mu.Unlock()
	for _, cmid := range todo {
		testutil.CheckFor(t, time.Until(deadline), 100*time.Millisecond, func() error {
			if !s.sendOne(cmid, 10*time.Second) {
				return fmt.Errorf("retry of %s still not acknowledged", cmid)
			}
			return nil
		})
	}
}

func (s *sender) ackedCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.acked)
}

func TestResumeAcrossNodes(t *testing.T) {
	_, n1, n2 := twoNodes(t)
	createConv(t, n1, 7, []eventstore.Member{{UserID: "alice", Role: "client"}, {UserID: "bob", Role: "worker"}}, n2)
	alice := dial(t, n1.HTTPAddr(), "alice", 0)
	bob := dial(t, n1.HTTPAddr(), "bob", 0)
	alice.ping()
	bob.ping()

	s := newSender(alice, 7, "r")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { s.run(stop, 2*time.Millisecond) })
	stopped := false
	defer func() {
		if !stopped {
			close(stop)
		}
		wg.Wait()
	}()

	// bob reads some live traffic on node 1, then drops his socket.
	bob.waitMessages(frameWait, func(ms []frame) error {
		if len(ms) < 50 {
			return fmt.Errorf("%d messages", len(ms))
		}
		return nil
	})
	bob.CloseNow()
	<-bob.done
	first := bob.messages()
	last := first[len(first)-1].Seq

	// Traffic continues while bob is away; he comes back on node 2.
	testutil.CheckFor(t, frameWait, 20*time.Millisecond, func() error {
		if s.ackedCount() < len(first)+100 {
			return fmt.Errorf("only %d acknowledged", s.ackedCount())
		}
		return nil
	})
	bob2 := dial(t, n2.HTTPAddr(), "bob", last)
	synced := bob2.next("SYNCED")
	testutil.CheckFor(t, frameWait, 20*time.Millisecond, func() error {
		if s.ackedCount() < len(first)+300 {
			return fmt.Errorf("only %d acknowledged", s.ackedCount())
		}
		return nil
	})
	close(stop)
	stopped = true
	wg.Wait()
	if len(s.unacked) != 0 {
		t.Fatalf("un-acknowledged sends on a healthy cluster: %v (%v)", s.unacked, s.codes)
	}
	want := make([]uint64, 0, len(s.acked))
	for _, seq := range s.acked {
		want = append(want, seq)
	}
	slices.Sort(want)
	second := bob2.waitMessages(frameWait, func(ms []frame) error {
		if len(first)+len(ms) < len(want) {
			return fmt.Errorf("%d+%d of %d messages", len(first), len(ms), len(want))
		}
		return nil
	})
	got := append(seqs(first), seqs(second)...)
	if !slices.IsSorted(got) || len(slices.Compact(slices.Clone(got))) != len(got) {
		t.Fatalf("bob's messages out of order or doubled around the resume at %d (synced %d)", last, synced.Seq)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("bob got %d messages, %d acknowledged; first difference at %d", len(got), len(want), firstDiff(got, want))
	}
	t.Logf("%d messages before the disconnect (last seq %d), %d after resuming on node 2 (synced at %d)", len(first), last, len(second), synced.Seq)
}

func firstDiff(a, b []uint64) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func TestNATSServerKilledUnderLoad(t *testing.T) {
	c, n1, n2 := twoNodes(t)
	createConv(t, n1, 9, []eventstore.Member{{UserID: "alice", Role: "client"}, {UserID: "bob", Role: "worker"}}, n2)
	alice := dial(t, n1.HTTPAddr(), "alice", 0)
	bob := dial(t, n2.HTTPAddr(), "bob", 0)
	alice.ping()
	bob.ping()
	st := clusterStore(t, c)

	senders := []*sender{newSender(alice, 9, "a"), newSender(bob, 9, "b")}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, s := range senders {
		wg.Go(func() { s.run(stop, 2*time.Millisecond) })
	}
	stopped := false
	defer func() {
		if !stopped {
			close(stop)
		}
		wg.Wait()
	}()
	total := func() int { return senders[0].ackedCount() + senders[1].ackedCount() }
	testutil.CheckFor(t, frameWait, 20*time.Millisecond, func() error {
		if total() < 200 {
			return fmt.Errorf("%d acknowledged", total())
		}
		return nil
	})

	// Kill the stream leader: the worst place to lose a server.
	info, err := st.Streams()[0].Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	victim := -1
	for i, s := range c.Servers {
		if s.Name() == info.Cluster.Leader {
			victim = i
		}
	}
	if victim < 0 {
		t.Fatalf("stream leader %q is none of the servers", info.Cluster.Leader)
	}
	before := total()
	c.Servers[victim].Shutdown()
	t.Logf("killed %s (stream leader) after %d acknowledged sends", info.Cluster.Leader, before)

	// Sending continues on the two servers left.
	testutil.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		if total() < before+300 {
			return fmt.Errorf("%d acknowledged since the kill", total()-before)
		}
		return nil
	})
	close(stop)
	stopped = true
	wg.Wait()
	for _, s := range senders {
		t.Logf("sender %s: %d acknowledged, %d not (%v)", s.prefix, len(s.acked), len(s.unacked), s.codes)
		for code := range s.codes {
			if code != "unavailable" && code != "no answer" {
				t.Fatalf("sender %s got error code %q", s.prefix, code)
			}
		}
		s.retryUnacked(t, 30*time.Second)
	}

	// Every acknowledged message is in the stream exactly once, at its seq.
	stored := streamMessages(t, st, 9)
	var all []uint64
	for _, s := range senders {
		for cmid, seq := range s.acked {
			if got := stored[cmid]; len(got) != 1 || got[0] != seq {
				t.Fatalf("%s acknowledged at %d, stored at %v", cmid, seq, got)
			}
			all = append(all, seq)
		}
	}
	if len(stored) != len(all) {
		t.Fatalf("%d messages stored, %d acknowledged", len(stored), len(all))
	}
	slices.Sort(all)
	// ...and in both nodes' history, once.
	for _, n := range []*node.Node{n1, n2} {
		testutil.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
			h, err := history(t, n.HTTPAddr(), "alice", 9)
			if err != nil {
				return err
			}
			if got := seqs(h); !slices.Equal(got, all) {
				return fmt.Errorf("history on %s has %d messages, want %d (first difference at %d)", n.HTTPAddr(), len(got), len(all), firstDiff(got, all))
			}
			return nil
		})
	}
	select {
	case err := <-n1.Failed():
		t.Fatalf("node 1 failed: %v", err)
	case err := <-n2.Failed():
		t.Fatalf("node 2 failed: %v", err)
	default:
	}
}

// TestNodesStartTogether starts two nodes at the same moment on a cluster
// that has just formed: both create-or-update the replicated stream at once.
func TestNodesStartTogether(t *testing.T) {
	c := testnats.NewCluster(t, 3)
	var wg sync.WaitGroup
	nodes := make([]*node.Node, 2)
	for i := range nodes {
		wg.Go(func() { nodes[i] = startNode(t, c.URL(), 3, fmt.Sprintf("n%d", i+1)) })
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	createConv(t, nodes[0], 1, []eventstore.Member{{UserID: "alice", Role: "client"}, {UserID: "bob", Role: "worker"}}, nodes[1])
}

// TestPartitionLeadersSpread: three partitions at R3 created on a
// three-server cluster get their Raft leaders on three different servers,
// so appends to them go through three servers.
func TestPartitionLeadersSpread(t *testing.T) {
	c := testnats.NewCluster(t, 3)
	nc, err := nats.Connect(c.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	st, err := eventstore.Open(context.Background(), eventstore.Config{Conn: nc, Replicas: 3, Partitions: 3})
	if err != nil {
		t.Fatal(err)
	}
	testutil.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		leaders := map[string]int{}
		for _, stream := range st.Streams() {
			info, err := stream.Info(context.Background())
			if err != nil {
				return err
			}
			if info.Cluster == nil || info.Cluster.Leader == "" {
				return fmt.Errorf("stream %s has no leader yet", info.Config.Name)
			}
			leaders[info.Cluster.Leader]++
		}
		if len(leaders) != 3 {
			return fmt.Errorf("partition leaders per server: %v", leaders)
		}
		return nil
	})
}
