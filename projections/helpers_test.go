package projections

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"inbox/eventstore"
	"inbox/internal/testnats"
)

func TestMain(m *testing.M) {
	// Rebuild logs skipped events through the default logger.
	slog.SetDefault(slog.New(slog.DiscardHandler))
	os.Exit(m.Run())
}

type env struct {
	nc    *nats.Conn
	store *eventstore.Store
}

func newEnv(t testing.TB) *env { return newEnvN(t, 1) }

// newEnvN is newEnv with a stream of n partitions.
func newEnvN(t testing.TB, n int) *env {
	t.Helper()
	s := testnats.Server(t)
	store := testnats.StoreWith(t, s, eventstore.Config{Partitions: n})
	return &env{nc: store.Conn(), store: store}
}

func openDB(t testing.TB, name string) *DB {
	t.Helper()
	db, err := Open(filepath.Join(t.TempDir(), name))
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

// startProjector runs p until the returned stop is called (also at cleanup)
// and reports Run's error.
func startProjector(t testing.TB, p *Projector) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("projector run: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

func (e *env) append(t testing.TB, ev eventstore.Event) uint64 {
	t.Helper()
	seq, err := e.store.Append(context.Background(), ev)
	if err != nil {
		t.Fatalf("append %s: %v", ev.Subject(), err)
	}
	return seq
}

func (e *env) last(t testing.TB) eventstore.Cursor {
	t.Helper()
	c, err := e.store.Last(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// lastSeq is the last sequence of a one-partition stream.
func (e *env) lastSeq(t testing.TB) uint64 {
	t.Helper()
	c := e.last(t)
	if len(c) != 1 {
		t.Fatalf("lastSeq of a stream of %d partitions", len(c))
	}
	return c[0]
}

// waitApplied waits until db has applied the stream's last sequences.
func waitApplied(t testing.TB, e *env, p *Projector) {
	t.Helper()
	last := e.last(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.WaitForAll(ctx, last); err != nil {
		t.Fatal(err)
	}
}

// rebuild rebuilds the projection from e's stream into a new file.
func rebuild(t testing.TB, e *env) *DB {
	t.Helper()
	path := filepath.Join(t.TempDir(), "rebuilt.db")
	if _, err := Rebuild(context.Background(), e.store, path, nil); err != nil {
		t.Fatalf("rebuild: %v", err)
	}
	db, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func requireSame(t testing.TB, a, b *DB) {
	t.Helper()
	diffs, err := Diff(context.Background(), a, b)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range diffs {
		t.Error(d)
	}
}

func msg(conv int64, sender, text string) *eventstore.Message {
	return &eventstore.Message{ConversationID: conv, SenderID: sender, SenderName: "name " + sender, Text: text, MsgType: eventstore.TypeText}
}

func created(conv int64, users ...string) *eventstore.Created {
	c := &eventstore.Created{ConversationID: conv}
	for i, u := range users {
		role := eventstore.RoleClient
		if i > 0 {
			role = eventstore.RoleWorker
		}
		c.Members = append(c.Members, eventstore.Member{UserID: u, Role: role})
	}
	return c
}
