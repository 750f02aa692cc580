package cluster_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"inbox/eventstore"
	"inbox/internal/testnats"
	"inbox/internal/testutil"
	"inbox/lease"
	"inbox/node"
	"inbox/projections"
)

const rolesPartitions = 3

// leaseOwners reads the leases bucket: partition → owning node.
func leaseOwners(t *testing.T, kv jetstream.KeyValue) map[int]string {
	t.Helper()
	owners := make(map[int]string)
	for k := range rolesPartitions {
		e, err := kv.Get(context.Background(), "partition."+strconv.Itoa(k))
		if err == nil {
			owners[k] = string(e.Value())
		}
	}
	return owners
}

// TestProjectorKilledUnderLoad runs two inboxd --role projector processes
// and an edge on a three-server cluster with three partitions, SIGKILLs the
// projector owning the most partitions while users of every partition send
// through the edge, and checks: the survivor answers for every partition
// within the lease TTL plus a catch-up (the time is logged: docs/scaling.md
// quotes it), every acknowledged message is in the stream and the edge's
// history exactly once, and each of the survivor's per-partition read
// models matches a rebuild from the stream (inbox verify).
func TestProjectorKilledUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs inboxd")
	}
	bin := buildInboxd(t)
	c := testnats.NewCluster(t, 3)
	const ttl = 5 * time.Second // lease.DefaultTTL
	type projector struct {
		id, data, addr string
		proc           *child
	}
	var ps []*projector
	for _, id := range []string{"p1", "p2"} {
		p := &projector{id: id, data: t.TempDir(), addr: testutil.FreeAddr(t)}
		p.proc = startInboxd(t, bin, "--role", "projector", "--nats-url", c.URL(), "--replicas", "3", "--partitions", strconv.Itoa(rolesPartitions),
			"--node", id, "--data", p.data, "--http-addr", p.addr, "--lease-ttl", ttl.String(), "--log-level", "warn")
		ps = append(ps, p)
	}
	for _, p := range ps {
		waitHealthy(t, p.proc, p.addr)
	}
	nc, err := nats.Connect(c.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(context.Background(), lease.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	// Both own a share (fair shares of 3 among 2: 2 and 1).
	testutil.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		owners := leaseOwners(t, kv)
		counts := map[string]int{}
		for _, o := range owners {
			counts[o]++
		}
		if len(owners) != rolesPartitions || counts["p1"] == 0 || counts["p2"] == 0 {
			return fmt.Errorf("owners %v", owners)
		}
		return nil
	})

	edge := startNode(t, c.URL(), 3, "e1", func(cfg *node.Config) {
		cfg.Role, cfg.Partitions = node.RoleEdge, rolesPartitions
		cfg.API.UserRate = 100_000 // history is polled, page by page
	})
	addr := edge.HTTPAddr()

	// One conversation per partition, two senders in each.
	var convs []int64
	byPart := map[int]int64{}
	for id := int64(1); len(convs) < rolesPartitions; id++ {
		if k := eventstore.Partition(id, rolesPartitions); byPart[k] == 0 {
			byPart[k] = id
			convs = append(convs, id)
		}
	}
	var senders []*sender
	for _, conv := range convs {
		a, b := fmt.Sprintf("a%d", conv), fmt.Sprintf("b%d", conv)
		createConv(t, edge, conv, []eventstore.Member{{UserID: a, Role: eventstore.RoleClient}, {UserID: b, Role: eventstore.RoleWorker}})
		senders = append(senders, newSender(dial(t, addr, a, 0), conv, a), newSender(dial(t, addr, b, 0), conv, b))
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, s := range senders {
		wg.Go(func() { s.runUntilBroken(stop) })
	}
	total := func() int {
		n := 0
		for _, s := range senders {
			n += s.ackedCount()
		}
		return n
	}
	testutil.CheckFor(t, 60*time.Second, 20*time.Millisecond, func() error {
		if n := total(); n < 300 {
			return fmt.Errorf("%d acknowledged", n)
		}
		return nil
	})

	owners := leaseOwners(t, kv)
	counts := map[string]int{}
	for _, o := range owners {
		counts[o]++
	}
	victim, survivor := ps[0], ps[1]
	if counts[ps[1].id] > counts[ps[0].id] {
		victim, survivor = ps[1], ps[0]
	}
	var lost []int
	for k, o := range owners {
		if o == victim.id {
			lost = append(lost, k)
		}
	}
	sort.Ints(lost)
	before := total()
	killed := time.Now()
	if err := victim.proc.cmd.Process.Kill(); err != nil { // SIGKILL, by PID
		t.Fatal(err)
	}
	<-victim.proc.done
	// Each lost partition is back when the edge's history of its
	// conversation answers again (a request meanwhile waits for an owner).
	back := make(map[int]time.Duration)
	var mu sync.Mutex
	var hw sync.WaitGroup
	for _, k := range lost {
		hw.Go(func() {
			for time.Since(killed) < 60*time.Second {
				if _, err := history(t, addr, fmt.Sprintf("a%d", byPart[k]), byPart[k]); err == nil {
					mu.Lock()
					back[k] = time.Since(killed)
					mu.Unlock()
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
	hw.Wait()
	var slowest time.Duration
	for _, k := range lost {
		d, ok := back[k]
		if !ok {
			t.Fatalf("partition %d of the killed %s not served again within 60s", k, victim.id)
		}
		slowest = max(slowest, d)
	}
	// Load goes on a while after the takeover.
	testutil.CheckFor(t, 60*time.Second, 20*time.Millisecond, func() error {
		if n := total(); n < before+150 {
			return fmt.Errorf("%d acknowledged, %d at the kill", n, before)
		}
		return nil
	})
	close(stop)
	wg.Wait()
	t.Logf("TAKEOVER: killed %s (owner of partitions %v, lease TTL %v) with %d sends acknowledged; history of its partitions answered again after %v (per partition %v); %d acknowledged in all",
		victim.id, lost, ttl, before, slowest.Round(time.Millisecond), back, total())
	if slowest > 2*ttl {
		t.Errorf("takeover took %v, more than twice the lease TTL %v", slowest, ttl)
	}
	for _, s := range senders {
		select {
		case <-s.c.done: // the edge closed a socket it found silent (a loaded machine)
			s.c = dial(t, addr, s.prefix, 0)
		default:
		}
		s.retryUnacked(t, 60*time.Second)
	}

	// Every acknowledged message once in the stream and in the edge's history.
	store := clusterStoreN(t, c, rolesPartitions)
	for _, conv := range convs {
		want := map[string]uint64{}
		for _, s := range senders {
			if s.conv != conv {
				continue
			}
			for cmid, seq := range s.acked {
				want[cmid] = seq
			}
		}
		stored := streamMessages(t, store, conv)
		for cmid, seq := range want {
			if got := stored[cmid]; len(got) != 1 || got[0] != seq {
				t.Errorf("conversation %d: %s acknowledged at %d, stored at %v", conv, cmid, seq, got)
			}
		}
		testutil.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
			h, err := history(t, addr, fmt.Sprintf("a%d", conv), conv)
			if err != nil {
				return err
			}
			seen := map[string]int{}
			for _, m := range h {
				seen[m.ClientMsgID]++
			}
			for cmid := range want {
				if seen[cmid] != 1 {
					return fmt.Errorf("conversation %d: %s %d times in the edge's history", conv, cmid, seen[cmid])
				}
			}
			if len(h) != len(want) {
				return fmt.Errorf("conversation %d: history has %d, %d acknowledged", conv, len(h), len(want))
			}
			return nil
		})
	}

	// The survivor stops cleanly; each partition's file matches a rebuild.
	if err := survivor.proc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-survivor.proc.done:
	case <-time.After(30 * time.Second):
		t.Fatal("the surviving projector did not stop within 30s of SIGTERM")
	}
	for k := range rolesPartitions {
		db, err := projections.Open(filepath.Join(survivor.data, fmt.Sprintf("inbox-p%d.db", k)))
		if err != nil {
			t.Fatal(err)
		}
		diffs, err := projections.Verify(context.Background(), store, db, filepath.Join(t.TempDir(), "rebuild.db"), nil, projections.Only(k))
		db.Close()
		if err != nil {
			t.Fatal(err)
		}
		if len(diffs) > 0 {
			t.Errorf("partition %d of %s differs from a rebuild:\n%s", k, survivor.id, strings.Join(diffs, "\n"))
		}
	}
}

// clusterStoreN opens the streams of n partitions on the cluster.
func clusterStoreN(t *testing.T, c *testnats.Cluster, n int) *eventstore.Store {
	t.Helper()
	nc, err := nats.Connect(c.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	st, err := eventstore.Open(context.Background(), eventstore.Config{Conn: nc, Replicas: 3, Partitions: n})
	if err != nil {
		t.Fatal(err)
	}
	return st
}
