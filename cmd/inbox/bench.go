package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime/debug"
	"strconv"

	"inbox/bench"
	"inbox/internal/cli"
	"inbox/node"
)

// defaultGCPercent is the load generator's own GOGC. Its collections delay
// its sends and the reading of deliveries, which a run counts as server
// latency: at 2,000 msg/s to 10,000 users, 4 runs each, the generator's send
// lag p99 was 9.5-18.8 ms with the runtime's 100 and 5.7-6.3 ms with 400, and
// the measured delivery p99 45.6-59.7 against 35.1-45.6 ms, for about the
// same generator CPU (20.5-21.8% of the machine, 20.8-21.5% with 400).
const defaultGCPercent = 400

// benchCmd load-tests a running inboxd over loopback:
//
//	inbox bench --mode fanout --users 10000 --msg-rate 5000 --duration 30s
//	inbox bench --mode fanout --ramp auto
//	inbox bench --mode fanout --users 10000 --msg-rate 5000 --typing-sockets 5000
//	inbox bench --mode idle --users 19000 --convs-per-user 10 --hold 30s
//
// The table goes to stderr, one JSON line with every figure to stdout.
func benchCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("inbox bench", flag.ContinueOnError)
	fs.SetOutput(stdout)
	var cfg bench.Config
	var sources, ramp string
	var quiet bool
	fs.StringVar(&cfg.URL, "url", bench.DefaultURL, "inboxd base URL; loopback only (127.0.0.0/8, ::1, localhost)")
	fs.StringVar(&cfg.Mode, "mode", bench.ModeFanout, "idle (memory per socket), fanout (throughput, latency, loss) or overload (more than the server takes, then a drop: accepted, shed, p99 of accepted, recovery)")
	fs.IntVar(&cfg.Users, "users", 0, "users, one socket each (default "+strconv.Itoa(bench.DefaultUsers)+", or conversations×conv-size in fanout)")
	fs.IntVar(&cfg.ConvsPerUser, "convs-per-user", bench.DefaultConvsPerUser, "idle: conversations each user belongs to (0: seed none)")
	fs.IntVar(&cfg.ConvSize, "conv-size", bench.DefaultConvSize, "members per seeded conversation (2..8)")
	fs.IntVar(&cfg.Conversations, "conversations", 0, "fanout: conversations (default users/conv-size)")
	fs.Int64Var(&cfg.IDBase, "id-base", 0, "first conversation id (0: the server assigns ids)")
	fs.StringVar(&cfg.UserPrefix, "user-prefix", "", "user id prefix (default bench<time>, new each run)")
	fs.BoolVar(&cfg.Profiles, "profiles", false, "also set every user's profile through the service API")
	fs.Float64Var(&cfg.Rate, "msg-rate", bench.DefaultRate, "fanout: messages per second, all senders together")
	fs.StringVar(&ramp, "ramp", "", `fanout: rates to climb, e.g. "2k,5k,7.5k,10k", or "auto"; reports the highest with p99 <= --ramp-p99 and no loss`)
	fs.DurationVar(&cfg.RampP99, "ramp-p99", bench.DefaultRampP99, "fanout: p99 latency bound a ramp step must meet")
	fs.DurationVar(&cfg.Duration, "duration", bench.DefaultDuration, "fanout: measured sending time per rate")
	fs.DurationVar(&cfg.Warmup, "warmup", bench.DefaultWarmup, "fanout: sending time before measuring, per rate")
	fs.DurationVar(&cfg.Drain, "drain", bench.DefaultDrain, "fanout: longest wait for outstanding deliveries after sending")
	fs.Float64Var(&cfg.RecoverRate, "recover-rate", 0, "overload: messages per second right after the overload (default a quarter of --msg-rate)")
	fs.DurationVar(&cfg.RecoverAfter, "recover-after", bench.DefaultRecoverAfter, "overload: time after the drop before the recovery is measured")
	fs.DurationVar(&cfg.RecoverFor, "recover-for", bench.DefaultRecoverFor, "overload: measured recovery time; its p99 must be within --ramp-p99")
	fs.DurationVar(&cfg.OverloadP99, "overload-p99", bench.DefaultOverloadP99, "overload: p99 bound of the accepted messages")
	fs.DurationVar(&cfg.FeedLagBound, "feed-lag-bound", bench.DefaultFeedLagBound, "overload: bound of the server's feed lag (inbox_feed_lag_seconds, sampled every 250 ms)")
	fs.IntVar(&cfg.TypingSockets, "typing-sockets", 0, "fanout: this many of the users each keep sending TYPING starts (a typing storm) while messages are measured")
	fs.DurationVar(&cfg.TypingEvery, "typing-every", bench.DefaultTypingEvery, "fanout: how often each storming socket sends a TYPING start")
	fs.DurationVar(&cfg.Settle, "settle", bench.DefaultSettle, "wait after connecting before measuring")
	fs.DurationVar(&cfg.Hold, "hold", 0, "idle: keep the sockets open this long after measuring")
	fs.StringVar(&cfg.AdminToken, "admin-token", "", "service API token (default: the data folder's development token)")
	fs.StringVar(&cfg.JWTSecret, "jwt-secret", "", "HS256 secret to mint user tokens (default: the data folder's development secret)")
	fs.StringVar(&cfg.JWTIssuer, "jwt-issuer", "", "iss of the minted user tokens, when inboxd requires one")
	fs.StringVar(&cfg.JWTAudience, "jwt-audience", "", "aud of the minted user tokens, when inboxd requires one")
	fs.StringVar(&cfg.DataDir, "data", node.DefaultDataDir, "data folder holding dev-secrets.json")
	fs.StringVar(&sources, "source-addrs", "", "loopback source addresses to spread sockets over (default 127.0.0.2-127.0.0.9)")
	fs.IntVar(&cfg.ConnectConcurrency, "connect-concurrency", bench.DefaultConnectConcurrency, "sockets opened at once")
	fs.IntVar(&cfg.SeedConcurrency, "seed-concurrency", bench.DefaultSeedConcurrency, "service API requests at once while seeding")
	fs.DurationVar(&cfg.DialTimeout, "dial-timeout", bench.DefaultDialTimeout, "timeout of one socket open")
	fs.IntVar(&cfg.ServerPID, "server-pid", 0, "idle: also read the server's VmRSS from /proc/<pid>/status")
	fs.Uint64Var(&cfg.Seed, "seed", 0, "random seed (0: time-based)")
	fs.BoolVar(&quiet, "quiet", false, "no progress bars or table: only the JSON line")
	gcPercent := fs.Int("gc-percent", defaultGCPercent, "the load generator's own garbage collection target (as GOGC; -1: leave it to GOGC): its collections delay its sends and reads, which count as server latency")
	cli.Describe(fs, "inbox bench [flags]", `
Load-test a running inboxd over loopback: --mode idle opens many quiet sockets
and measures memory per socket; --mode fanout sends messages between seeded
conversation members and measures delivery latency and loss; --mode
overload offers more than the server can take for --duration, then drops to
--recover-rate, and reports what was accepted and shed, the p99 of what was
accepted, the server's feed lag and the recovery. It seeds users
and conversations through the service API. Prints a table on stderr and one
JSON line with every figure on stdout.`,
		"inbox bench --mode fanout --users 10000 --msg-rate 5000 --duration 30s",
		"inbox bench --mode fanout --ramp auto",
		"inbox bench --mode fanout --users 10000 --msg-rate 5000 --typing-sockets 5000",
		"inbox bench --mode overload --users 10000 --msg-rate 10000 --duration 30s",
		"inbox bench --mode idle --users 19000 --convs-per-user 10 --hold 30s")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *gcPercent >= 0 {
		defer debug.SetGCPercent(debug.SetGCPercent(*gcPercent))
	}
	var err error
	if cfg.Ramp, err = bench.ParseRamp(ramp); err != nil {
		return err
	}
	if sources != "" {
		if cfg.SourceAddrs, err = bench.ParseSourceAddrs(sources); err != nil {
			return err
		}
	}
	if !quiet {
		cfg.Log, cfg.Progress = stderr, true
	}
	rep, err := bench.Run(ctx, cfg)
	if err != nil {
		return err
	}
	if !quiet {
		fmt.Fprintln(stderr)
		if err := rep.WriteTable(stderr); err != nil {
			return err
		}
	}
	if err := rep.WriteJSON(stdout); err != nil {
		return err
	}
	if ctx.Err() != nil {
		return errors.New("interrupted")
	}
	return nil
}
