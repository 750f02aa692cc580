//go:build unix

package e2e

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestVerifyAndReplayReachRunningInboxd: with nothing but --data, inbox
// verify and inbox replay --out reach the embedded NATS of the inboxd running
// there (on whatever port it listens, with the service credentials it keeps
// in the data folder), and read <data>/nats in-process once it stopped. An
// inboxd without a NATS port is named as such.
func TestVerifyAndReplayReachRunningInboxd(t *testing.T) {
	bins := build(t)
	inbox := func(dir string, args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), natsWait)
		defer cancel()
		cmd := exec.CommandContext(ctx, bins.inbox, args...)
		cmd.Dir, cmd.Env = dir, childEnv()
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	want := func(out string, err error, says string) {
		t.Helper()
		if err != nil || !strings.Contains(out, says) {
			t.Errorf("%v, want success saying %q:\n%s", err, says, out)
		}
	}

	srv := startInboxd(t, bins, "--demo")
	out, err := inbox(srv.dir, "verify")
	want(out, err, "matches a rebuild from the stream")
	out, err = inbox(srv.dir, "replay", "--out", filepath.Join(t.TempDir(), "copy.db"))
	want(out, err, "rebuilt ")
	if code := srv.terminate(); code != 0 {
		t.Fatalf("inboxd exited %d", code)
	}
	out, err = inbox(srv.dir, "verify")
	want(out, err, "matches a rebuild from the stream")

	portless := startInboxd(t, bins, "--nats-listen", "")
	out, err = inbox(portless.dir, "verify")
	if err == nil || !strings.Contains(out, "no NATS port") || strings.Count(strings.TrimSpace(out), "\n") > 0 {
		t.Errorf("verify against an inboxd without a NATS port: %v, want one line saying so:\n%s", err, out)
	}
}
