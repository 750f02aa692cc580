package presence

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsserver "github.com/nats-io/nats-server/v2/test"

	"inbox/internal/testutil"
)

// cluster runs three JetStream servers routed to each other.
func cluster(t *testing.T) []*server.Server {
	t.Helper()
	ports := make([]int, 3)
	for i := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports[i] = ln.Addr().(*net.TCPAddr).Port
		ln.Close()
	}
	var routes []*url.URL
	for _, p := range ports {
		routes = append(routes, &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", p)})
	}
	servers := make([]*server.Server, 3)
	for i := range servers {
		opts := natsserver.DefaultTestOptions
		opts.Port = -1
		opts.ServerName = fmt.Sprintf("s%d", i)
		opts.JetStream = true
		opts.StoreDir = t.TempDir()
		opts.Cluster.Name = "presence"
		opts.Cluster.Host = "127.0.0.1"
		opts.Cluster.Port = ports[i]
		opts.Routes = routes
		servers[i] = natsserver.RunServer(&opts)
		t.Cleanup(servers[i].Shutdown)
	}
	testutil.CheckFor(t, 20*time.Second, 100*time.Millisecond, func() error {
		for _, s := range servers {
			if !s.JetStreamIsClustered() || !s.JetStreamIsCurrent() {
				return fmt.Errorf("%s: JetStream cluster not ready", s.Name())
			}
		}
		return nil
	})
	return servers
}

func TestClusterReplicated(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-server cluster")
	}
	servers := cluster(t)
	a := startNodeR(t, servers[0], "a", 3)
	b := startNodeR(t, servers[1], "b", 3)

	a.Online("jane")
	b.Online("kim")
	waitStatus(t, b, "jane", true, 5*time.Second)
	waitStatus(t, a, "kim", true, 5*time.Second)

	a.crash()
	crashed := time.Now()
	waitStatus(t, b, "jane", false, testNodeTTL+3*time.Second)
	t.Logf("replicated: crashed node's user offline after %v", time.Since(crashed))
	if on, _ := b.Status("kim"); !on {
		t.Fatal("a live node's user went offline")
	}
	testutil.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		if keys := userKeysOf(t, servers[2], "a"); len(keys) != 0 {
			return fmt.Errorf("keys of the dead node left: %v", keys)
		}
		return nil
	})

	// A heartbeat refused with 10164 (replicated wrong last sequence) re-registers.
	if err := b.kv.Purge(context.Background(), b.nodeKey); err != nil {
		t.Fatal(err)
	}
	wantChanges(t, b, "kim", true, false, true)
}
