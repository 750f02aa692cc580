package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/schollz/progressbar/v3"

	"inbox/eventstore"
	"inbox/internal/cli"
	"inbox/internal/private"
	"inbox/projections"
)

// replayCmd rebuilds the read model from stream sequence 1:
//
//	inbox replay [--data DIR] [--nats-url URL] [--out FILE]
//
// Without --out the new database replaces <data>/inbox.db, which requires
// inboxd to be stopped.
func replayCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("inbox replay", flag.ContinueOnError)
	fs.SetOutput(stdout)
	cli.Describe(fs, "inbox replay [flags]", `
Rebuild the read model from stream sequence 1. Without --out the new database
replaces <data>/inbox.db, which requires inboxd to be stopped (replay refuses
while inboxd holds <data>/inboxd.lock); with --out it is written to a new file
and inboxd may run. Undecodable events are counted as skipped, never fatal.`,
		"inbox replay                       # rebuild ./data/inbox.db (inboxd stopped)",
		"inbox replay --out /tmp/inbox.db   # a copy, while inboxd runs",
		"inbox replay --nats-url nats://10.0.0.5:4222 --data /var/lib/inbox")
	dataDir, natsURL := storeFlags(fs)
	out := fs.String("out", "", "write the rebuilt database to this new file instead of replacing <data>/inbox.db")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	live := filepath.Join(*dataDir, "inbox.db")
	lock := filepath.Join(*dataDir, "inboxd.lock")
	target := *out
	if target == "" {
		if projections.Locked(lock) {
			return fmt.Errorf("inboxd is running on %s (it holds %s): stop it first, or write elsewhere with --out", *dataDir, lock)
		}
		if _, err := private.Dir(*dataDir); err != nil {
			return fmt.Errorf("create data folder: %w", err)
		}
		target = fmt.Sprintf("%s.replay-%d", live, os.Getpid())
	}
	store, closeStore, err := openStore(ctx, *dataDir, *natsURL, "inbox-replay")
	if err != nil {
		return err
	}
	defer closeStore()

	bar := newBar(stderr, "replay")
	stats, err := projections.Rebuild(ctx, store, target, bar.progress)
	if err == nil {
		bar.finish(&stats)
	} else {
		bar.finish(nil)
	}
	fmt.Fprintln(stderr)
	if err != nil {
		return err
	}
	if *out == "" {
		if projections.Locked(lock) {
			os.Remove(target)
			return fmt.Errorf("inboxd started on %s during the replay: stop it and replay again", *dataDir)
		}
		if err := projections.Install(target, live); err != nil {
			os.Remove(target)
			return err
		}
		target = live
	}
	fmt.Fprintf(stdout, "rebuilt %s: %d events up to sequence %d (%d skipped) in %s, %.0f events/s\n",
		target, stats.Events, stats.LastSeq, stats.Skipped, stats.Duration.Round(time.Millisecond),
		stats.Rate())
	return nil
}

// storeFlags are the flags of commands that read the stream.
func storeFlags(fs *flag.FlagSet) (dataDir, natsURL *string) {
	dataDir = fs.String("data", "./data", "data folder holding inbox.db and, with embedded NATS, the stream")
	natsURL = fs.String("nats-url", "", "NATS server holding the INBOX stream (default: inboxd's embedded server at nats://127.0.0.1:4222 while it runs, else the stream in <data>/nats, opened in-process)")
	return dataDir, natsURL
}

// openStore opens the INBOX stream: on url if given; else on a running
// inboxd's embedded server; else, inboxd being stopped, on the data folder's
// own JetStream storage with an in-process nats-server.
func openStore(ctx context.Context, dataDir, url, name string) (*eventstore.Store, func(), error) {
	var (
		nc      *nats.Conn
		cleanup = func() {}
		err     error
	)
	natsDir := filepath.Join(dataDir, "nats")
	_, statErr := os.Stat(natsDir)
	switch {
	case url != "":
		nc, err = eventstore.Connect(url, name, nil)
	case projections.Locked(filepath.Join(dataDir, "inboxd.lock")) || statErr != nil:
		nc, err = eventstore.Connect("nats://127.0.0.1:4222", name, nil)
	default:
		ns, rerr := eventstore.RunEmbedded(eventstore.EmbeddedConfig{Dir: natsDir, ServerName: name})
		if rerr != nil {
			return nil, nil, rerr
		}
		cleanup = ns.Shutdown
		nc, err = eventstore.ConnectEmbedded(ns, name)
	}
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	store, err := eventstore.Open(ctx, eventstore.Config{Conn: nc})
	if err != nil {
		nc.Close()
		cleanup()
		return nil, nil, err
	}
	return store, func() { nc.Close(); cleanup() }, nil
}

// rebuildBar shows a rebuild's progress on a terminal: events read of those
// expected, elapsed time and ETA, and the rate the summary line reports,
// events read over the time since the rebuild began. (The bar's own rate
// counted from its first report, after the first batch, so it disagreed.)
type rebuildBar struct {
	bar   *progressbar.ProgressBar
	what  string
	start time.Time
}

// newBar starts a bar on w; call it right before the rebuild. Its maximum is
// set by the first progress report.
func newBar(w io.Writer, what string) *rebuildBar {
	b := &rebuildBar{what: what, start: time.Now()}
	b.bar = progressbar.NewOptions64(-1,
		progressbar.OptionSetDescription(what),
		progressbar.OptionSetWriter(w),
		progressbar.OptionShowCount(),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionThrottle(100*time.Millisecond),
	)
	b.bar.StartWithoutRender()
	return b
}

// progress is the rebuild's progress callback.
func (b *rebuildBar) progress(done, total uint64) {
	if total = max(total, done); b.bar.GetMax64() != int64(total) {
		b.bar.ChangeMax64(int64(total))
	}
	b.bar.Describe(b.label(float64(done) / time.Since(b.start).Seconds()))
	b.bar.Set64(int64(done))
}

// finish fills the bar. Given the rebuild's stats, it shows their count and
// rate, as the summary line does.
func (b *rebuildBar) finish(stats *projections.Stats) {
	if stats != nil && stats.Events > 0 {
		b.bar.ChangeMax64(int64(stats.Events))
		b.bar.Describe(b.label(stats.Rate()))
	}
	b.bar.Finish()
}

func (b *rebuildBar) label(rate float64) string {
	return fmt.Sprintf("%s (%.0f events/s)", b.what, rate)
}
