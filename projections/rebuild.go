package projections

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"time"

	"inbox/eventstore"
)

// rebuildBatch is the number of events per transaction when rebuilding.
const rebuildBatch = 32 * 1024

// Stats describes a rebuild.
type Stats struct {
	Events   uint64            // events read from the stream
	Skipped  uint64            // undecodable events skipped
	Applied  eventstore.Cursor // the rebuilt database's applied sequences
	Duration time.Duration
}

// Rate is the events read per second of Duration.
func (s Stats) Rate() float64 {
	if s.Duration <= 0 {
		return 0
	}
	return float64(s.Events) / s.Duration.Seconds()
}

// Option narrows a rebuild or a verification.
type Option func(*options)

type options struct {
	only []int // partitions (nil: all)
}

// Only limits a rebuild or a verification to partitions ks.
func Only(ks ...int) Option { return func(o *options) { o.only = ks } }

// partitions returns the partitions o selects among n, refusing one that is
// not there.
func (o *options) partitions(n int) ([]int, error) {
	if o.only == nil {
		ks := make([]int, n)
		for k := range ks {
			ks[k] = k
		}
		return ks, nil
	}
	for _, k := range o.only {
		if k < 0 || k >= n {
			return nil, fmt.Errorf("no partition %d: the stream has %d (0 to %d)", k, n, n-1)
		}
	}
	return o.only, nil
}

func buildOptions(opts []Option) options {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// Rebuild builds a fresh projection database at outPath (which must not
// exist) from stream sequence 1 of every partition (or those of Only) up to
// its current last sequence. progress, if set, is called after each batch
// with the events read so far (Stats.Events when it is done) and the events
// the streams held up to there when the rebuild began (sequences minus
// deleted ones: expired typing events leave gaps, and more may expire while
// it runs).
func Rebuild(ctx context.Context, store *eventstore.Store, outPath string, progress func(done, total uint64), opts ...Option) (Stats, error) {
	start := time.Now()
	last, err := store.Last(ctx)
	if err != nil {
		return Stats{}, err
	}
	stats, err := RebuildTo(ctx, store, outPath, last, progress, opts...)
	stats.Duration = time.Since(start)
	return stats, err
}

// RebuildTo is Rebuild up to the sequences of upTo: verify compares a
// rebuild with a live database at the live database's applied sequences.
// A partition Only leaves out stays at 0.
func RebuildTo(ctx context.Context, store *eventstore.Store, outPath string, upTo eventstore.Cursor, progress func(done, total uint64), opts ...Option) (stats Stats, err error) {
	start := time.Now()
	o := buildOptions(opts)
	ks, err := o.partitions(store.Partitions())
	if err != nil {
		return Stats{}, fmt.Errorf("rebuild into %s: %w", outPath, err)
	}
	if _, err := os.Stat(outPath); !errors.Is(err, os.ErrNotExist) {
		return Stats{}, fmt.Errorf("rebuild into %s: file exists or cannot be checked (%v)", outPath, err)
	}
	// A fresh file needs no journal: if the rebuild fails it is deleted.
	db, err := open(outPath, "OFF", "OFF")
	if err != nil {
		return Stats{}, err
	}
	defer func() {
		if cerr := db.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close rebuilt database %s: %w", outPath, cerr)
		}
		if err != nil {
			removeDB(outPath)
		}
	}()
	if err := db.Bind(store.Partitions()); err != nil {
		return Stats{}, err
	}
	for _, pragma := range []string{"PRAGMA cache_size = -262144", "PRAGMA locking_mode = EXCLUSIVE", "PRAGMA temp_store = MEMORY"} {
		if _, err := db.w.ExecContext(ctx, pragma); err != nil {
			return Stats{}, fmt.Errorf("rebuild into %s: %s: %w", outPath, pragma, err)
		}
	}
	if err := load(ctx, store, db, ranges(ks, nil, upTo), progress, &stats); err != nil {
		return Stats{}, fmt.Errorf("rebuild into %s: %w", outPath, err)
	}
	if err := finish(ctx, db, ks, upTo); err != nil {
		return Stats{}, fmt.Errorf("rebuild into %s: %w", outPath, err)
	}
	for _, pragma := range []string{"PRAGMA locking_mode = NORMAL", "PRAGMA journal_mode = WAL"} {
		if _, err := db.w.ExecContext(ctx, pragma); err != nil {
			return Stats{}, fmt.Errorf("rebuild into %s: %s: %w", outPath, pragma, err)
		}
	}
	stats.Skipped = db.skipped.Load()
	stats.Applied = db.Applied()
	stats.Duration = time.Since(start)
	return stats, nil
}

