package node_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"inbox/internal/testutil"
	"inbox/node"
)

// TestResumeRightAfterRestart: a node restarted on a read model that is
// caught up has dispatched nothing yet when a client resumes from before
// its last events; the catch-up reads them from the stream all the same
// (the live feed tells the hub where it starts). Following the whole
// stream and by interest.
func TestResumeRightAfterRestart(t *testing.T) {
	for _, mode := range []string{node.LiveFeedStream, node.LiveFeedInterest} {
		t.Run(mode, func(t *testing.T) {
			s := rtNATS(t)
			mod := func(c *node.Config) { c.DataDir, c.LiveFeed = t.TempDir(), mode }
			dir := ""
			first := func(c *node.Config) { mod(c); dir = c.DataDir }
			n := rtStart(t, s, "n1", first)
			rtCreate(t, 1, []string{"alice", "bob"}, n)
			alice := rtDial(t, n, "alice")
			var ids []int64
			for i := range 3 {
				ids = append(ids, rtSendMessage(t, alice, 1, fmt.Sprint("before the restart ", i)))
			}
			ctx, cancel := context.WithTimeout(context.Background(), rtFrameWait)
			defer cancel()
			if err := n.Projector().WaitFor(ctx, uint64(ids[2])); err != nil {
				t.Fatal(err)
			}
			if err := n.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}

			n = rtStart(t, s, "n1", func(c *node.Config) { mod(c); c.DataDir = dir })
			bob := rtDialURL(t, n, "bob", fmt.Sprintf("/ws/inbox/?since=%d", ids[0]))
			var got []int64
			for {
				f := bob.Next()
				if rtType(f) == "SYNCED" {
					break
				}
				if rtType(f) == "MESSAGE" {
					got = append(got, testutil.Int(t, f, "id"))
				}
			}
			if !slices.Equal(got, ids[1:]) {
				t.Fatalf("bob resumed from %d right after the restart and got %v, want %v", ids[0], got, ids[1:])
			}
		})
	}
}
