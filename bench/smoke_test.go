package bench_test

import (
	"math"
	"strings"
	"testing"
	"time"

	"inbox/bench"
	"inbox/internal/testnode"
	"inbox/node"
)

// startNode starts a real inboxd in-process (embedded NATS, SQLite in a
// temporary folder), its config changed by mods, and returns its base URL
// and data folder.
func startNode(tb testing.TB, mods ...func(*node.Config)) (url, dir string) {
	tb.Helper()
	cfg := testnode.Config(tb)
	for _, mod := range mods {
		mod(&cfg)
	}
	n := testnode.Start(tb, cfg)
	return "http://" + n.HTTPAddr(), cfg.DataDir
}

// TestBenchSmoke drives a real in-process inboxd (embedded NATS, SQLite,
// edge, API) with a short fan-out run and a small idle run.
// judgeCorrect judges a fan-out step's correctness, not its speed: a loaded
// machine sends fewer and its node may shed some sends (docs/overload.md),
// but every send is acknowledged or refused with an ERROR carrying its
// client_msg_id, and every acknowledged message is delivered to both
// members once, in order.
func judgeCorrect(t *testing.T, s *bench.StepReport) {
	t.Helper()
	for code := range s.Errors {
		if code != "unavailable" {
			t.Fatalf("ERROR %s answered a send: %+v", code, s)
		}
	}
	if s.Sent == 0 || s.Acked == 0 || s.Acked+s.Refused != s.Sent || s.SendFailed != s.Refused || s.Unanswered != 0 || s.AckedLost != 0 ||
		s.Expected != 2*s.Acked || s.Delivered != s.Expected || s.Lost != 0 || s.Duplicated != 0 || s.OutOfOrder != 0 {
		t.Fatalf("fan-out figures = %+v", s)
	}
}

func TestBenchSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node")
	}
	url, dir := startNode(t)

	t.Run("fanout", func(t *testing.T) {
		rep, err := bench.Run(t.Context(), bench.Config{
			URL: url, Mode: bench.ModeFanout, Users: 20, Rate: 100, Duration: 2 * time.Second,
			Warmup: 200 * time.Millisecond, Settle: 200 * time.Millisecond, Drain: 10 * time.Second, DataDir: dir,
		})
		if err != nil {
			t.Fatal(err)
		}
		s := rep.Fanout
		if s == nil {
			t.Fatal("no fan-out figures")
		}
		t.Logf("sent %d delivered %d p50 %.2fms p99 %.2fms server cpu %.1f%%", s.Sent, s.Delivered, s.Latency.P50, s.Latency.P99, s.ServerCPUPct)
		judgeCorrect(t, s)
		if s.Latency.Count == 0 || s.Latency.P50 <= 0 || s.Latency.Max > 10_000 || s.ServerCPUPct <= 0 {
			t.Fatalf("latency %+v, server cpu %v%%", s.Latency, s.ServerCPUPct)
		}
		if len(s.Slowest) == 0 || len(s.Slowest) > 5 {
			t.Fatalf("slowest windows %v, want 1 to 5", s.Slowest)
		}
		// Windows cover the sending and the longest drain from the end of
		// the warm-up (2 s + 10 s); where in it they fall depends on the
		// machine's speed, so only the span is judged.
		for _, w := range s.Slowest {
			if w.MaxMS <= 0 || w.AtS < 0 || w.AtS >= 12 {
				t.Errorf("slowest window %+v outside the run's 12 s", w)
			}
		}
		if rep.Sockets != 20 || rep.AliveAtEnd != 20 || len(rep.Disconnects) != 0 {
			t.Fatalf("sockets %d, alive %d, disconnects %v", rep.Sockets, rep.AliveAtEnd, rep.Disconnects)
		}
	})

	t.Run("typing storm", func(t *testing.T) {
		rep, err := bench.Run(t.Context(), bench.Config{
			URL: url, Mode: bench.ModeFanout, Users: 20, Rate: 100, Duration: 1500 * time.Millisecond,
			Warmup: 200 * time.Millisecond, Settle: 200 * time.Millisecond, Drain: 10 * time.Second, DataDir: dir,
			TypingSockets: 10, TypingEvery: 100 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		s := rep.Fanout
		if s == nil || s.TypingSockets != 10 || s.TypingSent == 0 || s.TypingFailed != 0 {
			t.Fatalf("typing storm figures = %+v", s)
		}
		judgeCorrect(t, s)
		// The server appends at most one start per user and conversation per
		// second, each delivered to the typer's partner: never more than one
		// frame per typer and started second of the run (however slow the
		// machine), never more than were sent, and at least the first one.
		elapsed := s.WarmupSeconds + s.Seconds + s.DrainSeconds
		most := min(s.TypingSent, int64(s.TypingSockets)*(int64(math.Ceil(elapsed))+1))
		if got := int64(rep.FramesByType["TYPING"]); got < 1 || got > most {
			t.Errorf("%d TYPING frames received for %d sent by %d typers in %.1fs, want 1 to %d (one per typer per second)", got, s.TypingSent, s.TypingSockets, elapsed, most)
		}
	})

	t.Run("scoped tokens", func(t *testing.T) {
		// A server that requires an issuer and audience: the bench mints
		// tokens carrying them.
		url, dir := startNode(t, func(c *node.Config) { c.JWTIssuer, c.JWTAudience = "https://id.example", "inbox" })
		cfg := bench.Config{
			URL: url, Mode: bench.ModeFanout, Users: 10, Rate: 50, Duration: time.Second,
			Warmup: 100 * time.Millisecond, Settle: 100 * time.Millisecond, Drain: 10 * time.Second, DataDir: dir,
		}
		// Without them the sockets are refused, and the error says why.
		if _, err := bench.Run(t.Context(), cfg); err == nil || !strings.Contains(err.Error(), "token iss is not the configured issuer") {
			t.Fatalf("unscoped tokens: %v, want the server's reason for the 401", err)
		}
		cfg.JWTIssuer, cfg.JWTAudience = "https://id.example", "inbox"
		rep, err := bench.Run(t.Context(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		if s := rep.Fanout; s == nil || s.Sent == 0 || s.Delivered != s.Expected || rep.AliveAtEnd != 10 {
			t.Fatalf("fan-out with scoped tokens = %+v, %d alive", s, rep.AliveAtEnd)
		}
	})

	t.Run("idle", func(t *testing.T) {
		rep, err := bench.Run(t.Context(), bench.Config{
			URL: url, Mode: bench.ModeIdle, Users: 50, ConvsPerUser: 2, Settle: 500 * time.Millisecond, DataDir: dir,
		})
		if err != nil {
			t.Fatal(err)
		}
		i := rep.Idle
		if i == nil || rep.Sockets != 50 || i.RSSBefore <= 0 || i.RSSAfter <= 0 || i.ServerOpenSockets < 50 || len(rep.Disconnects) != 0 {
			t.Fatalf("idle report = %+v, %+v", rep, i)
		}
		t.Logf("RSS %d -> %d (%.0f B/socket), heap %.0f B/socket, goroutines %.2f/socket", i.RSSBefore, i.RSSAfter, i.RSSPerSocket, i.HeapPerSocket, i.GoroutinesPerSock)
	})
}
