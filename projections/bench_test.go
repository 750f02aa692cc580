package projections

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"syscall"
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

// BenchmarkKeyRecord looks up idempotency keys from many goroutines at once,
// as concurrent sends do: a miss (a new key, the common case) and a hit.
func BenchmarkKeyRecord(b *testing.B) {
	db := openDB(b, "keys.db")
	if err := db.Bind(1); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	a := newApplier(db, 0, testLogger(b))
	at := time.Now()
	var events []eventstore.Stored
	for i := range 1000 {
		m := keyedMsg(1, "u", fmt.Sprint("k", i), "hello", at)
		events = append(events, eventstore.Stored{Seq: uint64(i + 1), Subject: m.Subject(), Time: at, Event: m})
	}
	if _, err := a.apply(ctx, events); err != nil {
		b.Fatal(err)
	}
	for _, hit := range []bool{false, true} {
		b.Run(fmt.Sprint("hit=", hit), func(b *testing.B) {
			b.SetParallelism(64)
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					i++
					key := fmt.Sprint("new", i)
					if hit {
						key = fmt.Sprint("k", i%1000)
					}
					_, found, err := db.KeyRecord(ctx, eventstore.Key{UserID: "u", ConversationID: 1, ClientKey: key})
					if err != nil || found != hit {
						b.Errorf("found %v, err %v", found, err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkApplyBatch applies keyed messages to 5,000 two-member
// conversations, each to one at random, in batches of each size: what a
// commit costs per event, in CPU (the process's, so with SQLite's) and wall
// time (with the disk).
func BenchmarkApplyBatch(b *testing.B) {
	const convs = 5000
	for _, size := range []int{1, 5, 20, 100, 500} {
		b.Run(fmt.Sprint("events=", size), func(b *testing.B) {
			db := openDB(b, "batch.db")
			if err := db.Bind(1); err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			a := newApplier(db, 0, testLogger(b))
			at := time.Now()
			var seq uint64
			var events []eventstore.Stored
			for c := range convs {
				seq++
				ev := created(int64(c+1), fmt.Sprint("c", c), fmt.Sprint("w", c))
				events = append(events, eventstore.Stored{Seq: seq, Subject: ev.Subject(), Time: at, Event: ev})
			}
			if _, err := a.apply(ctx, events); err != nil {
				b.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(1, 2))
			cpu0 := cpuTime()
			b.ResetTimer()
			for b.Loop() {
				events = events[:0]
				for range size {
					seq++
					c := rng.Int64N(convs) + 1
					m := keyedMsg(c, fmt.Sprint("c", c-1), fmt.Sprint("k", seq), "a line of ordinary chat text", at)
					events = append(events, eventstore.Stored{Seq: seq, Subject: m.Subject(), Time: at, Event: m})
				}
				if _, err := a.apply(ctx, events); err != nil {
					b.Fatal(err)
				}
			}
			n := float64(b.N * size)
			b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/n, "cpu-µs/event")
			b.ReportMetric(float64(b.Elapsed().Microseconds())/n, "µs/event")
		})
	}
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
