package cluster_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"inbox/eventstore"
	"inbox/feed"
	"inbox/internal/testnats"
	"inbox/internal/testutil"
	"inbox/node"
)

// TestInterestFeed: two nodes on a cluster, their live feeds in interest
// mode (the default with an external NATS). Traffic among node 1's users
// never reaches node 2's feed; a user on node 2 added to that conversation
// gets CONVERSATION_JOINED, then its messages; removed, node 2 stops
// receiving them again. With 1 and 3 partitions.
func TestInterestFeed(t *testing.T) {
	for _, p := range []int{1, 3} {
		t.Run(fmt.Sprintf("partitions=%d", p), func(t *testing.T) { testInterestFeed(t, p) })
	}
}

func testInterestFeed(t *testing.T, partitions int) {
	c := testnats.NewCluster(t, 3)
	mod := func(cfg *node.Config) { cfg.Partitions = partitions }
	n1 := startNode(t, c.URL(), 3, "n1", mod)
	n2 := startNode(t, c.URL(), 3, "n2", mod)
	ctx := context.Background()
	createConv(t, n1, 1, []eventstore.Member{{UserID: "alice", Role: "member"}, {UserID: "bob", Role: "member"}}, n2)
	createConv(t, n1, 2, []eventstore.Member{{UserID: "carol", Role: "member"}, {UserID: "dave", Role: "member"}}, n2)

	alice := dial(t, n1.HTTPAddr(), "alice", 0)
	bob := dial(t, n1.HTTPAddr(), "bob", 0)
	carol := dial(t, n2.HTTPAddr(), "carol", 0)
	alice.ping()
	bob.ping()
	carol.ping()
	watching := func(n *node.Node, want int) {
		t.Helper()
		testutil.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
			if got := n.FeedStats().Watched; got != want {
				return fmt.Errorf("node %s watches %d conversations, want %d", n.HTTPAddr(), got, want)
			}
			return nil
		})
	}
	watching(n1, 1)
	watching(n2, 1)

	// quiet sends node 1's traffic and a marker from node 2 behind it, and
	// returns what node 2's feed did meanwhile.
	quiet := func(round string) (before, after feed.Stats) {
		t.Helper()
		before = n2.FeedStats()
		var last uint64
		for i := range 20 {
			last = alice.mustAck(1, fmt.Sprintf("%s-%d", round, i), "among node 1's users")
		}
		bob.waitMessages(frameWait, hasSeq(last))
		marker := carol.mustAck(2, round+"-marker", "on node 2")
		carol.waitMessages(frameWait, hasSeq(marker))
		testutil.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
			if after = n2.FeedStats(); after.Dispatched < before.Dispatched+1 {
				return fmt.Errorf("node 2's feed has not dispatched the marker: %+v", after)
			}
			return nil
		})
		return before, after
	}
	noneOf := func(round string, before, after feed.Stats) {
		t.Helper()
		// Node 2 received the marker's copy only (a stream leader's
		// election, not expected here, would add a read of the stream).
		if after.Dispatched-before.Dispatched != 1 || after.Copies-before.Copies != 1 || after.Filled != before.Filled {
			t.Fatalf("%s: node 2's feed took node 1's traffic: before %+v, after %+v", round, before, after)
		}
	}
	b, a := quiet("first")
	noneOf("before carol joins", b, a)

	// carol, on node 2, is added to conversation 1 on node 1.
	if _, err := n1.Service().AddMember(ctx, 1, eventstore.Member{UserID: "carol", Role: "member"}); err != nil {
		t.Fatal(err)
	}
	if j := carol.next("CONVERSATION_JOINED"); j.ConversationID != 1 {
		t.Fatalf("carol joined %d, want 1", j.ConversationID)
	}
	watching(n2, 2)
	var sent []uint64
	for i := range 10 {
		sent = append(sent, alice.mustAck(1, fmt.Sprint("welcome-", i), "welcome carol"))
	}
	carol.waitMessages(frameWait, func(ms []frame) error {
		var got []uint64
		for _, m := range ms {
			if m.ConversationID == 1 {
				got = append(got, m.Seq)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(sent) {
			return fmt.Errorf("carol got %v of conversation 1, want %v", got, sent)
		}
		return nil
	})

	// Removed, carol's interest in conversation 1 ends on node 2.
	if _, err := n1.Service().RemoveMember(ctx, 1, "carol"); err != nil {
		t.Fatal(err)
	}
	if l := carol.next("CONVERSATION_LEFT"); l.ConversationID != 1 {
		t.Fatalf("carol left %d, want 1", l.ConversationID)
	}
	watching(n2, 1)
	b, a = quiet("after")
	noneOf("after carol left", b, a)
}
