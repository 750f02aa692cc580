package cluster_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
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

// BenchmarkPartitions measures appends/s with P = 1 and P = 3 partitions,
// every stream at R3, on one three-server cluster: the same message appends
// as BenchmarkAppend, to 1,000 conversations (so P = 3 spreads them over
// three streams, three Raft groups whose leaders Open places on different
// servers). Each P gets fresh streams, deleted afterwards. It also reports
// the CPU used per append: this process's (cpu-cores: in cores over the
// run); and with the cluster in other processes (INBOX_BENCH_NATS_URL, with
// their PIDs in INBOX_BENCH_NATS_PIDS), each server's, as the busiest one's
// and all of them together (busiest-us/event, servers-us/event). On one
// machine with fewer cores than servers the servers share the cores, so
// throughput follows the total; on a machine per server it follows the
// busiest.
//
//	go test ./cluster -run '^$' -bench Partitions -benchtime 20000x -count 3
func BenchmarkPartitions(b *testing.B) {
	url, servers := os.Getenv("INBOX_BENCH_NATS_URL"), serverPIDs(b)
	if url == "" {
		url = testnats.NewCluster(b, 3).URL()
	}
	nc, err := nats.Connect(url)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	for _, p := range []int{1, 3} {
		b.Run(fmt.Sprintf("R3-P=%d", p), func(b *testing.B) {
			ctx := context.Background()
			st, err := eventstore.Open(ctx, eventstore.Config{Conn: nc, Replicas: 3, Partitions: p})
			if err != nil {
				b.Fatal(err)
			}
			defer func() {
				for k := range p {
					if err := st.JetStream().DeleteStream(ctx, st.StreamName(k)); err != nil {
						b.Errorf("delete stream %s: %v", st.StreamName(k), err)
					}
				}
			}()
			leaders := map[string]int{}
			for _, stream := range st.Streams() {
				info, err := stream.Info(ctx)
				if err != nil {
					b.Fatal(err)
				}
				if info.Cluster != nil {
					leaders[info.Cluster.Leader]++
				}
			}
			b.Logf("P=%d: stream leaders per server %v", p, leaders)
			// Warm up: the first appends to a new replicated stream wait
			// for its Raft group to settle.
			var wg sync.WaitGroup
			for w := range 64 {
				wg.Go(func() {
					for i := range 20 {
						ev := &eventstore.Message{ConversationID: int64(1 + w*20 + i), SenderID: "warm", SenderName: "warm", Text: "warm", MsgType: eventstore.TypeText}
						if _, err := st.Append(ctx, ev); err != nil {
							b.Errorf("warm-up append: %v", err)
							return
						}
					}
				})
			}
			wg.Wait()
			for _, conc := range []int{64, 256, 1024} {
				b.Run(fmt.Sprintf("conc=%d", conc), func(b *testing.B) { benchAppend(b, st, conc, servers...) })
			}
		})
	}
}

// benchAppend runs b.N appends from conc appenders; servers are the PIDs of
// the NATS servers, if they run in processes of their own.
func benchAppend(b *testing.B, st *eventstore.Store, conc int, servers ...int) {
	var next atomic.Int64
	lat := make([][]time.Duration, conc)
	var errs atomic.Int64
	run := fmt.Sprintf("%d-%d", conc, time.Now().UnixNano())
	b.ResetTimer()
	cpu0 := cpuTime(b)
	srv0 := procCPU(b, servers)
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
	cpu := cpuTime(b) - cpu0
	srv := procCPU(b, servers)
	b.StopTimer()
	b.ReportMetric(cpu.Seconds()/elapsed.Seconds(), "cpu-cores")
	if len(servers) > 0 {
		var busiest, total time.Duration
		for i := range srv {
			d := srv[i] - srv0[i]
			busiest, total = max(busiest, d), total+d
		}
		perEvent := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(max(b.N, 1)) }
		b.ReportMetric(perEvent(busiest), "busiest-us/event")
		b.ReportMetric(perEvent(total), "servers-us/event")
	}
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

// cpuTime is the CPU time (user and system) this process has used.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// serverPIDs are the PIDs in INBOX_BENCH_NATS_PIDS (comma-separated).
func serverPIDs(b *testing.B) []int {
	var pids []int
	for f := range strings.SplitSeq(os.Getenv("INBOX_BENCH_NATS_PIDS"), ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		pid, err := strconv.Atoi(f)
		if err != nil {
			b.Fatalf("INBOX_BENCH_NATS_PIDS: %q is not a PID", f)
		}
		pids = append(pids, pid)
	}
	return pids
}

// procCPU is the CPU time (user and system) each of pids has used, from
// /proc/<pid>/stat (Linux).
func procCPU(b *testing.B, pids []int) []time.Duration {
	out := make([]time.Duration, len(pids))
	for i, pid := range pids {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			b.Fatalf("CPU time of server %d: %v", pid, err)
		}
		// After the command name in parentheses: state is field 3, utime
		// and stime fields 14 and 15, in clock ticks (100 a second).
		fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
		utime, _ := strconv.ParseInt(fields[11], 10, 64)
		stime, _ := strconv.ParseInt(fields[12], 10, 64)
		out[i] = time.Duration(utime+stime) * 10 * time.Millisecond
	}
	return out
}
