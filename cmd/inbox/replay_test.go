package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3"

	"inbox/eventstore"
	"inbox/internal/testnats"
	"inbox/projections"
)

// recordedStream is a few conversations with members, messages, a typing
// event, reads, a profile, a job and one undecodable event (sequence 10).
var recordedStream = filepath.Join("..", "..", "testdata", "stream.jsonl")

// TestReplayRecordedStream runs `inbox replay` on the recorded stream in a
// real JetStream server and checks the read model it builds, then `inbox
// verify` on it: a match, and after the live database is edited, the
// difference.
func TestReplayRecordedStream(t *testing.T) {
	ctx := context.Background()
	s := testnats.Server(t)
	store := testnats.Store(t, s)
	recorded := testnats.PublishRecorded(t, store, recordedStream)
	// The typing event expires, as its TTL makes it do live: a gap in the
	// sequences, which the bar must not count as events.
	if recorded[3].Subject != "inbox.conv.1.typing" {
		t.Fatalf("event 4 is %s, want the typing event", recorded[3].Subject)
	}
	if err := store.Streams()[0].DeleteMsg(ctx, 4); err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	live := filepath.Join(data, "inbox.db")

	var out, progress bytes.Buffer
	if err := run(ctx, []string{"replay", "--data", data, "--nats-url", s.ClientURL()}, &out, &progress); err != nil {
		t.Fatalf("replay: %v\n%s", err, progress.String())
	}
	summary := regexp.MustCompile(`^rebuilt (.+): (\d+) events up to sequence (\d+) \((\d+) skipped\) in \S+, (\d+) events/s\n$`).FindStringSubmatch(out.String())
	if summary == nil {
		t.Fatalf("replay printed %q, want the summary line", out.String())
	}
	if summary[1] != live || summary[2] != "16" || summary[3] != "17" || summary[4] != "1" || len(recorded) != 17 {
		t.Errorf("replay of %d recorded events, one expired: %q, want 16 events up to sequence 17 (1 skipped) into %s", len(recorded), out.String(), live)
	}
	// The bar's last figures are the summary's: the events read, and their rate.
	bar := regexp.MustCompile(`replay \((\d+) events/s\)\s+100% \S+ \((\d+)/(\d+)\)`).FindAllStringSubmatch(progress.String(), -1)
	if len(bar) == 0 {
		t.Fatalf("no finished progress bar in %q", progress.String())
	}
	if last := bar[len(bar)-1]; last[1] != summary[5] || last[2] != summary[2] || last[3] != summary[2] {
		t.Errorf("the bar ends at %s/%s events, %s events/s; the summary says %s events, %s events/s",
			last[2], last[3], last[1], summary[2], summary[5])
	}

	db, err := projections.Open(live)
	if err != nil {
		t.Fatal(err)
	}
	checkRecordedReadModel(t, db)
	db.Close()

	out.Reset()
	verifyArgs := []string{"verify", "--data", data, "--nats-url", s.ClientURL()}
	if err := run(ctx, verifyArgs, &out, io.Discard); err != nil {
		t.Fatalf("verify after replay: %v\n%s", err, out.String())
	}
	if want := live + " matches a rebuild from the stream\n"; out.String() != want {
		t.Errorf("verify printed %q, want %q", out.String(), want)
	}

	edit, err := sql.Open("sqlite3", live)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := edit.Exec(`UPDATE messages SET text = 'edited' WHERE id = 3`); err != nil {
		t.Fatal(err)
	}
	edit.Close()
	out.Reset()
	err = run(ctx, verifyArgs, &out, io.Discard)
	if !errors.Is(err, errDifferences) || !strings.Contains(out.String(), "edited") {
		t.Errorf("verify of an edited read model: %v, printed %q; want %v and the edited row", err, out.String(), errDifferences)
	}
}