// RebuildPartition writes to outPath (which must not exist) a copy of live
// with partition k's rows rebuilt from stream sequence 1 up to the
// partition's current last sequence; the other partitions' rows are live's
// as they were. Stats counts partition k's events.
func RebuildPartition(ctx context.Context, store *eventstore.Store, live *DB, outPath string, k int, progress func(done, total uint64)) (stats Stats, err error) {
	start := time.Now()
	if k < 0 || k >= store.Partitions() {
		return Stats{}, fmt.Errorf("rebuild partition %d: the stream has %d (0 to %d)", k, store.Partitions(), store.Partitions()-1)
	}
	if err := live.Bind(store.Partitions()); err != nil {
		return Stats{}, err
	}
	if _, err := os.Stat(outPath); !errors.Is(err, os.ErrNotExist) {
		return Stats{}, fmt.Errorf("rebuild into %s: file exists or cannot be checked (%v)", outPath, err)
	}
	last, err := store.Last(ctx)
	if err != nil {
		return Stats{}, err
	}
	if err := ownerOnly(outPath); err != nil { // created 0600, for VACUUM INTO to fill
		return Stats{}, fmt.Errorf("rebuild into %s: %w", outPath, err)
	}
	os.Remove(outPath)
	if _, err := live.w.ExecContext(ctx, `VACUUM INTO ?`, outPath); err != nil {
		removeDB(outPath)
		return Stats{}, fmt.Errorf("copy %s to %s: %w", live.path, outPath, err)
	}
	db, err := Open(outPath)
	if err != nil {
		removeDB(outPath)
		return Stats{}, err
	}
	defer func() {
		if cerr := db.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close rebuilt database %s: %w", outPath, cerr)
		}
		if err != nil {
			removeDB(outPath)
		}
	}()
	if err := db.clearPartition(ctx, k); err != nil {
		return Stats{}, fmt.Errorf("rebuild into %s: %w", outPath, err)
	}
	if err := load(ctx, store, db, ranges([]int{k}, nil, last), progress, &stats); err != nil {
		return Stats{}, fmt.Errorf("rebuild into %s: %w", outPath, err)
	}
	if err := finish(ctx, db, []int{k}, last); err != nil {
		return Stats{}, fmt.Errorf("rebuild into %s: %w", outPath, err)
	}
	if _, err := db.w.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
		return Stats{}, fmt.Errorf("rebuild into %s: checkpoint: %w", outPath, err)
	}
	stats.Skipped = db.skipped.Load()
	stats.Applied = db.Applied()
	stats.Duration = time.Since(start)
	return stats, nil
}

// finish moves partitions ks to upTo: deleted events (expired typing) at the
// end of a range were read too, so the database has seen everything up to it.
func finish(ctx context.Context, db *DB, ks []int, upTo eventstore.Cursor) error {
	for _, k := range ks {
		if _, err := db.w.ExecContext(ctx, `UPDATE applied SET seq = max(seq, ?) WHERE k = ?`, upTo[k], k); err != nil {
			return fmt.Errorf("store applied sequence of partition %d: %w", k, err)
		}
		if upTo[k] > db.applied[k].Load() {
			db.applied[k].Store(upTo[k])
		}
	}
	return nil
}

// span is the part of partition k a load reads: sequences from..to.
type span struct {
	k        int
	from, to uint64
}

// ranges are the spans of partitions ks after from (nil: from the start) up
// to upTo.
func ranges(ks []int, from, upTo eventstore.Cursor) []span {
	var out []span
	for _, k := range ks {
		sp := span{k: k, from: 1, to: upTo[k]}
		if from != nil {
			sp.from = from[k] + 1
		}
		if sp.from <= sp.to {
			out = append(out, sp)
		}
	}
	return out
}

