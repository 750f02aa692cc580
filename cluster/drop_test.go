package cluster_test

import (
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsserver "github.com/nats-io/nats-server/v2/test"

	"inbox/eventstore"
	"inbox/internal/testutil"
	"inbox/node"
)

// restartable is one JetStream server that can be stopped and started again
// on the same port and storage.
type restartable struct {
	opts server.Options
	srv  *server.Server
}

func newRestartable(t *testing.T) *restartable {
	t.Helper()
	r := &restartable{opts: natsserver.DefaultTestOptions}
	r.opts.Port = -1
	r.opts.JetStream = true
	r.opts.StoreDir = t.TempDir()
	r.srv = natsserver.RunServer(&r.opts)
	r.opts.Port = r.srv.Addr().(*net.TCPAddr).Port
	t.Cleanup(func() { r.srv.Shutdown() })
	return r
}

func (r *restartable) stop() {
	r.srv.Shutdown()
	r.srv.WaitForShutdown()
}

func (r *restartable) start() {
	opts := r.opts
	r.srv = natsserver.RunServer(&opts)
}

// TestNATSConnectionDrop takes the only NATS server away from two running
// nodes: sockets stay open, sends are answered ERROR unavailable (never a
// false ACK), and once NATS is back the retried send is stored once and
// live delivery, the projection and history resume where they stopped.
func TestNATSConnectionDrop(t *testing.T) {
	ns := newRestartable(t)
	url := ns.srv.ClientURL()
	n1 := startNode(t, url, 1, "n1")
	n2 := startNode(t, url, 1, "n2")
	createConv(t, n1, 3, []eventstore.Member{{UserID: "alice", Role: "client"}, {UserID: "bob", Role: "worker"}}, n2)
	alice := dial(t, n1.HTTPAddr(), "alice", 0)
	bob := dial(t, n2.HTTPAddr(), "bob", 0)
	alice.ping()
	bob.ping()
	var acked []uint64
	for i := range 10 {
		acked = append(acked, alice.mustAck(3, fmt.Sprintf("before-%d", i), "before the outage"))
	}
	bob.waitMessages(frameWait, hasSeq(acked[len(acked)-1]))

	ns.stop()
	for i := range 3 {
		cmid := fmt.Sprintf("during-%d", i)
		r, ok := alice.send(3, cmid, "during the outage", frameWait)
		if !ok || r.Seq != 0 || r.Code != "unavailable" {
			t.Fatalf("send %s with NATS down: answer %+v (answered %v), want ERROR unavailable", cmid, r, ok)
		}
	}
	alice.ping() // both sockets are still open
	bob.ping()

	ns.start()
	// The retried sends are stored once each, in order, and delivered live
	// across nodes again.
	for i := range 3 {
		cmid := fmt.Sprintf("during-%d", i)
		var seq uint64
		testutil.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
			r, ok := alice.send(3, cmid, "during the outage", frameWait)
			if !ok || r.Seq == 0 {
				return fmt.Errorf("retry of %s: %+v (answered %v)", cmid, r, ok)
			}
			seq = r.Seq
			return nil
		})
		acked = append(acked, seq)
	}
	for i := range 10 {
		acked = append(acked, alice.mustAck(3, fmt.Sprintf("after-%d", i), "after the outage"))
	}
	for _, c := range []*client{alice, bob} {
		got := c.waitMessages(frameWait, func(ms []frame) error {
			if len(ms) < len(acked) {
				return fmt.Errorf("%d of %d messages", len(ms), len(acked))
			}
			return nil
		})
		if !slices.Equal(seqs(got), acked) {
			t.Fatalf("%s received %v, want %v", c.name, seqs(got), acked)
		}
	}
	for _, n := range []*node.Node{n1, n2} {
		testutil.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
			h, err := history(t, n.HTTPAddr(), "bob", 3)
			if err != nil {
				return err
			}
			if !slices.Equal(seqs(h), acked) {
				return fmt.Errorf("history on %s = %v, want %v", n.HTTPAddr(), seqs(h), acked)
			}
			return nil
		})
		select {
		case err := <-n.Failed():
			t.Fatalf("node failed during the outage: %v", err)
		default:
		}
	}
}
