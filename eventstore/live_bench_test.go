package eventstore_test

import (
	"context"
	"os"
	"runtime"
	"testing"

	"github.com/nats-io/nats.go"

	"inbox/eventstore"
	"inbox/internal/testnats"
)

// BenchmarkLiveWatch watches b.N conversations on one Live, as a node in
// interest mode does for its sockets' conversations, and reports the memory
// each costs: "B/watch" is the heap grown per watched conversation, after a
// GC: the client's subscription and the in-process server's together, or,
// with INBOX_BENCH_NATS_URL (a server of its own process, as on a cluster),
// the client's only.
//
//	go test ./eventstore -run '^$' -bench LiveWatch -benchtime 100000x
func BenchmarkLiveWatch(b *testing.B) {
	url := os.Getenv("INBOX_BENCH_NATS_URL")
	var st *eventstore.Store
	if url == "" {
		s := testnats.Server(b)
		url = s.ClientURL()
		st = testnats.StoreWith(b, s, eventstore.Config{Republish: true})
	} else {
		snc, err := nats.Connect(url)
		if err != nil {
			b.Fatal(err)
		}
		defer snc.Close()
		if st, err = eventstore.Open(context.Background(), eventstore.Config{Conn: snc, Republish: true}); err != nil {
			b.Fatal(err)
		}
	}
	nc, err := nats.Connect(url, nats.NoReconnect())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	l, err := st.OpenLive(nc, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	if err := l.Sync(context.Background()); err != nil {
		b.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	for i := range b.N {
		if err := l.Watch(int64(i + 1)); err != nil {
			b.Fatal(err)
		}
	}
	if err := l.Sync(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/float64(b.N), "B/watch")
	runtime.KeepAlive(l)
}
