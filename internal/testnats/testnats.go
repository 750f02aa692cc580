// Package testnats starts real in-process nats-servers with JetStream for tests.
package testnats

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
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
	return StoreWith(t, s, eventstore.Config{})
}

// StoreWith is Store with cfg (its Conn is set to a new connection to s).
func StoreWith(t testing.TB, s *server.Server, cfg eventstore.Config) *eventstore.Store {
	t.Helper()
	cfg.Conn = Conn(t, s)
	st, err := eventstore.Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("open event store: %v", err)
	}
	return st
}

// Cluster runs n JetStream servers clustered over loopback routes, each storing
// in its own t.TempDir(), and waits until they have elected a meta leader.
// Servers can be shut down to test failures.
type Cluster struct {
	t       testing.TB
	Servers []*server.Server
	opts    []*server.Options
}

// NewCluster starts the cluster.
func NewCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	ports := freePorts(t, 2*n)
	var routes []*url.URL
	for i := range n {
		routes = append(routes, &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", ports[n+i])})
	}
	c := &Cluster{t: t}
	for i := range n {
		opts := natsserver.DefaultTestOptions
		opts.ServerName = fmt.Sprintf("n%d", i+1)
		opts.Port = ports[i]
		opts.JetStream = true
		opts.StoreDir = t.TempDir()
		opts.Cluster.Name = "inbox-test"
		opts.Cluster.Host = "127.0.0.1"
		opts.Cluster.Port = ports[n+i]
		opts.Routes = routes
		c.opts = append(c.opts, &opts)
		c.Servers = append(c.Servers, natsserver.RunServer(&opts))
	}
	t.Cleanup(func() {
		for _, s := range c.Servers {
			s.Shutdown()
		}
	})
	c.WaitReady()
	return c
}

// URL is the comma-separated client URL list of every server.
func (c *Cluster) URL() string {
	var urls []string
	for _, o := range c.opts {
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", o.Port))
	}
	return strings.Join(urls, ",")
}

// WaitReady waits until every running server sees a JetStream meta leader.
func (c *Cluster) WaitReady() {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		ready := true
		for _, s := range c.Servers {
			if s.Running() && !s.JetStreamIsCurrent() {
				ready = false
			}
		}
		if ready {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Fatal("JetStream cluster did not elect a meta leader within 30s")
}

func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ports []int
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("find a free port: %v", err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		ln.Close()
	}
	return ports
}

// Recorded is one event of a recorded stream, as stored: its subject and
// its payload, which need not decode.
type Recorded struct {
	Subject string          `json:"subject"`
	Payload json.RawMessage `json:"payload"`
}

// PublishRecorded appends the recorded stream in path (JSON lines of
// Recorded, such as testdata/stream.jsonl) to store's stream as-is, in order,
// and returns the events; the i-th is at sequence i+1 of an empty stream.
func PublishRecorded(t testing.TB, store *eventstore.Store, path string) []Recorded {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var evs []Recorded
	dec := json.NewDecoder(bytes.NewReader(data))
	for dec.More() {
		var r Recorded
		if err := dec.Decode(&r); err != nil {
			t.Fatalf("%s: event %d: %v", path, len(evs)+1, err)
		}
		evs = append(evs, r)
	}
	ctx := context.Background()
	for i, r := range evs {
		var payload bytes.Buffer
		if err := json.Compact(&payload, r.Payload); err != nil {
			t.Fatal(err)
		}
		if _, err := store.JetStream().Publish(ctx, r.Subject, payload.Bytes()); err != nil {
			t.Fatalf("publish %s event %d (%s): %v", path, i+1, r.Subject, err)
		}
	}
	return evs
}
