package main

import (
	"context"
	"errors"
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
	"inbox/node"
	"inbox/projections"
)

// replayCmd rebuilds the read model from stream sequence 1:
//
//	inbox replay [--data DIR] [--nats-url URL [--nats-creds FILE | --nats-nkey FILE]] [--out FILE] [--partition K]
//
// Without --out the new database replaces <data>/inbox.db, which requires
// inboxd to be stopped. With --partition only that partition's rows are
// rebuilt, in a copy of the live database.
func replayCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("inbox replay", flag.ContinueOnError)
	fs.SetOutput(stdout)
	cli.Describe(fs, "inbox replay [flags]", `
Rebuild the read model from stream sequence 1 of every partition. Without
--out the new database replaces <data>/inbox.db, which requires inboxd to be
stopped (replay refuses while inboxd holds <data>/inboxd.lock); with --out it
is written to a new file and inboxd may run. With --partition K only the rows
of partition K (its conversations; with K = 0 also profiles and jobs) are
rebuilt, from that partition's sequence 1, in a copy of the live database.
The number of partitions is the stream's. Undecodable events are counted as
skipped, never fatal.`,
		"inbox replay                       # rebuild ./data/inbox.db (inboxd stopped)",
		"inbox replay --out /tmp/inbox.db   # a copy, while inboxd runs",
		"inbox replay --partition 2         # rebuild partition 2's rows only",
		"inbox replay --nats-url nats://10.0.0.5:4222 --data /var/lib/inbox")
	var sf storeFlags
	sf.register(fs)
	out := fs.String("out", "", "write the rebuilt database to this new file instead of replacing <data>/inbox.db")
	partition := fs.Int("partition", -1, "rebuild only this partition's rows, in a copy of the live database (-1: every partition, from scratch)")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	live := filepath.Join(sf.dataDir, "inbox.db")
	lock := filepath.Join(sf.dataDir, "inboxd.lock")
	target := *out
	if target == "" {
		if projections.Locked(lock) {
			return fmt.Errorf("inboxd is running on %s (it holds %s): stop it first, or write elsewhere with --out", sf.dataDir, lock)
		}
		if _, err := private.Dir(sf.dataDir); err != nil {
			return fmt.Errorf("create data folder: %w", err)
		}
		target = fmt.Sprintf("%s.replay-%d", live, os.Getpid())
	}
	store, closeStore, err := sf.openStore(ctx, "inbox-replay")
	if err != nil {
		return err
	}
	defer closeStore()

	bar := newBar(stderr, "replay")
	var stats projections.Stats
	if *partition >= 0 {
		stats, err = rebuildPartition(ctx, store, live, target, *partition, bar.progress)
	} else {
		stats, err = projections.Rebuild(ctx, store, target, bar.progress)
	}
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
			return fmt.Errorf("inboxd started on %s during the replay: stop it and replay again", sf.dataDir)
		}
		if err := projections.Install(target, live); err != nil {
			os.Remove(target)
			return err
		}
		target = live
	}
	what := "partitions"
	if store.Partitions() == 1 {
		what = "sequence"
	}
	if *partition >= 0 {
		what = fmt.Sprintf("partition %d of %d; all partitions at", *partition, store.Partitions())
	}
	fmt.Fprintf(stdout, "rebuilt %s: %d events up to %s %s (%d skipped) in %s, %.0f events/s\n",
		target, stats.Events, what, stats.Applied, stats.Skipped, stats.Duration.Round(time.Millisecond),
		stats.Rate())
	return nil
}

// rebuildPartition rebuilds partition k's rows of the live database at
// live into target.
func rebuildPartition(ctx context.Context, store *eventstore.Store, live, target string, k int, progress func(done, total uint64)) (projections.Stats, error) {
	if _, err := os.Stat(live); err != nil {
		return projections.Stats{}, fmt.Errorf("replay of partition %d starts from the live read model: %w", k, err)
	}
	db, err := projections.Open(live)
	if err != nil {
		return projections.Stats{}, err
	}
	defer db.Close()
	return projections.RebuildPartition(ctx, store, db, target, k, progress)
}

// storeFlags are the flags of commands that read the stream.
type storeFlags struct {
	dataDir, natsURL string
	auth             eventstore.Auth
}

func (f *storeFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.dataDir, "data", node.DefaultDataDir, "data folder holding inbox.db and, with embedded NATS, the stream")
	fs.StringVar(&f.natsURL, "nats-url", "", "NATS server holding the INBOX stream (default: the embedded server of the inboxd running on --data, with the port and credentials it keeps there; else, inboxd stopped, the stream in <data>/nats, opened in-process)")
	fs.StringVar(&f.auth.CredsFile, "nats-creds", "", "with --nats-url: NATS user credentials file (JWT and nkey seed)")
	fs.StringVar(&f.auth.NkeyFile, "nats-nkey", "", "with --nats-url: NATS nkey seed file")
}

// openStore opens the INBOX stream: on --nats-url if given; else on the
// embedded server of the inboxd running on the data folder, as the service
// (its port and key are in the data folder); else, inboxd being stopped, on
// the data folder's own JetStream storage with an in-process nats-server.
func (f *storeFlags) openStore(ctx context.Context, name string) (*eventstore.Store, func(), error) {
	var (
		nc      *nats.Conn
		cleanup = func() {}
		err     error
	)
	natsDir := filepath.Join(f.dataDir, "nats")
	switch {
	case f.natsURL != "":
		nc, err = eventstore.Connect(f.natsURL, name, f.auth, nil)
	case f.auth != (eventstore.Auth{}):
		return nil, nil, errors.New("--nats-creds and --nats-nkey go with --nats-url")
	case projections.Locked(filepath.Join(f.dataDir, "inboxd.lock")):
		nc, err = connectRunning(f.dataDir, name)
	default:
		if _, serr := os.Stat(natsDir); serr != nil {
			return nil, nil, fmt.Errorf("no stream in %s and no inboxd runs on %s: pass --nats-url for an external NATS (%w)", natsDir, f.dataDir, serr)
		}
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
	// The streams say how many partitions they have (none yet: one).
	n, err := eventstore.Discover(ctx, nc)
	if err != nil {
		nc.Close()
		cleanup()
		return nil, nil, err
	}
	store, err := eventstore.Open(ctx, eventstore.Config{Conn: nc, Partitions: n})
	if err != nil {
		nc.Close()
		cleanup()
		return nil, nil, err
	}
	return store, func() { nc.Close(); cleanup() }, nil
}

// connectRunning connects to the embedded server of the inboxd running on
// dataDir as the service, at the port it wrote into its nats CLI context.
func connectRunning(dataDir, name string) (*nats.Conn, error) {
	url, err := eventstore.InspectURL(dataDir)
	if errors.Is(err, eventstore.ErrNoNATSPort) {
		return nil, fmt.Errorf("the inboxd running on %s has no NATS port of its own (--nats-listen \"\" or --nats-url): pass --nats-url, or stop it to read %s directly", dataDir, filepath.Join(dataDir, "nats"))
	}
	if err != nil {
		return nil, err
	}
	creds, err := eventstore.LoadCredentials(dataDir)
	if err != nil {
		return nil, err
	}
	return eventstore.Connect(url, name, eventstore.Auth{NkeyFile: creds.ServiceKey()}, nil)
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
