package cluster_test

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"inbox/eventstore"
	"inbox/internal/testnats"
	"inbox/internal/testutil"
	"inbox/node"
)

// trafficWait bounds a wait for traffic to flow on a loaded machine.
const trafficWait = time.Minute

// TestResumeAcrossNodesPartitioned: two nodes with three partitions on a
// three-server cluster at R3, traffic in a conversation of each partition.
// bob reads some of it live on node 1, drops, and comes back on node 2 with
// the cursor built from the frames he got (the highest seq of each
// partition, seq & 255): he gets every acknowledged message exactly once,
// each conversation in order, and a SYNCED carrying the cursor.
func TestResumeAcrossNodesPartitioned(t *testing.T) {
	const n = 3
	c := testnats.NewCluster(t, 3)
	partitioned := func(cfg *node.Config) { cfg.Partitions = n }
	n1 := startNode(t, c.URL(), 3, "n1", partitioned)
	n2 := startNode(t, c.URL(), 3, "n2", partitioned)

	// One conversation in each partition.
	convs := make([]int64, n)
	for id, found := int64(1), 0; found < n; id++ {
		if k := eventstore.Partition(id, n); convs[k] == 0 {
			convs[k], found = id, found+1
		}
	}
	members := []eventstore.Member{{UserID: "alice", Role: "client"}, {UserID: "bob", Role: "worker"}}
	for _, id := range convs {
		createConv(t, n1, id, members, n2)
	}
	bob := dial(t, n1.HTTPAddr(), "bob", 0)
	bob.ping()
	senders := make([]*sender, n)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for k, id := range convs {
		alice := dial(t, n1.HTTPAddr(), "alice", 0)
		alice.ping()
		senders[k] = newSender(alice, id, fmt.Sprintf("p%d", k))
		wg.Go(func() { senders[k].run(stop, 10*time.Millisecond) })
	}
	stopped := false
	defer func() {
		if !stopped {
			close(stop)
		}
		wg.Wait()
	}()
	// more waits until every sender has had `by` more messages acknowledged
	// than when it was called (a loaded machine sheds sends: slowly).
	more := func(by int) {
		t.Helper()
		base := make([]int, n)
		for k, s := range senders {
			base[k] = s.ackedCount()
		}
		testutil.CheckFor(t, trafficWait, 20*time.Millisecond, func() error {
			for k, s := range senders {
				if got := s.ackedCount() - base[k]; got < by {
					return fmt.Errorf("conversation %d: %d more acknowledged, want %d", s.conv, got, by)
				}
			}
			return nil
		})
	}

	// bob reads live traffic of every partition on node 1, then drops.
	bob.waitMessages(trafficWait, func(ms []frame) error {
		per := byConv(ms)
		for _, id := range convs {
			if len(per[id]) < 20 {
				return fmt.Errorf("%d messages in conversation %d", len(per[id]), id)
			}
		}
		return nil
	})
	bob.CloseNow()
	<-bob.done
	first := bob.messages()
	top := make(map[int]uint64) // partition -> the highest seq bob got there
	for _, f := range first {
		k := int(f.Seq & 255)
		if want := eventstore.Partition(f.ConversationID, n); k != want {
			t.Fatalf("message %d of conversation %d names partition %d, want %d", f.Seq, f.ConversationID, k, want)
		}
		top[k] = max(top[k], f.Seq)
	}
	var cursor []string
	for _, seq := range top {
		cursor = append(cursor, fmt.Sprint(seq))
	}

	// Traffic goes on while bob is away; he comes back on node 2.
	more(30)
	bob2, err := dialFrom(t, n2.HTTPAddr(), "bob", strings.Join(cursor, ","))
	if err != nil {
		t.Fatalf("resume on node 2 from %v: %v", cursor, err)
	}
	synced := bob2.next("SYNCED")
	if got := strings.Split(synced.Cursor, ","); len(got) != n {
		t.Errorf("SYNCED cursor %q: want one event id for each of %d partitions", synced.Cursor, n)
	}
	more(30)
	close(stop)
	stopped = true
	wg.Wait()

	// On a loaded machine the node may shed sends (unavailable, nothing
	// stored): they are sent again with their client_msg_id until stored.
	want := make(map[int64][]uint64)
	total := 0
	for _, s := range senders {
		if len(s.unacked) > 0 {
			t.Logf("conversation %d: %d sends not acknowledged at first (%v), sent again", s.conv, len(s.unacked), s.codes)
			s.retryUnacked(t, trafficWait)
		}
		want[s.conv] = slices.Sorted(maps.Values(s.acked))
		total += len(s.acked)
	}
	second := bob2.waitMessages(trafficWait, func(ms []frame) error {
		if len(first)+len(ms) < total {
			return fmt.Errorf("%d+%d of %d messages", len(first), len(ms), total)
		}
		return nil
	})
	before, after := byConv(first), byConv(second)
	for _, id := range convs {
		got := append(seqs(before[id]), seqs(after[id])...)
		if !slices.IsSorted(got) || len(slices.Compact(slices.Clone(got))) != len(got) {
			t.Errorf("conversation %d: bob's messages out of order or doubled around the resume from %v (synced %s)", id, cursor, synced.Cursor)
		}
		if !slices.Equal(got, want[id]) {
			t.Errorf("conversation %d: bob got %d messages (%d before, %d after), %d acknowledged; first difference at %d",
				id, len(got), len(before[id]), len(after[id]), len(want[id]), firstDiff(got, want[id]))
		}
	}
	t.Logf("%d messages before the disconnect (cursor %v), %d after resuming on node 2 (synced at %s)", len(first), cursor, len(second), synced.Cursor)
}

// byConv groups message frames by conversation, in the order received.
func byConv(fs []frame) map[int64][]frame {
	out := make(map[int64][]frame)
	for _, f := range fs {
		out[f.ConversationID] = append(out[f.ConversationID], f)
	}
	return out
}
