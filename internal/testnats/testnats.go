// Package testnats starts real in-process nats-servers with JetStream for tests.
package testnats

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsserver "github.com/nats-io/nats-server/v2/test"
	"github.com/nats-io/nats.go"

	"inbox/eventstore"
)

// Server runs a JetStream server on a random loopback port, storing in t.TempDir().
func Server(t testing.TB) *server.Server {
	t.Helper()
	opts := natsserver.DefaultTestOptions
	opts.Port = -1
	opts.JetStream = true
	opts.StoreDir = t.TempDir()
	s := natsserver.RunServer(&opts)
	t.Cleanup(s.Shutdown)
	return s
}

// Conn connects to s over loopback and closes the connection at cleanup.
func Conn(t testing.TB, s *server.Server) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatalf("connect to %s: %v", s.ClientURL(), err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// Store opens the INBOX stream on s.
func Store(t testing.TB, s *server.Server) *eventstore.Store {
	t.Helper()
	st, err := eventstore.Open(context.Background(), eventstore.Config{Conn: Conn(t, s)})
	if err != nil {
		t.Fatalf("open event store: %v", err)
	}
	return st
}