// checkRecordedReadModel checks the read model of testdata/stream.jsonl.
func checkRecordedReadModel(t *testing.T, db *projections.DB) {
	t.Helper()
	ctx := context.Background()
	asJSON := func(v any, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	const (
		fresh = `"edited_at":null,"deleted":false,"reactions":{}` // never edited, deleted or reacted to
		alice = `"sender_id":"alice","sender_name":"Alice Doe","sender_avatar":"https://example.com/alice.png"`
		msg3  = `{"id":3,"conversation_id":1,` + alice + `,"message":"Hello","type":"TEXT","created_at":"2025-01-15T10:00:02Z","message_id":3,"seq":3,"client_msg_id":"c-1","is_read":false,` + fresh + `}`
		msg5  = `{"id":5,"conversation_id":1,"sender_id":"bob","sender_name":"bob","sender_avatar":null,"message":"Hi Alice","type":"TEXT","created_at":"2025-01-15T10:00:04Z","message_id":5,"seq":5,"is_read":true,` + fresh + `}`
		msg17 = `{"id":17,"conversation_id":1,"sender_id":"system","sender_name":"","sender_avatar":null,"message":"This conversation is recorded","type":"SYSTEM","created_at":"2025-01-15T10:04:00Z","message_id":17,"seq":17,"is_read":false,` + fresh + `}`
		msg9  = `{"id":9,"conversation_id":2,"sender_id":"carol","sender_name":"Carol","sender_avatar":null,"message":"Anyone here?","type":"TEXT","created_at":"2025-01-15T10:01:03Z","message_id":9,"seq":9,"is_read":true,` + fresh + `}`
		msg15 = `{"id":15,"conversation_id":2,` + alice + `,"message":"Welcome, dave","type":"TEXT","created_at":"2025-01-15T10:03:01Z","message_id":15,"seq":15,"is_read":false,` + fresh + `}`
		conv1 = `"id":1,"members":[{"user_id":"alice","role":"client"},{"user_id":"bob","role":"worker"}],"last_message":` + msg17
		conv2 = `"id":2,"members":[{"user_id":"alice","role":"client"},{"user_id":"dave","role":"member"}],"last_message":` + msg15
	)
	for _, tc := range []struct{ what, got, want string }{
		{"alice's conversations", asJSON(db.Conversations(ctx, "alice")), `[{` + conv1 + `,"unread":1},{` + conv2 + `,"unread":1}]`},
		{"bob's conversations", asJSON(db.Conversations(ctx, "bob")), `[{` + conv1 + `,"unread":2}]`},
		{"dave's conversations", asJSON(db.Conversations(ctx, "dave")), `[{` + conv2 + `,"unread":1}]`},
		{"carol's conversations (removed)", asJSON(db.Conversations(ctx, "carol")), `[]`},
		{"conversation 1", asJSON(db.Messages(ctx, 1, 0, 0)), `[` + msg17 + `,` + msg5 + `,` + msg3 + `]`},
		{"conversation 2 (no undecodable message 10)", asJSON(db.Messages(ctx, 2, 0, 0)), `[` + msg15 + `,` + msg9 + `]`},
		{"alice's profile", asJSON(db.Profile(ctx, "alice")), `{"user_id":"alice","name":"Alice Doe","avatar":"https://example.com/alice.png"}`},
	} {
		if tc.got != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.what, tc.got, tc.want)
		}
	}
	snap, err := db.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := asJSON(snap.Jobs, nil); snap.Applied.String() != "17" || got != `{"42":["alice","carol"]}` {
		t.Errorf("snapshot at %s, jobs %s; want 17 and job 42 with alice and carol", snap.Applied, got)
	}
	// Job status has no query of its own: read its row.
	raw, err := sql.Open("sqlite3", "file:"+db.Path()+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	var status, detail, updated string
	var seq int64
	if err := raw.QueryRow(`SELECT status, detail, seq, updated_at FROM job_status WHERE job_id = 42`).Scan(&status, &detail, &seq, &updated); err != nil {
		t.Fatal(err)
	}
	if status != "done" || detail != `{"step":2,"of":2}` || seq != 13 || updated != "2025-01-15T10:02:30Z" {
		t.Errorf("job 42: %s %s at %d (%s), want done {\"step\":2,\"of\":2} at 13 (2025-01-15T10:02:30Z)", status, detail, seq, updated)
	}
}

// TestReplayAfterErasure: `inbox replay` and `inbox verify` on the recorded
// stream after its first message was edited, reacted to and erased (its
// events securely deleted, a tombstone in their place): the rebuilt read
// model shows the message deleted, holds neither text in its files, and
// verifies.
func TestReplayAfterErasure(t *testing.T) {
	ctx := context.Background()
	s := testnats.Server(t)
	store := testnats.Store(t, s)
	testnats.PublishRecorded(t, store, recordedStream)
	const m = 3 // alice's "Hello"
	appendEv := func(ev eventstore.Event) uint64 {
		t.Helper()
		seq, err := store.Append(ctx, ev)
		if err != nil {
			t.Fatal(err)
		}
		return seq
	}
	edit := appendEv(&eventstore.Edit{ConversationID: 1, MessageID: m, UserID: "alice", Text: "Hello, secret-wombat"})
	appendEv(&eventstore.React{ConversationID: 1, MessageID: m, UserID: "bob", Emoji: "👍", On: true})
	appendEv(&eventstore.Erased{ConversationID: 1, MessageID: m, SenderID: "alice", MsgType: eventstore.TypeText,
		SentAt: time.Date(2025, 1, 15, 10, 0, 2, 0, time.UTC), Seqs: []uint64{m, edit}})
	for _, seq := range []uint64{m, edit} {
		if ok, err := store.SecureDelete(ctx, seq); err != nil || !ok {
			t.Fatalf("secure delete %d: %v, %v", seq, ok, err)
		}
	}
	data := t.TempDir()
	live := filepath.Join(data, "inbox.db")
	var out bytes.Buffer
	if err := run(ctx, []string{"replay", "--data", data, "--nats-url", s.ClientURL()}, &out, io.Discard); err != nil {
		t.Fatalf("replay: %v", err)
	}
	db, err := projections.Open(live)
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := db.Messages(ctx, 1, m+1, 1)
	db.Close()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("message %d after the replay: %+v, %v", m, msgs, err)
	}
	if got := msgs[0]; got.ID != m || !got.Deleted || got.Text != "" || got.SenderID != "alice" || got.SenderName != "" ||
		got.CreatedAt != "2025-01-15T10:00:02Z" || len(got.Reactions) != 0 {
		t.Errorf("the erased message after the replay: %+v", got)
	}
	for _, p := range []string{live, live + "-wal"} {
		if b, err := os.ReadFile(p); err == nil && (bytes.Contains(b, []byte("secret-wombat")) || bytes.Contains(b, []byte("Hello"))) {
			t.Errorf("%s holds the erased text", p)
		}
	}
	out.Reset()
	if err := run(ctx, []string{"verify", "--data", data, "--nats-url", s.ClientURL()}, &out, io.Discard); err != nil {
		t.Fatalf("verify: %v\n%s", err, out.String())
	}
}
