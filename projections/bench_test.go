package projections

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"inbox/eventstore"
)

// seedMessages appends convs two-member conversations and msgs messages
// spread over them with asynchronous publishes; it returns the messages.
func seedMessages(b *testing.B, e *env, convs, msgs int) []*eventstore.Message {
	b.Helper()
	js := e.store.JetStream()
	publish := func(ev eventstore.Event) {
		data, err := eventstore.Encode(ev)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := js.PublishAsync(ev.Subject(), data); err != nil {
			b.Fatal(err)
		}
	}
	for c := range convs {
		publish(created(int64(c+1), fmt.Sprint("c", c), fmt.Sprint("w", c)))
	}
	out := make([]*eventstore.Message, 0, msgs)
	for i := range msgs {
		c := i % convs
		sender := fmt.Sprint("c", c)
		if i%3 == 0 {
			sender = fmt.Sprint("w", c)
		}
		m := msg(int64(c+1), sender, fmt.Sprintf("message number %d, a line of ordinary chat text", i))
		publish(m)
		out = append(out, m)
		if i%10_000 == 0 {
			waitAsync(b, js)
		}
	}
	waitAsync(b, js)
	return out
}

func waitAsync(b *testing.B, js jetstream.JetStream) {
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		b.Fatal("async publishes not acknowledged")
	}
}

// BenchmarkReplay rebuilds a projection of two-member conversations and
// compares the rate with a plain batched insert of the same message rows.
func BenchmarkReplay(b *testing.B) {
	const convs, msgs = 5_000, 150_000
	e := newEnv(b)
	seeded := seedMessages(b, e, convs, msgs)
	total := e.lastSeq(b)
	dir := b.TempDir()
	ctx := context.Background()

	var replay, insert time.Duration
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		stats, err := Rebuild(ctx, e.store, filepath.Join(dir, fmt.Sprint("replay", i, ".db")), nil)
		if err != nil {
			b.Fatal(err)
		}
		replay += time.Since(start)
		if stats.Events != total {
			b.Fatalf("rebuilt %d events, want %d", stats.Events, total)
		}

		start = time.Now()
		insertOnly(b, filepath.Join(dir, fmt.Sprint("insert", i, ".db")), seeded, convs)
		insert += time.Since(start)
	}
	b.StopTimer()
	replayRate := float64(total) * float64(b.N) / replay.Seconds()
	insertRate := float64(len(seeded)+convs) * float64(b.N) / insert.Seconds()
	b.ReportMetric(replayRate, "events/s")
	b.ReportMetric(insertRate, "insert-bound-events/s")
	b.ReportMetric(replayRate/insertRate, "replay/insert")
}

// insertOnly writes the messages into a fresh database with the same schema
// and settings as a rebuild: prepared insert, one transaction per batch.
func insertOnly(b *testing.B, path string, msgs []*eventstore.Message, firstSeq int) {
	db, err := open(path, "OFF", "OFF")
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	for _, pragma := range []string{"PRAGMA cache_size = -262144", "PRAGMA locking_mode = EXCLUSIVE"} {
		if _, err := db.w.ExecContext(ctx, pragma); err != nil {
			b.Fatal(err)
		}
	}
	for lo := 0; lo < len(msgs); lo += rebuildBatch {
		tx, err := db.w.BeginTx(ctx, nil)
		if err != nil {
			b.Fatal(err)
		}
		st, err := tx.PrepareContext(ctx, `INSERT INTO messages (id, conversation_id, sender_id, sender_name, sender_avatar, text, type, client_msg_id, created_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`)
		if err != nil {
			b.Fatal(err)
		}
		for i, m := range msgs[lo:min(lo+rebuildBatch, len(msgs))] {
			seq := int64(firstSeq + lo + i + 1)
			if _, err := st.ExecContext(ctx, seq, m.ConversationID, m.SenderID, m.SenderName, nullable(m.SenderAvatar),
				m.Text, m.MsgType, m.ClientMsgID, m.At.UTC().Format(time.RFC3339)); err != nil {
				b.Fatal(err)
			}
		}
		if err := tx.Commit(); err != nil {
			b.Fatal(err)
		}
	}
}
