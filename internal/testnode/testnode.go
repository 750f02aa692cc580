// Package testnode starts inboxd nodes for tests the one way inboxd does
// (node.Start), on loopback, each with its own data folder, stopped when the
// test ends. Tests of package node itself use it too, from package node_test.
package testnode

import (
	"context"
	"testing"
	"time"

	"inbox/auth"
	"inbox/internal/testutil"
	"inbox/node"
	"inbox/wsedge"
)

// JWTSecret and AdminToken are the secrets of a node configured with
// Secrets; Token mints user tokens it accepts.
const (
	JWTSecret  = "inbox-test-jwt-secret-0123456789abcdef"
	AdminToken = "inbox-test-admin-token-0123456789abcdef"
)

// StartWait bounds a node's start.
const StartWait = time.Minute

// Config is a node configuration for t: its own data folder, HTTP on a free
// loopback port, an embedded NATS server with no port of its own, the test
// logger (testutil.Logger), development secrets generated into the data
// folder, and a socket frame rate no test reaches. A test changes what it
// needs before Start.
func Config(t testing.TB) node.Config {
	return node.Config{
		DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", NATSListen: "",
		Logger: testutil.Logger(),
		Edge:   wsedge.Config{RatePerSecond: 100_000},
	}
}

// Secrets sets cfg's user token secret and admin token to JWTSecret and
// AdminToken.
func Secrets(cfg *node.Config) {
	cfg.JWTSecret, cfg.AdminToken = JWTSecret, AdminToken
}

// Start starts a node with cfg and shuts it down when the test ends. A test
// may shut it down before (Shutdown may be called again).
func Start(t testing.TB, cfg node.Config) *node.Node {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), StartWait)
	defer cancel()
	n, err := node.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start node %s: %v", cfg.NodeID, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := n.Shutdown(ctx); err != nil {
			t.Logf("shut down node %s: %v", cfg.NodeID, err)
		}
	})
	return n
}

// Token mints a token for user, valid for an hour, that a node configured
// with Secrets accepts; name is its display name.
func Token(t testing.TB, user, name string) string {
	t.Helper()
	m, err := auth.NewMinter(auth.MinterConfig{Secret: JWTSecret})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := m.Mint(user, name, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
