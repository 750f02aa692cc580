package main

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"inbox/eventstore"
	"inbox/internal/testnats"
)

// TestReplayVerifyPartitions (issue 16): on a stream of 3 partitions (found
// by replay and verify themselves), replay builds the read model of all
// three; verify --partition K compares only K's rows, so a damaged row is
// reported by its partition's verify and by no other; replay --partition K
// rebuilds K's rows in place and verify matches again.
func TestReplayVerifyPartitions(t *testing.T) {
	ctx := context.Background()
	s := testnats.Server(t)
	store := testnats.StoreWith(t, s, eventstore.Config{Partitions: 3})
	appendEv := func(ev eventstore.Event) uint64 {
		t.Helper()
		id, err := store.Append(ctx, ev)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	appendEv(&eventstore.Profile{UserID: "alice", Name: "Alice"})
	var victim int64 // a conversation of partition 2
	for id := int64(1); id <= 9; id++ {
		appendEv(&eventstore.Created{ConversationID: id, Members: []eventstore.Member{{UserID: "alice", Role: eventstore.RoleClient}, {UserID: "bob", Role: eventstore.RoleWorker}}})
		for i := range 3 {
			appendEv(&eventstore.Message{ConversationID: id, SenderID: "alice", SenderName: "Alice", Text: fmt.Sprint("m", i), MsgType: eventstore.TypeText})
		}
		if victim == 0 && eventstore.Partition(id, 3) == 2 {
			victim = id
		}
	}
	data := t.TempDir()
	live := filepath.Join(data, "inbox.db")
	url := s.ClientURL()
	var out bytes.Buffer
	inbox := func(args ...string) error {
		out.Reset()
		return run(ctx, append(args, "--data", data, "--nats-url", url), &out, io.Discard)
	}
	if err := inbox("replay"); err != nil {
		t.Fatalf("replay: %v", err)
	}
	last, err := store.Last(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "37 events up to partitions "+last.String()+" (0 skipped)") {
		t.Fatalf("replay printed %q, want 37 events up to partitions %s", out.String(), last)
	}
	for k := -1; k < 3; k++ {
		if err := inbox("verify", "--partition", fmt.Sprint(k)); err != nil {
			t.Fatalf("verify --partition %d: %v\n%s", k, err, out.String())
		}
	}
	if want := fmt.Sprintf("partition 2 of %s matches a rebuild from the stream\n", live); out.String() != want {
		t.Errorf("verify --partition 2 printed %q, want %q", out.String(), want)
	}

	edit, err := sql.Open("sqlite3", live)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := edit.Exec(`UPDATE messages SET text = 'damaged' WHERE conversation_id = ?`, victim); err != nil {
		t.Fatal(err)
	}
	edit.Close()
	for k := range 3 {
		err := inbox("verify", "--partition", fmt.Sprint(k))
		switch {
		case k == 2 && (!errors.Is(err, errDifferences) || strings.Count(out.String(), "damaged") != 3):
			t.Fatalf("verify --partition 2 of damaged rows: %v, printed %q", err, out.String())
		case k != 2 && err != nil:
			t.Fatalf("verify --partition %d reported another partition's rows: %v\n%s", k, err, out.String())
		}
	}
	if err := inbox("replay", "--partition", "2"); err != nil {
		t.Fatalf("replay --partition 2: %v", err)
	}
	if !strings.Contains(out.String(), "events up to partition 2 of 3; all partitions at "+last.String()) {
		t.Errorf("replay --partition 2 printed %q", out.String())
	}
	if err := inbox("verify"); err != nil {
		t.Fatalf("verify after replaying partition 2: %v\n%s", err, out.String())
	}
	if err := inbox("verify", "--partition", "3"); err == nil || !strings.Contains(err.Error(), "no partition 3") {
		t.Errorf("verify --partition 3 of 3: %v", err)
	}
}
