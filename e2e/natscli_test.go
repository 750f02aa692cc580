//go:build unix

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"inbox/internal/testutil"
)

const natsWait = 30 * time.Second

// readmeContext is the nats CLI context README.md's commands use: the
// read-only inspection user's, which inboxd writes into its data folder.
const readmeContext = "data/nats-inspect.json"

// TestREADMENatsCLI runs the nats CLI commands of README.md ("Look inside the
// stream") against a running inboxd --demo, on its embedded server's port, as
// the README does: from inboxd's working folder, with the read-only context
// inboxd wrote there. Then it runs the writes that context must not allow
// (issue 15, item 2), and checks that none changed anything.
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
			printed = normalizeDemo(s, srv)
		}
	}
	if !strings.Contains(strings.Join(lines, "\n"), printed) || printed == "" {
		t.Errorf("inboxd --demo prints %q, which README.md's nats commands do not show", printed)
	}

	nats := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), natsWait)
		defer cancel()
		cmd := exec.CommandContext(ctx, natsBin, args...)
		cmd.Dir, cmd.Env = srv.dir, childEnv()
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	mustNats := func(args ...string) string {
		t.Helper()
		out, err := nats(args...)
		if err != nil {
			t.Fatalf("nats %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	// streamState is what the stream holds, by the inspection user's eyes.
	streamState := func() string {
		t.Helper()
		var info struct {
			State struct {
				Messages  uint64 `json:"messages"`
				FirstSeq  uint64 `json:"first_seq"`
				LastSeq   uint64 `json:"last_seq"`
				Consumers int    `json:"consumer_count"`
			} `json:"state"`
		}
		out := mustNats("--context", readmeContext, "stream", "info", "INBOX", "--json")
		if err := json.Unmarshal([]byte(out), &info); err != nil {
			t.Fatalf("stream info --json: %v\n%s", err, out)
		}
		return fmt.Sprintf("%+v", info.State)
	}

	seen := map[string]bool{}
	for _, line := range lines {
		words, pipe, err := shellWords(line, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(pipe) > 0 || len(words) < 4 || words[1] != "--context" || words[2] != readmeContext {
			t.Fatalf("README.md's %q: want `nats --context %s ...` and no pipe", line, readmeContext)
		}
		args := words[1:]
		sub := strings.Join(words[3:], " ")
		seen[sub] = true
		switch sub {
		case "stream info INBOX":
			out := mustNats(args...)
			for _, want := range []string{"Information for Stream INBOX", "inbox.conv.*.*", "inbox.user.*.*", "inbox.job.*.*"} {
				if !strings.Contains(out, want) {
					t.Errorf("%s: output lacks %q:\n%s", line, want, out)
				}
			}

		case "stream get INBOX 1":
			out := mustNats(args...)
			for _, want := range []string{"INBOX#1", "inbox.user.alice.profile", `"type":"profile"`, `"user_id":"alice"`} {
				if !strings.Contains(out, want) {
					t.Errorf("%s: output lacks %q:\n%s", line, want, out)
				}
			}

		case "sub inbox.> --all --direct":
			// Every stored event, then the next one appended: --count ends it
			// one event past what is stored now.
			var info struct {
				State struct {
					Messages int `json:"messages"`
				} `json:"state"`
			}
			if err := json.Unmarshal([]byte(mustNats("--context", readmeContext, "stream", "info", "INBOX", "--json")), &info); err != nil {
				t.Fatal(err)
			}
			stored := info.State.Messages
			out := runNatsSub(t, srv, natsBin, append(args, "--count", fmt.Sprint(stored+1)), fmt.Sprintf("[#%d]", stored), func() {
				postMessage(t, srv, aliceAuth, "seen by nats sub --all")
			})
			for _, want := range []string{"[#1]", "inbox.user.alice.profile", "inbox.conv.1.created", `"user_id":"bob","role":"worker"`,
				fmt.Sprintf("[#%d]", stored+1), `"message":"seen by nats sub --all"`} {
				if !strings.Contains(out, want) {
					t.Errorf("%s: output lacks %q:\n%s", line, want, out)
				}
			}

		case "sub inbox.conv.>":
			// Live events: it prints the next one appended (--count 1 ends it).
			out := runNatsSub(t, srv, natsBin, append(args, "--count", "1"), "Subscribing on", func() {
				postMessage(t, srv, aliceAuth, "seen by nats sub")
			})
			for _, want := range []string{"inbox.conv.1.msg", `"message":"seen by nats sub"`, `"sender_id":"alice"`} {
				if !strings.Contains(out, want) {
					t.Errorf("%s: output lacks %q:\n%s", line, want, out)
				}
			}

		default:
			t.Errorf("README.md shows %q, which this test does not run: add it here", line)
		}
	}
	for _, want := range []string{"stream info INBOX", "stream get INBOX 1", "sub inbox.> --all --direct", "sub inbox.conv.>"} {
		if !seen[want] {
			t.Errorf("README.md does not show `nats --context %s %s`", readmeContext, want)
		}
	}

	// Writes, as the inspection user: each fails (the server refuses it
	// and the CLI times out after 2 s) and changes nothing.
	before := streamState()
	forged := `{"v":1,"type":"member","at":"2026-01-01T00:00:00Z","conversation_id":1,"op":"add","user_id":"mallory","role":"member"}`
	for _, write := range [][]string{
		{"pub", "inbox.conv.1.member", forged},
		{"stream", "rm", "INBOX", "-f"},
		{"stream", "purge", "INBOX", "-f"},
		{"stream", "rmm", "INBOX", "1", "-f"},
		{"stream", "add", "EVIL", "--subjects", "evil.>", "--defaults"},
		{"consumer", "rm", "INBOX", "inbox-proj-inboxd", "-f"},
		{"kv", "put", "inbox_presence", "user.mallory", "x"},
		{"kv", "del", "inbox_presence", "node.inboxd", "-f"},
	} {
		args := append([]string{"--context", readmeContext, "--timeout", "2s"}, write...)
		if out, err := nats(args...); err == nil {
			t.Errorf("nats %s succeeded as the inspection user:\n%s", strings.Join(write, " "), out)
		}
	}
	// stream view creates a consumer: refused too (it needs a terminal).
	args := []string{"--context", readmeContext, "--timeout", "2s", "stream", "view", "INBOX"}
	if out, err := runNatsTTY(t, srv, natsBin, args); err == nil || !strings.Contains(out, "Permissions Violation") {
		t.Errorf("nats stream view as the inspection user: %v, want a permissions violation:\n%s", err, out)
	}
	if after := streamState(); after != before {
		t.Errorf("refused writes changed the stream: %s, was %s", after, before)
	}
	if out := mustNats("--context", readmeContext, "stream", "ls", "--names"); strings.Contains(out, "EVIL") {
		t.Errorf("stream EVIL was created:\n%s", out)
	}
	mustNats("--context", readmeContext, "consumer", "info", "INBOX", "inbox-proj-inboxd")

	// Without credentials the port admits nothing, the finding's raw publish
	// included.
	for _, cmd := range [][]string{{"stream", "info", "INBOX"}, {"pub", "inbox.conv.1.member", forged}} {
		out, err := nats(append([]string{"--server", srv.natsURL, "--timeout", "2s"}, cmd...)...)
		if err == nil || !strings.Contains(out, "Authorization Violation") {
			t.Errorf("nats --server %s %s without credentials: %v, want an authorization violation:\n%s", srv.natsURL, strings.Join(cmd, " "), err, out)
		}
	}
}

// runNatsSub runs a nats sub command in inboxd's folder, calls then once its
// output shows ready, and returns its output once it exits (its --count
// reached).
func runNatsSub(t *testing.T, srv *inboxd, bin string, args []string, ready string, then func()) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), natsWait)
	defer cancel()
	var out testutil.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = srv.dir, childEnv(), &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	srv.waitFor(natsWait, "nats sub to show "+ready, func() error {
		if strings.Contains(out.String(), ready) {
			return nil
		}
		return context.DeadlineExceeded
	})
	then()
	if err := <-done; err != nil {
		t.Fatalf("nats %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String()
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

// runNatsTTY runs the nats CLI in inboxd's folder on a pseudo-terminal
// (`stream view` refuses to run without one) and returns what it wrote and
// how it exited.
func runNatsTTY(t *testing.T, srv *inboxd, bin string, args []string) (string, error) {
	t.Helper()
	master, tty, err := openPTY()
	if err != nil {
		testutil.MissingTool(t, "nats %s needs a terminal: %v", strings.Join(args, " "), err)
	}
	defer master.Close()
	ctx, cancel := context.WithTimeout(context.Background(), natsWait)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir, cmd.Env = srv.dir, childEnv("TERM=dumb")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.SysProcAttr = ttyAttr()
	if err := cmd.Start(); err != nil {
		tty.Close()
		t.Fatal(err)
	}
	tty.Close() // the child holds it now; the master reads EIO once the child is gone

	var out testutil.Buffer
	read := make(chan struct{})
	go func() {
		defer close(read)
		io.Copy(&out, master)
	}()
	werr := cmd.Wait()
	select {
	case <-read:
	case <-time.After(5 * time.Second):
	}
	return strings.ReplaceAll(out.String(), "\r\n", "\n"), werr
}

// TestNatsCLIPartitions (issue 16): with --partitions 3 the nats CLI, as
// the inspection user of README.md, still shows everything: the streams
// INBOX-0 … INBOX-2 (stream ls, as the demo says), a partition's subjects
// and place (stream info), an event by its stream and sequence (stream
// get), a partition's stored events (sub inbox.p<k>.> --all --direct) and
// every partition's live ones (sub 'inbox.>').
func TestNatsCLIPartitions(t *testing.T) {
	natsBin := testutil.RequireTool(t, "the test runs the nats CLI (go install github.com/nats-io/natscli/nats@v0.5.0)", "nats")
	bins := build(t)
	srv := startInboxd(t, bins, "--demo", "--partitions", "3")
	want := "Inspect the streams (INBOX-0, INBOX-1, INBOX-2): nats --context " + readmeContext + " stream ls"
	if printed := normalizeDemo(srv.stdout.String(), srv); !strings.Contains(printed, want) {
		t.Errorf("inboxd --demo --partitions 3 does not print %q:\n%s", want, printed)
	}
	nats := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), natsWait)
		defer cancel()
		cmd := exec.CommandContext(ctx, natsBin, append([]string{"--context", readmeContext}, args...)...)
		cmd.Dir, cmd.Env = srv.dir, childEnv()
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("nats %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	if out := nats("stream", "ls", "--names"); !strings.Contains(out, "INBOX-0") || !strings.Contains(out, "INBOX-1") || !strings.Contains(out, "INBOX-2") {
		t.Errorf("stream ls --names:\n%s", out)
	}
	var info struct {
		Config struct {
			Subjects []string          `json:"subjects"`
			Metadata map[string]string `json:"metadata"`
		} `json:"config"`
	}
	if err := json.Unmarshal([]byte(nats("stream", "info", "INBOX-1", "--json")), &info); err != nil {
		t.Fatal(err)
	}
	for _, s := range info.Config.Subjects {
		if !strings.HasPrefix(s, "inbox.p1.conv.") && s != "inbox.p1.sys.*" {
			t.Errorf("INBOX-1 captures %s", s)
		}
	}
	if info.Config.Metadata["inbox_partitions"] != "3" || info.Config.Metadata["inbox_partition"] != "1" {
		t.Errorf("INBOX-1's metadata: %v", info.Config.Metadata)
	}
	// The demo's conversations 1 and 2 are in partition 1, its profiles in 0.
	if out := nats("stream", "get", "INBOX-1", "1"); !strings.Contains(out, "inbox.p1.conv.1.created") {
		t.Errorf("stream get INBOX-1 1:\n%s", out)
	}
	stored := runNatsSub(t, srv, natsBin, []string{"--context", readmeContext, "sub", "inbox.p0.>", "--all", "--direct", "--count", "3"}, "[#3]", func() {})
	for _, want := range []string{"stream: INBOX-0 seq 1", "inbox.p0.user.alice.profile", "inbox.p0.user.carol.profile"} {
		if !strings.Contains(stored, want) {
			t.Errorf("sub inbox.p0.> --all --direct: output lacks %q:\n%s", want, stored)
		}
	}

	demo := parseDemo(t, srv.stdout.String())
	var aliceAuth string
	for i, w := range demo.wscat(t, "alice") {
		if w == "-H" {
			aliceAuth = demo.wscat(t, "alice")[i+1]
		}
	}
	_, aliceAuth, _ = strings.Cut(aliceAuth, ":")
	live := runNatsSub(t, srv, natsBin, []string{"--context", readmeContext, "sub", "inbox.>", "--count", "2"}, "Subscribing on", func() {
		postMessage(t, srv, aliceAuth, "seen in partition 1")
		postMessage(t, srv, aliceAuth, "seen again")
	})
	for _, want := range []string{`Received on "inbox.p1.conv.1.msg"`, `"message":"seen in partition 1"`} {
		if !strings.Contains(live, want) {
			t.Errorf("sub inbox.>: output lacks %q:\n%s", want, live)
		}
	}
}
