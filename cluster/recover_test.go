package cluster_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"inbox/eventstore"
	"inbox/internal/testutil"
)

// TestProjectorConsumerDeleted deletes a node's durable projection consumer
// under it (an operator with the nats CLI): the projector creates it again
// from its applied sequence instead of ending the node, and history keeps up.
func TestProjectorConsumerDeleted(t *testing.T) {
	ns := newRestartable(t)
	n1 := startNode(t, ns.srv.ClientURL(), 1, "n1")
	createConv(t, n1, 5, []eventstore.Member{{UserID: "alice", Role: "client"}, {UserID: "bob", Role: "worker"}})
	alice := dial(t, n1.HTTPAddr(), "alice", 0)
	alice.ping()
	var acked []uint64
	for i := range 5 {
		acked = append(acked, alice.mustAck(5, fmt.Sprintf("m-%d", i), "before"))
	}
	waitHistory(t, n1.HTTPAddr(), 5, acked)

	nc, err := nats.Connect(ns.srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteConsumer(context.Background(), eventstore.StreamName, "inbox-proj-n1"); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		acked = append(acked, alice.mustAck(5, fmt.Sprintf("n-%d", i), "after"))
	}
	waitHistory(t, n1.HTTPAddr(), 5, acked)
	select {
	case err := <-n1.Failed():
		t.Fatalf("node failed: %v", err)
	default:
	}
}

func waitHistory(t *testing.T, addr string, conv int64, want []uint64) {
	t.Helper()
	testutil.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		h, err := history(t, addr, "alice", conv)
		if err != nil {
			return err
		}
		if !slices.Equal(seqs(h), want) {
			return fmt.Errorf("history on %s = %v, want %v", addr, seqs(h), want)
		}
		return nil
	})
}
