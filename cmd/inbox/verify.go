package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"inbox/eventstore"
	"inbox/internal/cli"
	"inbox/projections"
)

// errDifferences is returned by verify when the databases differ.
var errDifferences = errors.New("the live read model differs from a rebuild")

// verifyCmd rebuilds the read model into a temporary file and compares it
// with the live one, table by table:
//
//	inbox verify [--data DIR] [--nats-url URL [--nats-creds FILE | --nats-nkey FILE]] [--partition K]
//
// It prints every difference and fails when there is any.
func verifyCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("inbox verify", flag.ContinueOnError)
	fs.SetOutput(stdout)
	cli.Describe(fs, "inbox verify [flags]", `
Rebuild the read model from the stream into a temporary file, up to the live
read model's applied sequences, and compare the two table by table. It
prints every difference and fails when there is any. inboxd may keep running:
the rebuild follows the live database while it moves on. With --partition K
only partition K is rebuilt and only its rows are compared. In the data
folder of a projector (inboxd --role projector), each partition's file
(inbox-p<k>.db) is compared on its partition.`,
		"inbox verify                       # ./data/inbox.db against the stream",
		"inbox verify --partition 1         # partition 1's rows only",
		"inbox verify --data /var/lib/inbox --nats-url nats://10.0.0.5:4222")
	var sf storeFlags
	sf.register(fs)
	partition := fs.Int("partition", -1, "rebuild and compare only this partition (-1: every partition)")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	targets, err := liveModels(sf.dataDir, *partition)
	if err != nil {
		return err
	}
	store, closeStore, err := sf.openStore(ctx, "inbox-verify")
	if err != nil {
		return err
	}
	defer closeStore()
	var differ []string
	for _, tg := range targets {
		same, err := verifyOne(ctx, store, tg, stdout, stderr)
		if err != nil {
			return err
		}
		if !same {
			differ = append(differ, tg.what)
		}
	}
	if len(differ) > 0 {
		return fmt.Errorf("%w (%s)", errDifferences, strings.Join(differ, "; "))
	}
	return nil
}

// liveModel is a live read model to verify: a file, and the partition of
// it to compare (-1: every one).
type liveModel struct {
	path      string
	partition int
	what      string
}

// liveModels are the read models of the data folder dir: inbox.db (of
// inboxd --role all), or the per-partition files of a projector
// (inbox-p<k>.db, each compared on its partition). partition, if not -1,
// picks one partition.
func liveModels(dir string, partition int) ([]liveModel, error) {
	live := filepath.Join(dir, "inbox.db")
	if _, err := os.Stat(live); err == nil {
		what := live
		if partition >= 0 {
			what = fmt.Sprintf("partition %d of %s", partition, live)
		}
		return []liveModel{{path: live, partition: partition, what: what}}, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("live read model: %w", err)
	}
	files, err := filepath.Glob(filepath.Join(dir, "inbox-p*.db"))
	if err != nil {
		return nil, err
	}
	var out []liveModel
	for _, f := range files {
		k, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(filepath.Base(f), "inbox-p"), ".db"))
		if err != nil || (partition >= 0 && k != partition) {
			continue
		}
		out = append(out, liveModel{path: f, partition: k, what: fmt.Sprintf("partition %d of %s", k, f)})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("live read model: no %s, and no inbox-p<k>.db of a projector in %s", live, dir)
	}
	return out, nil
}

// verifyOne compares one live read model with a rebuild; it prints the
// differences and reports whether there were none.
func verifyOne(ctx context.Context, store *eventstore.Store, tg liveModel, stdout, stderr io.Writer) (bool, error) {
	db, err := projections.Open(tg.path)
	if err != nil {
		return false, err
	}
	defer db.Close()
	scratch, err := os.MkdirTemp("", "inbox-verify-*")
	if err != nil {
		return false, fmt.Errorf("create scratch folder: %w", err)
	}
	defer os.RemoveAll(scratch)
	bar := newBar(stderr, "verify")
	var opts []projections.Option
	if tg.partition >= 0 {
		opts = append(opts, projections.Only(tg.partition))
	}
	diffs, err := projections.Verify(ctx, store, db, filepath.Join(scratch, "inbox.db"), bar.progress, opts...)
	bar.finish(nil)
	fmt.Fprintln(stderr)
	if err != nil {
		return false, err
	}
	for _, d := range diffs {
		fmt.Fprintln(stdout, d)
	}
	if len(diffs) == 0 {
		fmt.Fprintf(stdout, "%s matches a rebuild from the stream\n", tg.what)
	}
	return len(diffs) == 0, nil
}
