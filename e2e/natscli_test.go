//go:build unix

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"inbox/internal/testutil"
)

const natsWait = 30 * time.Second

// TestREADMENatsCLI runs the nats CLI commands of README.md ("Look inside the
// stream") against a running inboxd --demo, on its embedded server's port.
func TestREADMENatsCLI(t *testing.T) {
	natsBin := testutil.RequireTool(t, "the test runs the README's nats commands (go install github.com/nats-io/natscli/nats@v0.5.0)", "nats")
	bins := build(t)
	rd := loadREADME(t, bins.root)
	rd.mustContain(t, "go install github.com/nats-io/natscli/nats@v0.5.0")
	lines := rd.commands("nats ")
	if len(lines) == 0 {
		t.Fatal("README.md shows no nats command")
	}

	srv := startInboxd(t, bins, "--demo")
	demo := parseDemo(t, srv.stdout.String())
	var aliceAuth string
	for i, w := range demo.wscat(t, "alice") {
		if w == "-H" {
			aliceAuth = demo.wscat(t, "alice")[i+1]
		}
	}
	_, aliceAuth, _ = strings.Cut(aliceAuth, ":")

	// The command the demo prints is one of the README's.
	printed := ""
	for _, l := range strings.Split(demo.text, "\n") {
		if s, ok := strings.CutPrefix(l, "Inspect the stream: "); ok {
			printed = strings.ReplaceAll(s, srv.natsURL, readmeNATS)
		}
	}
	if !strings.Contains(strings.Join(lines, "\n"), printed) || printed == "" {
		t.Errorf("inboxd --demo prints %q, which README.md's nats commands do not show", printed)
	}

	seen := map[string]bool{}
	for _, line := range lines {
		words, pipe, err := shellWords(line, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(pipe) > 0 || len(words) < 4 || words[1] != "--server" || words[2] != readmeNATS {
			t.Fatalf("README.md's %q: want `nats --server %s ...` and no pipe", line, readmeNATS)
		}
		args := append([]string{"--server", srv.natsURL}, words[3:]...)
		sub := strings.Join(words[3:], " ")
		seen[sub] = true
		switch sub {
		case "stream info INBOX":
			out := runNats(t, natsBin, args)
			for _, want := range []string{"Information for Stream INBOX", "inbox.conv.*.*", "inbox.user.*.*", "inbox.job.*.*"} {
				if !strings.Contains(out, want) {
					t.Errorf("%s: output lacks %q:\n%s", line, want, out)
				}
			}

		case "stream view INBOX":
			// It pages interactively and refuses to run without a terminal,
			// so it gets one. More than a page of events makes it ask
			// "Next Page?", answered no.
			for i := range 10 {
				postMessage(t, srv, aliceAuth, fmt.Sprintf("event %d", i))
			}
			out := runNatsTTY(t, natsBin, args)
			if !strings.Contains(out, "Next Page?") || !strings.Contains(out, "[10] Subject:") || strings.Contains(out, "[11] Subject:") {
				t.Errorf("%s: want the first page of ten events, then Next Page?:\n%s", line, out)
			}
			for _, want := range []string{"inbox.user.alice.profile", "inbox.conv.1.created", `"type":"created"`, `"user_id":"bob","role":"worker"`} {
				if !strings.Contains(out, want) {
					t.Errorf("%s: output lacks %q:\n%s", line, want, out)
				}
			}

		case "sub inbox.conv.>":
			// Live events: it prints the next one appended (--count 1 ends it).
			ctx, cancel := context.WithTimeout(context.Background(), natsWait)
			defer cancel()
			var out syncBuffer
			cmd := exec.CommandContext(ctx, natsBin, append(args, "--count", "1")...)
			cmd.Env, cmd.Stdout, cmd.Stderr = childEnv(), &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			srv.waitFor(natsWait, "nats sub to subscribe", func() error {
				if strings.Contains(out.String(), "Subscribing on") {
					return nil
				}
				return context.DeadlineExceeded
			})
			postMessage(t, srv, aliceAuth, "seen by nats sub")
			if err := <-done; err != nil {
				t.Fatalf("%s --count 1: %v\n%s", line, err, out.String())
			}
			for _, want := range []string{"inbox.conv.1.msg", `"message":"seen by nats sub"`, `"sender_id":"alice"`} {
				if !strings.Contains(out.String(), want) {
					t.Errorf("%s: output lacks %q:\n%s", line, want, out.String())
				}
			}

		default:
			t.Errorf("README.md shows %q, which this test does not run: add it here", line)
		}
	}
	for _, want := range []string{"stream info INBOX", "stream view INBOX", "sub inbox.conv.>"} {
		if !seen[want] {
			t.Errorf("README.md does not show `nats --server %s %s`", readmeNATS, want)
		}
	}
}

// postMessage sends text to conversation 1 over HTTP with the Authorization
// header value auth.
func postMessage(t *testing.T, srv *inboxd, auth, text string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), natsWait)
	defer cancel()
	body, _ := json.Marshal(map[string]string{"message": text})
	post := curlCall{
		method: "POST", url: "http://" + readmeHTTP + "/api/conversations/1/messages", body: string(body),
		header: http.Header{"Authorization": {strings.TrimSpace(auth)}, "Content-Type": {"application/json"}},
	}
	if status, body, err := post.do(ctx, srv.httpAddr); err != nil || status != 201 {
		t.Fatalf("send %q: %d %s %v", text, status, body, err)
	}
}

