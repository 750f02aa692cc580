package node_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"inbox/eventstore"
	"inbox/internal/testutil"
	"inbox/node"
	"inbox/projections"
	"inbox/readmodel"
)

// rolesPartitions is the partition count of the role tests: a user's list
// spans all of them.
const rolesPartitions = 3

// rolesTTL is the projectors' lease TTL in the role tests.
const rolesTTL = 2 * time.Second

// rtProjector starts a --role projector node on s.
func rtProjector(t testing.TB, s *server.Server, id string) *node.Node {
	t.Helper()
	return rtStart(t, s, id, func(c *node.Config) {
		c.Role, c.Partitions, c.LeaseTTL = node.RoleProjector, rolesPartitions, rolesTTL
	})
}

// rtEdge starts a --role edge node on s.
func rtEdge(t testing.TB, s *server.Server, id string) *node.Node {
	t.Helper()
	return rtStart(t, s, id, func(c *node.Config) {
		c.Role, c.Partitions = node.RoleEdge, rolesPartitions
		// Not what these tests judge: a send through an edge waits for a
		// takeover, and the race detector on a loaded machine is slow.
		c.Admission.MaxAppendLatency, c.Admission.MaxFeedLag = time.Minute, time.Minute
		// Nor is the API's per-user rate: a test reads after each write.
		c.API.UserRate = 1000
	})
}

// rtServing waits until the projectors together serve every partition, each
// once, and returns who serves which.
func rtServing(t testing.TB, within time.Duration, projectors ...*node.Node) map[int]string {
	t.Helper()
	var owners map[int]string
	testutil.CheckFor(t, within, 10*time.Millisecond, func() error {
		owners = make(map[int]string)
		for _, p := range projectors {
			for _, k := range p.ServedPartitions() {
				if o, ok := owners[k]; ok {
					return fmt.Errorf("partition %d served by %s and %s", k, o, p.Config().NodeID)
				}
				owners[k] = p.Config().NodeID
			}
		}
		if len(owners) != rolesPartitions {
			return fmt.Errorf("partitions served: %v", owners)
		}
		return nil
	})
	return owners
}

// convsPerPartition returns n conversation ids in each partition.
func convsPerPartition(n int) []int64 {
	var ids []int64
	count := make(map[int]int)
	for id := int64(1); len(ids) < n*rolesPartitions; id++ {
		if k := eventstore.Partition(id, rolesPartitions); count[k] < n {
			count[k]++
			ids = append(ids, id)
		}
	}
	return ids
}

// rtList is user's conversation list as n answers it (raw JSON objects, so
// a comparison sees every field).
func rtList(t testing.TB, n *node.Node, user string) []any {
	t.Helper()
	st, out := rtJSON(t, n, user, "GET", "/api/conversations", nil)
	if st != http.StatusOK {
		t.Fatalf("list of %s on %s: status %d %v", user, n.Config().NodeID, st, out)
	}
	l, _ := out["conversations"].([]any)
	return l
}

// rtMessages is conversation conv's history as user reads it on n, in order.
func rtMessages(t testing.TB, n *node.Node, user string, conv int64) []any {
	t.Helper()
	st, out := rtJSON(t, n, user, "GET", fmt.Sprintf("/api/conversations/%d/messages?limit=200", conv), nil)
	if st != http.StatusOK {
		t.Fatalf("history of %d as %s on %s: status %d %v", conv, user, n.Config().NodeID, st, out)
	}
	m, _ := out["messages"].([]any)
	return m
}

func listIDs(t testing.TB, l []any) []int64 {
	ids := make([]int64, len(l))
	for i, c := range l {
		ids[i] = testutil.Int(t, c.(map[string]any), "id")
	}
	return ids
}

// lastMessageOf is the id of conversation conv's last message in list l
// (0: none, or conv not listed).
func lastMessageOf(t testing.TB, l []any, conv int64) int64 {
	for _, c := range l {
		c := c.(map[string]any)
		if testutil.Int(t, c, "id") == conv {
			if m, ok := c["last_message"].(map[string]any); ok {
				return testutil.Int(t, m, "id")
			}
		}
	}
	return 0
}

