package cluster_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"inbox/eventstore"
	"inbox/internal/testutil"
	"inbox/projections"
)

// buildInboxd builds cmd/inboxd into a temporary folder.
func buildInboxd(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	bin := filepath.Join(t.TempDir(), "inboxd")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/inboxd")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/inboxd: %v\n%s", err, out)
	}
	return bin
}

// child is an inboxd process this test started.
type child struct {
	cmd  *exec.Cmd
	logs *testutil.Buffer
	done chan struct{}
}

func startInboxd(t *testing.T, bin string, args ...string) *child {
	t.Helper()
	// Shedding is not what these tests judge (startNode says why).
	args = append(args, "--max-feed-lag", "1m", "--max-append-latency", "1m")
	cmd := exec.Command(bin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "INBOX_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	logs := &testutil.Buffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start inboxd: %v", err)
	}
	c := &child{cmd: cmd, logs: logs, done: make(chan struct{})}
	go func() { cmd.Wait(); close(c.done) }()
	t.Cleanup(func() {
		select {
		case <-c.done:
		default:
			cmd.Process.Kill() // only the process this test started
			<-c.done
		}
		if t.Failed() {
			t.Logf("inboxd (pid %d) output:\n%s", cmd.Process.Pid, logs.String())
		}
	})
	return c
}

// waitHealthy polls /healthz until the node answers 200.
func waitHealthy(t *testing.T, c *child, addr string) {
	t.Helper()
	testutil.CheckFor(t, 60*time.Second, 20*time.Millisecond, func() error {
		select {
		case <-c.done:
			t.Fatalf("inboxd exited: %v", c.cmd.ProcessState)
		default:
		}
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz: %s", resp.Status)
		}
		return nil
	})
}

func adminPost(t *testing.T, addr, path, body string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+adminToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("POST %s: %s", path, resp.Status)
	}
}

// TestInboxdKilledUnderLoad runs inboxd (embedded NATS, its own data folder)
// as a child process, SIGKILLs it while two clients send with
// client_msg_ids, starts it again on the same folder, and retries every
// un-acknowledged send: every acknowledged message is in history exactly
// once, each retried one is stored once, and a rebuild of the read model
// from the stream matches the live one.
func TestInboxdKilledUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs inboxd")
	}
	bin := buildInboxd(t)
	data := t.TempDir()
	addr := testutil.FreeAddr(t)
	args := []string{"--data", data, "--http-addr", addr, "--nats-listen", "", "--node", "crash",
		"--jwt-secret", jwtSecret, "--admin-token", adminToken, "--rate", "100000", "--log-level", "warn"}

	first := startInboxd(t, bin, args...)
	waitHealthy(t, first, addr)
	adminPost(t, addr, "/api/admin/conversations", `{"id":1,"members":[{"user_id":"alice","role":"client"},{"user_id":"bob","role":"worker"}]}`)

	senders := []*sender{newSender(dial(t, addr, "alice", 0), 1, "a"), newSender(dial(t, addr, "bob", 0), 1, "b")}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, s := range senders {
		wg.Go(func() { s.runUntilBroken(stop) })
	}
	total := func() int { return senders[0].ackedCount() + senders[1].ackedCount() }
	testutil.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		if total() < 500 {
			return fmt.Errorf("%d acknowledged", total())
		}
		return nil
	})
	if err := first.cmd.Process.Kill(); err != nil { // SIGKILL, by PID
		t.Fatal(err)
	}
	<-first.done
	close(stop)
	wg.Wait()
	t.Logf("killed inboxd after %d acknowledged sends; un-acknowledged: %d", total(), len(senders[0].unacked)+len(senders[1].unacked))

	second := startInboxd(t, bin, args...)
	waitHealthy(t, second, addr)
	for i, s := range senders {
		s.c = dial(t, addr, []string{"alice", "bob"}[i], 0)
		s.retryUnacked(t, 30*time.Second)
		for range 50 { // and sending goes on
			s.mu.Lock()
			s.n++
			cmid := fmt.Sprintf("%s-%d", s.prefix, s.n)
			s.mu.Unlock()
			if !s.sendOne(cmid, frameWait) {
				t.Fatalf("send %s after the restart not acknowledged", cmid)
			}
		}
	}

	want := map[uint64]string{}
	for _, s := range senders {
		for cmid, seq := range s.acked {
			if other, dup := want[seq]; dup {
				t.Fatalf("%s and %s both acknowledged at seq %d", cmid, other, seq)
			}
			want[seq] = cmid
		}
	}
	testutil.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		h, err := history(t, addr, "alice", 1)
		if err != nil {
			return err
		}
		if len(h) != len(want) {
			return fmt.Errorf("history has %d messages, %d acknowledged", len(h), len(want))
		}
		for _, m := range h {
			if want[m.ID] != m.ClientMsgID {
				return fmt.Errorf("history message %d has client_msg_id %q, acknowledged as %q", m.ID, m.ClientMsgID, want[m.ID])
			}
		}
		return nil
	})

	// Stop it cleanly and compare the live read model with a rebuild.
	if err := second.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-second.done:
	case <-time.After(30 * time.Second):
		t.Fatal("inboxd did not stop within 30s of SIGTERM")
	}
	verify(t, data)
}

// verify opens the stopped node's embedded stream and read model and checks
// that a rebuild from the stream matches the live read model.
func verify(t *testing.T, data string) {
	t.Helper()
	ns, err := eventstore.RunEmbedded(eventstore.EmbeddedConfig{Dir: filepath.Join(data, "nats"), ServerName: "verify"})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	nc, err := eventstore.ConnectEmbedded(ns, "verify")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	store, err := eventstore.Open(ctx, eventstore.Config{Conn: nc})
	if err != nil {
		t.Fatal(err)
	}
	db, err := projections.Open(filepath.Join(data, "inbox.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	diffs, err := projections.Verify(ctx, store, db, filepath.Join(t.TempDir(), "rebuild.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(diffs) > 0 {
		t.Fatalf("live read model differs from a rebuild:\n%s", strings.Join(diffs, "\n"))
	}
}

// runUntilBroken sends as fast as answers come until stop closes or the
// socket breaks; the send in flight when it breaks is un-acknowledged.
func (s *sender) runUntilBroken(stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case <-s.c.done:
			return
		default:
		}
		s.mu.Lock()
		s.n++
		cmid := fmt.Sprintf("%s-%d", s.prefix, s.n)
		s.mu.Unlock()
		s.sendOne(cmid, 2*time.Second)
	}
}
