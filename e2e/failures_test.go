//go:build unix

package e2e

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"inbox/eventstore"
	"inbox/internal/testutil"
)

// TestStartFailures runs the built binaries with the mistakes a newcomer
// makes. Each must end with exit status 1 and one line on stderr that says
// what is wrong, nothing on stdout, and no panic.
func TestStartFailures(t *testing.T) {
	bins := build(t)
	tests := []struct {
		name  string
		inbox bool // run `inbox` instead of inboxd
		// setup prepares data (the data folder, not yet created) and returns
		// the arguments, which come after free --http-addr, --nats-listen and
		// --data data (for inboxd), and the environment.
		setup     func(t *testing.T, data string) (args, env []string)
		withError []string
	}{
		{
			name: "HTTP port in use",
			setup: func(t *testing.T, data string) ([]string, []string) {
				return []string{"--http-addr", holdPort(t)}, nil
			},
			withError: []string{"HTTP listen address", "address already in use"},
		},
		{
			name: "NATS port in use",
			setup: func(t *testing.T, data string) ([]string, []string) {
				return []string{"--nats-listen", holdPort(t)}, nil
			},
			withError: []string{"NATS listen address", "address already in use"},
		},
		{
			name: "data folder cannot be created",
			setup: func(t *testing.T, data string) ([]string, []string) {
				if runtime.GOOS != "linux" {
					t.Skip("/proc is Linux's")
				}
				return []string{"--data", "/proc/x"}, nil
			},
			withError: []string{"data folder", "/proc/x"},
		},
		{
			name: "data folder is a file",
			setup: func(t *testing.T, data string) ([]string, []string) {
				writeFile(t, data, "not a folder")
				return nil, nil
			},
			withError: []string{"data folder", "not a directory"},
		},
		{
			name: "data folder locked by another inboxd",
			setup: func(t *testing.T, data string) ([]string, []string) {
				lock := filepath.Join(data, "inboxd.lock")
				writeFile(t, lock, "")
				f, err := os.OpenFile(lock, os.O_RDWR, 0)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { f.Close() })
				if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
					t.Fatal(err)
				}
				return nil, nil
			},
			withError: []string{"another inboxd is running", "inboxd.lock"},
		},
		{
			name: "nothing answers at --nats-url",
			setup: func(t *testing.T, data string) ([]string, []string) {
				return []string{"--nats-url", "nats://127.0.0.1:1"}, nil
			},
			withError: []string{"connect to NATS", "nats://127.0.0.1:1"},
		},
		{
			name: "--nats-nkey without --nats-url",
			setup: func(t *testing.T, data string) ([]string, []string) {
				return []string{"--nats-nkey", "/nonexistent.nk"}, nil
			},
			withError: []string{"nkey", "--nats-url", "embedded server makes its own credentials"},
		},
		{
			name: "unreadable --nats-creds",
			setup: func(t *testing.T, data string) ([]string, []string) {
				return []string{"--nats-url", "nats://127.0.0.1:1", "--nats-creds", "/nonexistent.creds"}, nil
			},
			withError: []string{"NATS credentials file", "/nonexistent.creds"},
		},
		{
			name: "corrupt inbox.db",
			setup: func(t *testing.T, data string) ([]string, []string) {
				writeFile(t, filepath.Join(data, "inbox.db"), strings.Repeat("this is not a database\n", 300))
				return nil, nil
			},
			withError: []string{"inbox.db", "not a database"},
		},
		{
			name: "negative --max-text",
			setup: func(t *testing.T, data string) ([]string, []string) {
				return []string{"--max-text", "-5"}, nil
			},
			withError: []string{"--max-text -5", "must be positive"},
		},
		{
			name: "negative INBOX_SOCKET_QUEUE",
			setup: func(t *testing.T, data string) ([]string, []string) {
				return nil, []string{"INBOX_SOCKET_QUEUE=-1"}
			},
			withError: []string{"--socket-queue -1", "must be positive"},
		},
		{
			name: "negative --rate",
			setup: func(t *testing.T, data string) ([]string, []string) {
				return []string{"--rate", "-1"}, nil
			},
			withError: []string{"--rate -1", "must be positive"},
		},
		{
			name: "unreadable key file",
			setup: func(t *testing.T, data string) ([]string, []string) {
				return []string{"--jwt-public-key", "/nonexistent"}, nil
			},
			withError: []string{"JWT public key", "/nonexistent"},
		},
		{
			name: "key file that holds no key",
			setup: func(t *testing.T, data string) ([]string, []string) {
				bad := filepath.Join(t.TempDir(), "key.pem")
				writeFile(t, bad, "-----BEGIN PUBLIC KEY-----\nbm90IGEga2V5\n-----END PUBLIC KEY-----\n")
				return []string{"--jwt-public-key", bad}, nil
			},
			withError: []string{"JWT public key", "key.pem"},
		},
		{
			name: "--demo with a public key only",
			setup: func(t *testing.T, data string) ([]string, []string) {
				return []string{"--demo", "--jwt-public-key", publicKeyFile(t)}, nil
			},
			withError: []string{"--demo", "--jwt-secret"},
		},
		{
			name: "--jwt-secret shorter than 32 bytes",
			setup: func(t *testing.T, data string) ([]string, []string) {
				return []string{"--jwt-secret", "too-short"}, nil
			},
			withError: []string{"JWT secret", "INBOX_JWT_SECRET", "9 bytes", "at least 32"},
		},
		{
			name: "INBOX_ADMIN_TOKEN shorter than 24 characters",
			setup: func(t *testing.T, data string) ([]string, []string) {
				return nil, []string{"INBOX_ADMIN_TOKEN=too-short"}
			},
			withError: []string{"admin token", "INBOX_ADMIN_TOKEN", "9 characters", "at least 24"},
		},
		{
			name: "--partitions 0",
			setup: func(t *testing.T, data string) ([]string, []string) {
				return []string{"--partitions", "0"}, nil
			},
			withError: []string{"--partitions 0", "must be 1 to 256"},
		},
		{
			name: "one partition on events of three",
			setup: func(t *testing.T, data string) ([]string, []string) {
				partitionedData(t, data, 3)
				return nil, nil
			},
			withError: []string{"stream INBOX-0 holds partition 0 of 3", "--partitions 3", "not supported"},
		},
		{
			name: "INBOX_PARTITIONS=2 on events of three",
			setup: func(t *testing.T, data string) ([]string, []string) {
				partitionedData(t, data, 3)
				return nil, []string{"INBOX_PARTITIONS=2"}
			},
			withError: []string{"stream INBOX-0 holds partition 0 of 3, not of 2", "--partitions 3"},
		},
		{
			name: "three partitions on events of one",
			setup: func(t *testing.T, data string) ([]string, []string) {
				partitionedData(t, data, 1)
				return []string{"--partitions", "3"}, nil
			},
			withError: []string{"stream INBOX holds the events of one partition, not 3", "--partitions 1"},
		},
		{
			name: "unknown --log-format",
			setup: func(t *testing.T, data string) ([]string, []string) {
				return []string{"--log-format", "xml"}, nil
			},
			withError: []string{"--log-format", "xml"},
		},
		{
			name:  "inbox token before inboxd ever ran",
			inbox: true,
			setup: func(t *testing.T, data string) ([]string, []string) {
				return []string{"token", "alice", "--data", data}, nil
			},
			withError: []string{"no development secrets", "start inboxd"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data := filepath.Join(t.TempDir(), "data")
			extra, env := tc.setup(t, data)
			bin, args := bins.inboxd, []string{"--http-addr", testutil.FreeAddr(t), "--nats-listen", testutil.FreeAddr(t), "--data", data}
			if tc.inbox {
				bin, args = bins.inbox, nil
			}
			args = append(args, extra...)

			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			var stdout, stderr bytes.Buffer
			cmd := exec.CommandContext(ctx, bin, args...)
			cmd.Dir = t.TempDir()
			cmd.Env = childEnv(env...)
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				t.Fatalf("%s %q: %v, want exit status 1\nstdout:\n%s\nstderr:\n%s", filepath.Base(bin), args, err, &stdout, &stderr)
			}
			all := stdout.String() + stderr.String()
			for _, bad := range []string{"panic", "goroutine "} {
				if strings.Contains(all, bad) {
					t.Errorf("output has %q:\n%s", bad, all)
				}
			}
			if stdout.Len() > 0 {
				t.Errorf("stdout is not empty:\n%s", &stdout)
			}
			line := strings.TrimSuffix(stderr.String(), "\n")
			if line == "" || strings.Contains(line, "\n") {
				t.Errorf("stderr is not one line:\n%s", &stderr)
			}
			for _, w := range tc.withError {
				if !strings.Contains(line, w) {
					t.Errorf("stderr %q does not say %q", line, w)
				}
			}
		})
	}
}

// holdPort listens on a free loopback port until the test ends.
func holdPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String()
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// publicKeyFile writes a valid Ed25519 public key as PEM.
func publicKeyFile(t *testing.T) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "ed25519.pem")
	writeFile(t, path, string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})))
	return path
}

// partitionedData makes data's embedded stream hold an event in streams of
// n partitions, as an inboxd started with --partitions n leaves it.
func partitionedData(t *testing.T, data string, n int) {
	t.Helper()
	ns, err := eventstore.RunEmbedded(eventstore.EmbeddedConfig{Dir: filepath.Join(data, "nats"), ServerName: "setup"})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	nc, err := eventstore.ConnectEmbedded(ns, "setup")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	st, err := eventstore.Open(context.Background(), eventstore.Config{Conn: nc, Partitions: n})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Append(context.Background(), &eventstore.Profile{UserID: "alice", Name: "Alice"}); err != nil {
		t.Fatal(err)
	}
}
