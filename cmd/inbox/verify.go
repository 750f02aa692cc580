package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

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
only partition K is rebuilt and only its rows are compared.`,
		"inbox verify                       # ./data/inbox.db against the stream",
		"inbox verify --partition 1         # partition 1's rows only",
		"inbox verify --data /var/lib/inbox --nats-url nats://10.0.0.5:4222")
	var sf storeFlags
	sf.register(fs)
	partition := fs.Int("partition", -1, "rebuild and compare only this partition (-1: every partition)")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	live := filepath.Join(sf.dataDir, "inbox.db")
	if _, err := os.Stat(live); err != nil {
		return fmt.Errorf("live read model: %w", err)
	}
	db, err := projections.Open(live)
	if err != nil {
		return err
	}
	defer db.Close()
	store, closeStore, err := sf.openStore(ctx, "inbox-verify")
	if err != nil {
		return err
	}
	defer closeStore()
	scratch, err := os.MkdirTemp("", "inbox-verify-*")
	if err != nil {
		return fmt.Errorf("create scratch folder: %w", err)
	}
	defer os.RemoveAll(scratch)

	bar := newBar(stderr, "verify")
	var opts []projections.Option
	what := live
	if *partition >= 0 {
		opts = append(opts, projections.Only(*partition))
		what = fmt.Sprintf("partition %d of %s", *partition, live)
	}
	diffs, err := projections.Verify(ctx, store, db, filepath.Join(scratch, "inbox.db"), bar.progress, opts...)
	bar.finish(nil)
	fmt.Fprintln(stderr)
	if err != nil {
		return err
	}
	for _, d := range diffs {
		fmt.Fprintln(stdout, d)
	}
	if len(diffs) > 0 {
		return fmt.Errorf("%w (%s)", errDifferences, what)
	}
	fmt.Fprintf(stdout, "%s matches a rebuild from the stream\n", what)
	return nil
}