// TestEdgeServesThroughProjector: an edge (no SQLite) serves history and
// conversation lists through a projector, exactly as a node of role all on
// the same stream does: a list spanning three partitions merged in the same
// order, the same unread counts and histories; read-your-writes holds on
// the edge (a sent message is its conversation's last in the list and the
// first of its history at once, no polling).
func TestEdgeServesThroughProjector(t *testing.T) {
	s := rtNATS(t)
	p1 := rtProjector(t, s, "p1")
	rtServing(t, 30*time.Second, p1)
	edge := rtEdge(t, s, "e1")
	all := rtStart(t, s, "a1", func(c *node.Config) { c.Partitions = rolesPartitions })

	convs := convsPerPartition(2)
	for i, c := range convs {
		rtCreate(t, c, []string{"alice", []string{"bob", "carol"}[i%2]}, edge, all)
	}
	a := rtDial(t, edge, "alice")
	var last int64
	for round := range 3 {
		order := slices.Clone(convs) // each round in another order
		if round%2 == 1 {
			slices.Reverse(order)
		}
		for _, c := range order {
			last = rtSendMessage(t, a, c, fmt.Sprintf("round %d to %d", round, c))
			// Read-your-writes through the edge: no wait, no poll.
			if got := lastMessageOf(t, rtList(t, edge, "alice"), c); got != last {
				t.Fatalf("after message %d to %d alice's list on the edge shows its last message %d", last, c, got)
			}
			h := rtMessages(t, edge, "alice", c)
			if len(h) == 0 || testutil.Int(t, h[0].(map[string]any), "id") != last {
				t.Fatalf("after message %d the edge's history of %d starts %v", last, c, h)
			}
		}
	}
	if err := all.Projector().WaitFor(context.Background(), uint64(last)); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"alice", "bob", "carol", "nobody"} {
		got, want := rtList(t, edge, u), rtList(t, all, u)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("list of %s on the edge:\n got %v\nwant %v (role all)", u, got, want)
		}
		if u == "alice" {
			spans := make(map[int]bool)
			for _, id := range listIDs(t, got) {
				spans[eventstore.Partition(id, rolesPartitions)] = true
			}
			if len(got) != len(convs) || len(spans) != rolesPartitions {
				t.Errorf("alice's list %v spans partitions %v; want her %d conversations from all %d", listIDs(t, got), spans, len(convs), rolesPartitions)
			}
		}
	}
	for _, c := range convs {
		if got, want := rtMessages(t, edge, "alice", c), rtMessages(t, all, "alice", c); !reflect.DeepEqual(got, want) || len(got) != 3 {
			t.Errorf("history of %d on the edge:\n got %v\nwant %v (role all)", c, got, want)
		}
	}
	files, err := filepath.Glob(filepath.Join(edge.Config().DataDir, "*.db*"))
	if err != nil || len(files) > 0 {
		t.Errorf("the edge keeps SQLite files: %v %v", files, err)
	}
}

// rtCrash stops projector p answering and renewing its leases at once, as
// a kill -9 would: its leases stay until they expire.
func rtCrash(p *node.Node) { p.HaltProjector() }

