package node_test

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"inbox/internal/testnode"
	"inbox/node"
)

// TestDataFolderOwnerOnly: the data folder, the embedded NATS storage, the
// read model (inbox.db and its -wal and -shm files) and the development
// secrets are readable by their owner only (issue 15, item 9), even under a
// permissive umask, and a data folder left readable by others (an older
// inboxd, a copy) is tightened at start.
func TestDataFolderOwnerOnly(t *testing.T) {
	old := syscall.Umask(0o002) // what a shared machine may have
	t.Cleanup(func() { syscall.Umask(old) })

	data := filepath.Join(t.TempDir(), "data")
	cfg := testnode.Config(t)
	cfg.DataDir = data
	start := func() *node.Node {
		t.Helper()
		return testnode.Start(t, cfg)
	}
	stop := func(n *node.Node) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := n.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
	}
	check := func(when string) {
		t.Helper()
		for name, want := range map[string]fs.FileMode{
			"":                 0o700,
			"nats":             0o700,
			"inbox.db":         0o600,
			"inbox.db-wal":     0o600,
			"inbox.db-shm":     0o600,
			"dev-secrets.json": 0o600,
		} {
			fi, err := os.Stat(filepath.Join(data, name))
			if err != nil {
				t.Errorf("%s: %v", when, err)
				continue
			}
			if got := fi.Mode().Perm(); got != want {
				t.Errorf("%s: %s has mode %v, want %v", when, filepath.Join("data", name), got, want)
			}
		}
	}

	n := start()
	check("first start") // while running: the -wal and -shm files exist
	stop(n)

	// Loosen everything, as a data folder made before this rule or copied
	// with cp -r under umask 0 would be, and start again.
	for name, mode := range map[string]fs.FileMode{"": 0o777, "nats": 0o777, "inbox.db": 0o666, "dev-secrets.json": 0o644} {
		if err := os.Chmod(filepath.Join(data, name), mode); err != nil {
			t.Fatal(err)
		}
	}
	n = start()
	check("restart on a loosened folder")
	stop(n)
}