// runNats runs the nats CLI to the end and returns its output.
func runNats(t *testing.T, bin string, args []string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), natsWait)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = childEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("nats %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// runNatsTTY runs the nats CLI on a pseudo-terminal, answers each "Next
// Page?" with n, and returns what it wrote.
func runNatsTTY(t *testing.T, bin string, args []string) string {
	t.Helper()
	master, tty, err := openPTY()
	if err != nil {
		testutil.MissingTool(t, "nats %s needs a terminal: %v", strings.Join(args, " "), err)
	}
	defer master.Close()
	ctx, cancel := context.WithTimeout(context.Background(), natsWait)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = childEnv("TERM=dumb")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.SysProcAttr = ttyAttr()
	if err := cmd.Start(); err != nil {
		tty.Close()
		t.Fatal(err)
	}
	tty.Close() // the child holds it now; the master reads EIO once the child is gone

	var out syncBuffer
	read := make(chan struct{})
	go func() {
		defer close(read)
		buf := make([]byte, 4096)
		positions := 0
		for {
			n, err := master.Read(buf)
			out.Write(buf[:n])
			// The prompt asks where the cursor is (ESC[6n) and waits for
			// the terminal's answer (ESC[row;colR).
			for ; strings.Count(out.String(), "\x1b[6n") > positions; positions++ {
				master.Write([]byte("\x1b[24;1R"))
			}
			if err != nil {
				return
			}
		}
	}()
	// Type the answer into a quiet terminal only: the prompt reads the cursor
	// position buffered, and keys sent along with it would be lost.
	go func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		answered, size, quiet := 0, 0, time.Now()
		for {
			select {
			case <-read:
				return
			case now := <-tick.C:
				s := out.String()
				if len(s) != size {
					size, quiet = len(s), now
				}
				if now.Sub(quiet) >= 300*time.Millisecond && strings.Count(s, "Next Page?") > answered {
					answered++
					master.Write([]byte("n\r"))
				}
			}
		}
	}()
	werr := cmd.Wait()
	select {
	case <-read:
	case <-time.After(5 * time.Second):
	}
	if werr != nil {
		t.Fatalf("nats %s: %v\n%s", strings.Join(args, " "), werr, out.String())
	}
	return strings.ReplaceAll(out.String(), "\r\n", "\n")
}
