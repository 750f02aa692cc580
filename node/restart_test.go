package node_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"inbox/eventstore"
	"inbox/internal/testnats"
	"inbox/internal/testutil"
)

// TestRestartAfterExpiredTail: the stream's last events were typing events
// that have expired since; a node starting on it must not wait for them.
func TestRestartAfterExpiredTail(t *testing.T) {
	s := testnats.Server(t)
	st := testnats.StoreWith(t, s, eventstore.Config{TypingTTL: time.Second})
	ctx := context.Background()
	if _, err := st.Append(ctx, &eventstore.Created{ConversationID: 1, Members: []eventstore.Member{{UserID: "a", Role: "member"}}}); err != nil {
		t.Fatal(err)
	}
	last, err := st.Append(ctx, &eventstore.Typing{ConversationID: 1, UserID: "a", IsTyping: true})
	if err != nil {
		t.Fatal(err)
	}
	testutil.CheckFor(t, 10*time.Second, 100*time.Millisecond, func() error {
		if _, err := st.SubjectOf(ctx, last); err == nil {
			return errors.New("typing event did not expire")
		}
		return nil
	})
	start := time.Now()
	n := rtStart(t, s, "n1", nil)
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("start took %s", took)
	}
	if !n.Dir().Exists(1) {
		t.Fatal("conversation 1 not in the directory after start")
	}
}
