package bench_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"inbox/bench"
	"inbox/node"
)

// startNode starts a real inboxd in-process (embedded NATS, SQLite in a
// temporary folder), its config changed by mods, and returns its base URL
// and data folder.
func startNode(tb testing.TB, mods ...func(*node.Config)) (url, dir string) {
	tb.Helper()
	dir = tb.TempDir()
	cfg := node.Config{DataDir: dir, HTTPAddr: "127.0.0.1:0"}
	for _, mod := range mods {
		mod(&cfg)
	}
	n, err := node.Start(tb.Context(), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = n.Shutdown(ctx)
	})
	return "http://" + n.HTTPAddr(), dir
}

// TestBenchSmoke drives a real in-process inboxd (embedded NATS, SQLite,
// edge, API) with a short fan-out run and a small idle run.
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
		if s.Sent < 150 || s.Lost != 0 || s.Duplicated != 0 || s.OutOfOrder != 0 || s.Acked != s.Sent ||
			s.Expected != 2*s.Sent || s.Delivered != s.Expected || s.SendFailed != 0 || len(s.Errors) != 0 {
			t.Fatalf("fan-out figures = %+v", s)
		}
		if s.Latency.Count == 0 || s.Latency.P50 <= 0 || s.Latency.Max > 10_000 || s.ServerCPUPct <= 0 {
			t.Fatalf("latency %+v, server cpu %v%%", s.Latency, s.ServerCPUPct)
		}
		if len(s.Slowest) == 0 || len(s.Slowest) > 5 {
			t.Fatalf("slowest windows %v, want 1 to 5", s.Slowest)
		}
		for _, w := range s.Slowest {
			if w.MaxMS <= 0 || w.AtS < 0 || w.AtS > s.Seconds+s.DrainSeconds {
				t.Errorf("slowest window %+v outside the run (%.1f s, drained in %.1f s)", w, s.Seconds, s.DrainSeconds)
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
		if s == nil || s.TypingSockets != 10 || s.TypingSent < 100 || s.TypingFailed != 0 || len(s.Errors) != 0 || s.Lost != 0 || s.Delivered != s.Expected {
			t.Fatalf("typing storm figures = %+v", s)
		}
		// The server appends at most one start per user and conversation per
		// second: about 10/s here, each delivered to the typer's partner.
		if got := rep.FramesByType["TYPING"]; got < 10 || got > 40 {
			t.Errorf("%d TYPING frames received for %d sent in %.1fs, want about one per typer per second", got, s.TypingSent, s.Seconds+s.WarmupSeconds)
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
