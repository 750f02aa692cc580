package projections

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"inbox/eventstore"
)

// rebuildBatch is the number of events per transaction when rebuilding.
const rebuildBatch = 32 * 1024

// Stats describes a rebuild.
type Stats struct {
	Events   uint64 // events read from the stream
	Skipped  uint64 // undecodable events skipped
	LastSeq  uint64 // the rebuilt database's applied sequence
	Duration time.Duration
}

// Rate is the events read per second of Duration.
func (s Stats) Rate() float64 {
	if s.Duration <= 0 {
		return 0
	}
	return float64(s.Events) / s.Duration.Seconds()
}

// Rebuild builds a fresh projection database at outPath (which must not
// exist) from stream sequence 1 up to the stream's current last sequence.
// progress, if set, is called after each batch with the events read so far
// (Stats.Events when it is done) and the events the stream held up to there
// when the rebuild began (sequences minus deleted ones: expired typing events
// leave gaps, and more may expire while it runs).
func Rebuild(ctx context.Context, store *eventstore.Store, outPath string, progress func(done, total uint64)) (Stats, error) {
	start := time.Now()
	last, err := store.LastSeq(ctx)
	if err != nil {
		return Stats{}, err
	}
	stats, err := RebuildTo(ctx, store, outPath, last, progress)
	stats.Duration = time.Since(start)
	return stats, err
}

// RebuildTo is Rebuild up to sequence upTo: verify compares a rebuild with a
// live database at the live database's applied sequence.
func RebuildTo(ctx context.Context, store *eventstore.Store, outPath string, upTo uint64, progress func(done, total uint64)) (stats Stats, err error) {
	start := time.Now()
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
	for _, pragma := range []string{"PRAGMA cache_size = -262144", "PRAGMA locking_mode = EXCLUSIVE", "PRAGMA temp_store = MEMORY"} {
		if _, err := db.w.ExecContext(ctx, pragma); err != nil {
			return Stats{}, fmt.Errorf("rebuild into %s: %s: %w", outPath, pragma, err)
		}
	}
	if err := load(ctx, store, db, 1, upTo, progress, &stats); err != nil {
		return Stats{}, fmt.Errorf("rebuild into %s: %w", outPath, err)
	}
	// Deleted events (expired typing) at the end of the range were read too:
	// the rebuilt database has seen everything up to upTo.
	if _, err := db.w.ExecContext(ctx, `UPDATE meta SET applied_seq = max(applied_seq, ?) WHERE id = 1`, upTo); err != nil {
		return Stats{}, fmt.Errorf("rebuild into %s: store applied sequence: %w", outPath, err)
	}
	for _, pragma := range []string{"PRAGMA locking_mode = NORMAL", "PRAGMA journal_mode = WAL"} {
		if _, err := db.w.ExecContext(ctx, pragma); err != nil {
			return Stats{}, fmt.Errorf("rebuild into %s: %s: %w", outPath, pragma, err)
		}
	}
	stats.Skipped = db.skipped.Load()
	stats.LastSeq = max(db.applied.Load(), upTo)
	stats.Duration = time.Since(start)
	return stats, nil
}

// load reads the stream from..upTo on one goroutine (fetch and decode) and
// applies it on this one, one transaction per rebuildBatch events.
func load(ctx context.Context, store *eventstore.Store, db *DB, from, upTo uint64, progress func(done, total uint64), stats *Stats) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var total uint64
	if progress != nil {
		var err error
		if total, err = stored(ctx, store, from, upTo); err != nil {
			return err
		}
	}
	batches := make(chan []eventstore.Stored, 2)
	free := make(chan []eventstore.Stored, 3)
	var readErr error
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(batches)
		send := func(b []eventstore.Stored) error {
			select {
			case batches <- b:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		cur := make([]eventstore.Stored, 0, rebuildBatch)
		readErr = store.Read(ctx, from, upTo, nil, func(st eventstore.Stored) error {
			cur = append(cur, st)
			if len(cur) < rebuildBatch {
				return nil
			}
			if err := send(cur); err != nil {
				return err
			}
			select {
			case cur = <-free:
				cur = cur[:0]
			default:
				cur = make([]eventstore.Stored, 0, rebuildBatch)
			}
			return nil
		})
		if readErr == nil && len(cur) > 0 {
			readErr = send(cur)
		}
	})
	defer wg.Wait()

	apl := newApplier(db, slog.Default().With("component", "rebuild"))
	for b := range batches {
		if _, err := apl.apply(ctx, b); err != nil {
			cancel()
			for range batches {
			}
			return err
		}
		stats.Events += uint64(len(b))
		if progress != nil {
			progress(stats.Events, total)
		}
		clear(b) // drop the decoded events before the slice is reused
		select {
		case free <- b:
		default:
		}
	}
	wg.Wait()
	return readErr
}

// stored is at most the number of events stored from..upTo: the stream's
// message count, or the range's length if that is less. It is exact when the
// range covers the whole stream.
func stored(ctx context.Context, store *eventstore.Store, from, upTo uint64) (uint64, error) {
	info, err := store.Stream().Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("stream %s info: %w", eventstore.StreamName, err)
	}
	st := info.State
	from = max(from, st.FirstSeq)
	if st.Msgs == 0 || upTo < from {
		return 0, nil
	}
	return min(st.Msgs, upTo-from+1), nil
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
// must not exist; it is removed afterwards) up to live's applied sequence and
// returns Diff(live, rebuilt). A live database that moves on meanwhile (a
// running inboxd) is followed: the rebuilt one catches up before comparing.
func Verify(ctx context.Context, store *eventstore.Store, live *DB, scratch string, progress func(done, total uint64)) ([]string, error) {
	applied, err := live.AppliedSeq(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := RebuildTo(ctx, store, scratch, applied, progress); err != nil {
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
		if err := load(ctx, store, fresh, fresh.applied.Load()+1, applied, nil, &stats); err != nil {
			return nil, fmt.Errorf("verify: catch up to %d: %w", applied, err)
		}
		diffs, err := Diff(ctx, live, fresh)
		if err != nil {
			return nil, err
		}
		now, err := live.AppliedSeq(ctx)
		if err != nil {
			return nil, err
		}
		if now == applied {
			return diffs, nil
		}
		applied = now
	}
}
