package cluster_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"inbox/eventstore"
	"inbox/internal/testnats"
)

// BenchmarkAppend measures how far one INBOX stream goes: message appends
// (with a Nats-Msg-Id, as a send with client_msg_id) from N concurrent
// appenders, on the embedded server (default sync and sync always) and on a
// three-server cluster with the stream at R1 and at R3. It reports events/s
// and the p99 append latency in ms.
//
//	go test ./cluster -run '^$' -bench Append -benchtime 20000x
func BenchmarkAppend(b *testing.B) {
	setups := []struct {
		name string
		open func(b *testing.B) *eventstore.Store
	}{
		{"embedded", func(b *testing.B) *eventstore.Store { return embeddedStore(b, false) }},
		{"embedded-sync-always", func(b *testing.B) *eventstore.Store { return embeddedStore(b, true) }},
		{"cluster-R1", func(b *testing.B) *eventstore.Store { return clusterAppendStore(b, 1) }},
		{"cluster-R3", func(b *testing.B) *eventstore.Store { return clusterAppendStore(b, 3) }},
	}
	for _, s := range setups {
		b.Run(s.name, func(b *testing.B) {
			st := s.open(b)
			for _, conc := range []int{1, 16, 64, 256} {
				b.Run(fmt.Sprintf("conc=%d", conc), func(b *testing.B) { benchAppend(b, st, conc) })
			}
		})
	}
}

func benchAppend(b *testing.B, st *eventstore.Store, conc int) {
	var next atomic.Int64
	lat := make([][]time.Duration, conc)
	var errs atomic.Int64
	run := fmt.Sprintf("%d-%d", conc, time.Now().UnixNano())
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for w := range conc {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				ev := &eventstore.Message{ConversationID: 1 + i%1000, SenderID: "bench", SenderName: "bench",
					Text: "a message of about the usual size, sixty-four bytes or so....", MsgType: eventstore.TypeText}
				t0 := time.Now()
				if _, err := st.Append(context.Background(), ev, eventstore.WithMsgID(fmt.Sprintf("%s-%d", run, i))); err != nil {
					errs.Add(1)
					continue
				}
				lat[w] = append(lat[w], time.Since(t0))
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	all := slices.Concat(lat...)
	slices.Sort(all)
	if len(all) > 0 {
		b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99-ms")
	}
	b.ReportMetric(float64(len(all))/elapsed.Seconds(), "events/s")
	b.ReportMetric(float64(errs.Load()), "errors")
}

func embeddedStore(b *testing.B, syncAlways bool) *eventstore.Store {
	b.Helper()
	ns, err := eventstore.RunEmbedded(eventstore.EmbeddedConfig{Dir: filepath.Join(b.TempDir(), "nats"), SyncAlways: syncAlways, ServerName: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(ns.Shutdown)
	nc, err := eventstore.ConnectEmbedded(ns, "bench")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	st, err := eventstore.Open(context.Background(), eventstore.Config{Conn: nc})
	if err != nil {
		b.Fatal(err)
	}
	return st
}

func clusterAppendStore(b *testing.B, replicas int) *eventstore.Store {
	b.Helper()
	c := testnats.NewCluster(b, 3)
	nc, err := nats.Connect(c.URL())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	st, err := eventstore.Open(context.Background(), eventstore.Config{Conn: nc, Replicas: replicas})
	if err != nil {
		b.Fatal(err)
	}
	return st
}
