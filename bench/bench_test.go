package bench_test

import (
	"testing"
	"time"

	"inbox/bench"
)

// BenchmarkTypingStorm measures message latency through a real in-process
// inboxd (embedded NATS, SQLite, edge) at a steady message rate, first
// without typing, then with half the users each sending a TYPING start every
// 250 ms, and reports both p99s and their ratio from the same run. Scaled to
// fit server and client sockets into one process (the file limit); the full
// size is `inbox bench --mode fanout --users 10000 --msg-rate 5000
// --typing-sockets 5000 --typing-every 250ms` against a separate inboxd.
func BenchmarkTypingStorm(b *testing.B) {
	const users, rate = 4000, 2000
	url, dir := startNode(b)
	run := func(typers int) *bench.StepReport {
		rep, err := bench.Run(b.Context(), bench.Config{
			URL: url, Mode: bench.ModeFanout, Users: users, Rate: rate,
			Duration: 5 * time.Second, Warmup: time.Second, Settle: time.Second, Drain: 10 * time.Second,
			DataDir: dir, TypingSockets: typers, TypingEvery: 250 * time.Millisecond,
		})
		if err != nil {
			b.Fatal(err)
		}
		s := rep.Fanout
		if s == nil || s.Lost != 0 || s.SendFailed != 0 || len(s.Errors) != 0 || s.TypingFailed != 0 {
			b.Fatalf("fan-out with %d typers: %+v", typers, s)
		}
		return s
	}
	for b.Loop() {
		plain, storm := run(0), run(users/2)
		b.ReportMetric(plain.Latency.P99, "p99-ms")
		b.ReportMetric(storm.Latency.P99, "storm-p99-ms")
		b.ReportMetric(storm.Latency.P99/plain.Latency.P99, "storm/plain-p99")
		b.ReportMetric(storm.TypingPerS, "typing-frames/s")
		b.ReportMetric(storm.DeliveredPerS, "delivered/s")
	}
}