// load reads spans, one partition after another, on one goroutine (fetch
// and decode) and applies them on this one, one transaction per
// rebuildBatch events, with one applier per partition.
func load(ctx context.Context, store *eventstore.Store, db *DB, spans []span, progress func(done, total uint64), stats *Stats) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var total uint64
	if progress != nil {
		for _, sp := range spans {
			n, err := stored(ctx, store, sp)
			if err != nil {
				return err
			}
			total += n
		}
	}
	type batch struct {
		k      int
		events []eventstore.Stored
	}
	batches := make(chan batch, 2)
	free := make(chan []eventstore.Stored, 3)
	var readErr error
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(batches)
		send := func(b batch) error {
			select {
			case batches <- b:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		next := func() []eventstore.Stored {
			select {
			case cur := <-free:
				return cur[:0]
			default:
				return make([]eventstore.Stored, 0, rebuildBatch)
			}
		}
		for _, sp := range spans {
			cur := next()
			readErr = store.Read(ctx, sp.k, sp.from, sp.to, nil, func(st eventstore.Stored) error {
				cur = append(cur, st)
				if len(cur) < rebuildBatch {
					return nil
				}
				if err := send(batch{sp.k, cur}); err != nil {
					return err
				}
				cur = next()
				return nil
			})
			if readErr == nil && len(cur) > 0 {
				readErr = send(batch{sp.k, cur})
			}
			if readErr != nil {
				return
			}
		}
	})
	defer wg.Wait()

	log := slog.Default().With("component", "rebuild")
	apls := make(map[int]*applier)
	for b := range batches {
		apl := apls[b.k]
		if apl == nil {
			apl = newApplier(db, b.k, log)
			apls[b.k] = apl
		}
		if _, err := apl.apply(ctx, b.events); err != nil {
			cancel()
			for range batches {
			}
			return err
		}
		stats.Events += uint64(len(b.events))
		if progress != nil {
			progress(stats.Events, total)
		}
		clear(b.events) // drop the decoded events before the slice is reused
		select {
		case free <- b.events:
		default:
		}
	}
	wg.Wait()
	return readErr
}

// stored is at most the number of events stored in sp: the partition's
// message count, or the span's length if that is less. It is exact when
// the span covers the whole stream.
func stored(ctx context.Context, store *eventstore.Store, sp span) (uint64, error) {
	info, err := store.Streams()[sp.k].Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("stream %s info: %w", store.StreamName(sp.k), err)
	}
	st := info.State
	from := max(sp.from, st.FirstSeq)
	if st.Msgs == 0 || sp.to < from {
		return 0, nil
	}
	return min(st.Msgs, sp.to-from+1), nil
}

// removeDB deletes a database file with its WAL and shared-memory files.
func removeDB(path string) {
	for _, p := range []string{path, path + "-wal", path + "-shm", path + "-journal"} {
		os.Remove(p)
	}
}

// Install moves a rebuilt database over path: the old database's WAL and
// shared-memory files go first (they must never be applied to the new file),
// then a rename replaces it atomically. Nothing may have path open.
func Install(rebuilt, path string) error {
	for _, p := range []string{path + "-wal", path + "-shm"} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("install rebuilt database: %w", err)
		}
	}
	if err := os.Rename(rebuilt, path); err != nil {
		return fmt.Errorf("install rebuilt database: %w", err)
	}
	return nil
}

// Verify rebuilds the projection from the stream into scratch (a path that
// must not exist; it is removed afterwards) up to live's applied sequences
// and returns Diff(live, rebuilt). A live database that moves on meanwhile
// (a running inboxd) is followed: the rebuilt one catches up before
// comparing. With Only, only those partitions are rebuilt and compared.
func Verify(ctx context.Context, store *eventstore.Store, live *DB, scratch string, progress func(done, total uint64), opts ...Option) ([]string, error) {
	o := buildOptions(opts)
	ks, err := o.partitions(store.Partitions())
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	if err := live.Bind(store.Partitions()); err != nil {
		return nil, err
	}
	applied, err := live.AppliedSeqs(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := RebuildTo(ctx, store, scratch, applied, progress, opts...); err != nil {
		return nil, err
	}
	defer removeDB(scratch)
	fresh, err := Open(scratch)
	if err != nil {
		return nil, err
	}
	defer fresh.Close()
	for {
		var stats Stats
		if err := load(ctx, store, fresh, ranges(ks, fresh.Applied(), applied), nil, &stats); err != nil {
			return nil, fmt.Errorf("verify: catch up to %s: %w", applied, err)
		}
		if err := finish(ctx, fresh, ks, applied); err != nil {
			return nil, fmt.Errorf("verify: catch up to %s: %w", applied, err)
		}
		diffs, err := Diff(ctx, live, fresh, opts...)
		if err != nil {
			return nil, err
		}
		now, err := live.AppliedSeqs(ctx)
		if err != nil {
			return nil, err
		}
		if slices.Equal(now, applied) {
			return diffs, nil
		}
		applied = now
	}
}