// TestProjectorTakeover: two projectors share the partitions; one stops
// abruptly while a user keeps sending through an edge; the other serves
// every partition within the lease TTL plus a catch-up, the edge's history
// has every acknowledged message exactly once, and the survivor's read
// models verify clean against the stream.
func TestProjectorTakeover(t *testing.T) {
	s := rtNATS(t)
	p1, p2 := rtProjector(t, s, "p1"), rtProjector(t, s, "p2")
	owners := rtServing(t, 30*time.Second, p1, p2)
	// Both take a share: fair shares of 3 among 2 are 2 and 1.
	testutil.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		if len(p1.ServedPartitions()) == 0 || len(p2.ServedPartitions()) == 0 {
			return fmt.Errorf("p1 serves %v, p2 %v", p1.ServedPartitions(), p2.ServedPartitions())
		}
		return nil
	})
	edge := rtEdge(t, s, "e1")
	convs := convsPerPartition(1)
	for _, c := range convs {
		rtCreate(t, c, []string{"alice", "bob"}, edge)
	}
	a := rtDial(t, edge, "alice")
	acked := make(map[int64][]int64)
	send := func(n int) {
		for range n {
			for _, c := range convs {
				acked[c] = append(acked[c], rtSendMessage(t, a, c, "hello"))
			}
		}
	}
	send(3)

	victim, survivor := p1, p2
	if len(p2.ServedPartitions()) > len(p1.ServedPartitions()) {
		victim, survivor = p2, p1
	}
	lost := victim.ServedPartitions()
	start := time.Now()
	rtCrash(victim)
	send(2) // the victim's partitions: a send waits for the takeover (its idempotency check asks their read model)
	testutil.CheckFor(t, rolesTTL+10*time.Second, 10*time.Millisecond, func() error {
		if got := survivor.ServedPartitions(); len(got) != rolesPartitions {
			return fmt.Errorf("%s serves %v", survivor.Config().NodeID, got)
		}
		return nil
	})
	took := time.Since(start)
	t.Logf("%s took over partitions %v of %s in %v (lease TTL %v; owners before %v)", survivor.Config().NodeID, lost, victim.Config().NodeID, took, rolesTTL, owners)
	if took > rolesTTL+5*time.Second {
		t.Errorf("takeover took %v, TTL %v", took, rolesTTL)
	}
	send(2)
	for _, c := range convs {
		h := rtMessages(t, edge, "alice", c)
		var got []int64
		for _, m := range h {
			got = append(got, testutil.Int(t, m.(map[string]any), "id"))
		}
		slices.Reverse(got) // newest first
		if !slices.Equal(got, acked[c]) {
			t.Errorf("history of %d after the takeover: %v, want the acknowledged %v", c, got, acked[c])
		}
	}
	ctx := context.Background()
	last, err := survivor.Store().Last(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range survivor.ProjectorParts() {
		if err := p.Proj.WaitForAll(ctx, last); err != nil {
			t.Fatal(err)
		}
		diffs, err := projections.Verify(ctx, survivor.Store(), p.DB, filepath.Join(t.TempDir(), "verify.db"), nil, projections.Only(p.K))
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range diffs {
			t.Errorf("verify partition %d of %s: %s", p.K, survivor.Config().NodeID, d)
		}
	}
}

// TestNatsMicroListsProjectors: the nats CLI lists the read-model service,
// an instance per projector, and describes the partitions each serves.
func TestNatsMicroListsProjectors(t *testing.T) {
	natsBin := testutil.RequireTool(t, "the test lists the read-model service with the nats CLI (go install github.com/nats-io/natscli/nats@v0.5.0)", "nats")
	s := rtNATS(t)
	p1, p2 := rtProjector(t, s, "p1"), rtProjector(t, s, "p2")
	rtServing(t, 30*time.Second, p1, p2)
	nats := func(args ...string) []byte {
		t.Helper()
		cmd := exec.Command(natsBin, append([]string{"--server", s.ClientURL()}, args...)...)
		cmd.Env = append(os.Environ(), "HOME="+t.TempDir()) // no saved context
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("nats %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	var ls []struct {
		Name     string            `json:"name"`
		ID       string            `json:"id"`
		Metadata map[string]string `json:"metadata"`
	}
	serving := make(map[string]string) // node → its instance, once it serves a share
	testutil.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		out := nats("micro", "ls", "--json")
		if err := json.Unmarshal(out, &ls); err != nil {
			return fmt.Errorf("nats micro ls --json: %v\n%s", err, out)
		}
		clear(serving)
		for _, s := range ls {
			if s.Name == readmodel.ServiceName && s.Metadata["partitions"] != "" {
				serving[s.Metadata["node"]] = s.ID
			}
		}
		if len(serving) != 2 || serving["p1"] == "" || serving["p2"] == "" {
			return fmt.Errorf("nats micro ls lists %s serving partitions on %v, want p1 and p2 (a share each):\n%s", readmodel.ServiceName, serving, out)
		}
		return nil
	})
	out := string(nats("micro", "ls"))
	if !strings.Contains(out, readmodel.ServiceName) {
		t.Errorf("nats micro ls:\n%s", out)
	}
	for node, id := range serving {
		info := string(nats("micro", "info", readmodel.ServiceName, id))
		if !strings.Contains(info, "inbox.rm.") || !strings.Contains(info, node) {
			t.Errorf("nats micro info %s %s (%s) names no endpoint subject:\n%s", readmodel.ServiceName, id, node, info)
		}
		stats := string(nats("micro", "stats", readmodel.ServiceName, id))
		if !strings.Contains(stats, "partition-") {
			t.Errorf("nats micro stats %s %s (%s):\n%s", readmodel.ServiceName, id, node, stats)
		}
	}
}
