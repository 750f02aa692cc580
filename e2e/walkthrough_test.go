//go:build unix

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// seedKeys are the fields of a message frame: the Django consumer's shape plus
// seq (and client_msg_id when the sender gave one).
var seedKeys = []string{"id", "conversation_id", "sender_id", "sender_name", "sender_avatar", "message", "type", "created_at", "message_id", "seq"}

// TestREADMEWalkthrough follows "Try it" in README.md as a newcomer would:
// inboxd --demo, two wscat-like sockets chatting with the printed commands,
// inbox token, then every curl command of the README, and a clean SIGTERM.
func TestREADMEWalkthrough(t *testing.T) {
	bins := build(t)
	rd := loadREADME(t, bins.root)

	// The commands a newcomer types first are in the README verbatim.
	for _, cmd := range []string{"go run ./cmd/inboxd --demo", "npm install -g wscat"} {
		if !slices.Contains(rd.commands(cmd), cmd) {
			t.Errorf("README.md has no sh block line %q", cmd)
		}
	}
	rd.mustContain(t, "Connected (press CTRL+C to quit)")

	srv := startInboxd(t, bins, "--demo")
	demo := parseDemo(t, srv.stdout.String())

	// The README's sample of the printed demo is what inboxd prints, but for
	// the addresses and tokens.
	sample := rd.block(t, "text", "Demo ready.")
	if got, want := normalizeDemo(demo.text, srv), normalizeDemo(sample, nil); got != want {
		t.Errorf("inboxd --demo prints (normalized)\n%s\nbut README.md shows\n%s", got, want)
	}
	for _, c := range []string{"conversation 1: alice, bob", "conversation 2: alice, carol"} {
		if !strings.Contains(demo.text, c) {
			t.Errorf("demo output lacks %q", c)
		}
	}
	if !strings.Contains(rd.block(t, "json", "{"), demo.example) {
		t.Errorf("README.md does not show the frame to type, %s, in a json block", demo.example)
	}

	// Terminals 2 and 3: the printed wscat commands. A PONG shows the socket
	// is open and read, as wscat's "Connected" does.
	alice := dialLike(t, "alice", demo.wscat(t, "alice"))
	bob := dialLike(t, "bob", demo.wscat(t, "bob"))
	for _, c := range []*wsClient{alice, bob} {
		c.send(`{"type":"PING"}`)
		c.next("PONG", ofType("PONG"))
	}

	// Alice types the example; both see the message, alice gets the ACK.
	alice.send(demo.example)
	var example struct {
		ConversationID int64  `json:"conversation_id"`
		Message        string `json:"message"`
		ClientMsgID    string `json:"client_msg_id"`
	}
	if err := json.Unmarshal([]byte(demo.example), &example); err != nil {
		t.Fatalf("the printed example %s: %v", demo.example, err)
	}
	fromAlice := alice.next("her message", messageWith(example.Message))
	atBob := bob.next("alice's message", messageWith(example.Message))
	ack := func(f map[string]json.RawMessage) bool {
		return ofType("ACK")(f) && str(f, "client_msg_id") == example.ClientMsgID
	}
	gotAck := alice.next("ACK", ack)
	hello := checkMessage(t, "bob", atBob, example.ConversationID, "alice", "Alice Doe", example.Message, example.ClientMsgID)
	if !bytes.Equal(compactJSON(t, fromAlice), compactJSON(t, atBob)) {
		t.Errorf("the sender's copy differs from bob's:\n%v\n%v", fromAlice, atBob)
	}
	if num(gotAck, "message_id") != hello || num(gotAck, "seq") != hello {
		t.Errorf("ACK %v: want message_id and seq %d", gotAck, hello)
	}
	// The README's sample output line is that frame, but for created_at.
	checkSampleLine(t, rd, atBob)

	// Bob answers with the README's frame.
	const reply = `{"conversation_id": 1, "message": "Hi Alice"}`
	rd.mustContain(t, "`"+reply+"`")
	bob.send(reply)
	atAlice := alice.next("bob's reply", messageWith("Hi Alice"))
	hi := checkMessage(t, "alice", atAlice, 1, "bob", "Bob Worker", "Hi Alice", "")
	bob.next("his own reply", messageWith("Hi Alice"))

	// The other two frames the README suggests trying.
	const typing = `{"conversation_id": 1, "type": "TYPING", "is_typing": true}`
	rd.mustContain(t, "`"+typing+"`")
	alice.send(typing)
	ty := bob.next("alice's TYPING", ofType("TYPING"))
	if str(ty, "user_id") != "alice" || string(ty["is_typing"]) != "true" || num(ty, "conversation_id") != 1 {
		t.Errorf("TYPING at bob: %v", ty)
	}
	const notMember = `{"conversation_id": 2, "message": "x"}`
	rd.mustContain(t, "`"+notMember+"`")
	bob.send(notMember)
	if e := bob.next("ERROR", ofType("ERROR")); str(e, "code") != "forbidden" {
		t.Errorf("bob writing to conversation 2: %v, want an ERROR with code forbidden", e)
	}

	// The HTTP API with curl, as the README runs it.
	vars := runAssignments(t, rd, bins, srv)
	curls := rd.commands("curl ")
	if len(curls) == 0 {
		t.Fatal("README.md shows no curl command")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	seen := map[string]bool{}
	for _, line := range curls {
		call, err := parseCurl(line, vars)
		if err != nil {
			t.Fatal(err)
		}
		status, body, err := call.do(ctx, srv.httpAddr)
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		t.Logf("%s -> %d", call.route(), status)
		if status < 200 || status > 299 {
			t.Errorf("%s\n  answered %d: %s", line, status, body)
			continue
		}
		if call.grep != nil && !call.grep.Match(body) {
			t.Errorf("%s\n  no line matches %s", line, call.grep)
		}
		seen[call.route()] = true
		switch call.route() {
		case "GET /api/conversations":
			var got struct {
				Conversations []map[string]json.RawMessage `json:"conversations"`
			}
			mustDecode(t, line, body, &got)
			var ids []int64
			for _, c := range got.Conversations {
				ids = append(ids, num(c, "id"))
				for _, k := range []string{"id", "members", "last_message", "unread"} {
					if _, ok := c[k]; !ok {
						t.Errorf("%s: conversation without %q: %v", line, k, c)
					}
				}
			}
			if len(ids) < 2 || ids[0] != 1 || !slices.Contains(ids, 2) {
				t.Errorf("%s: conversations %v, want 1 (newest activity) first, and 2", line, ids)
			}
		case "GET /api/conversations/1/messages":
			var got struct {
				Messages []map[string]json.RawMessage `json:"messages"`
			}
			mustDecode(t, line, body, &got)
			var ids []int64
			for _, m := range got.Messages {
				ids = append(ids, num(m, "id"))
				for _, k := range seedKeys {
					if _, ok := m[k]; !ok {
						t.Errorf("%s: message without %q: %v", line, k, m)
					}
				}
			}
			if len(ids) < 2 || ids[0] != hi || ids[1] != hello {
				t.Errorf("%s: message ids %v, want %d (Hi Alice), %d (Hello) first, newest first", line, ids, hi, hello)
			}
		case "POST /api/conversations/1/messages":
			var m map[string]json.RawMessage
			mustDecode(t, line, body, &m)
			key := call.header.Get("Idempotency-Key")
			if key == "" {
				t.Errorf("%s: the README's send shows no Idempotency-Key", line)
			}
			id := checkMessage(t, "POST answer", m, 1, "alice", "Alice Doe", str(m, "message"), key)
			bob.next("the message sent with curl", func(f map[string]json.RawMessage) bool { return isMessage(f) && num(f, "id") == id })
			// "resending with the same Idempotency-Key returns the same message, stored once"
			status, again, err := call.do(ctx, srv.httpAddr)
			if err != nil || status/100 != 2 {
				t.Fatalf("%s, again: %d %s %v", line, status, again, err)
			}
			var m2 map[string]json.RawMessage
			mustDecode(t, line, again, &m2)
			if num(m2, "id") != id {
				t.Errorf("%s, again: id %d, want the first send's %d", line, num(m2, "id"), id)
			}
		case "POST /api/admin/conversations":
			var c map[string]json.RawMessage
			mustDecode(t, line, body, &c)
			id := num(c, "id")
			if id <= 0 || status != 201 {
				t.Errorf("%s: %d %s, want 201 and an id", line, status, body)
			}
			bob.next("CONVERSATION_JOINED", func(f map[string]json.RawMessage) bool {
				return ofType("CONVERSATION_JOINED")(f) && num(f, "conversation_id") == id
			})
		case "POST /api/admin/conversations/1/messages":
			var m map[string]json.RawMessage
			mustDecode(t, line, body, &m)
			if str(m, "type") != "SYSTEM" {
				t.Errorf("%s: %s, want a SYSTEM message", line, body)
			}
			for _, c := range []*wsClient{alice, bob} {
				c.next("the system message", messageWith(str(m, "message")))
			}
		}
	}
	for _, r := range []string{
		"GET /api/conversations", "GET /api/conversations/1/messages", "POST /api/conversations/1/messages",
		"POST /api/admin/conversations", "GET /healthz", "GET /readyz", "GET /metrics",
	} {
		if !seen[r] {
			t.Errorf("README.md shows no curl command for %s", r)
		}
	}
	rd.mustContain(t, "http://"+readmeHTTP+"/api/openapi.json")
	if status, _, err := (curlCall{method: "GET", url: "http://" + readmeHTTP + "/api/openapi.json"}).do(ctx, srv.httpAddr); err != nil || status != 200 {
		t.Errorf("GET /api/openapi.json: %d %v", status, err)
	}

	// Ctrl-C in terminal 1: a graceful shutdown closes the sockets with 1001
	// and exits 0.
	if code := srv.terminate(); code != 0 {
		t.Errorf("inboxd exited %d after SIGTERM, want 0", code)
	}
	for _, c := range []*wsClient{alice, bob} {
		select {
		case <-c.Done():
			if got := websocket.CloseStatus(c.Err()); got != websocket.StatusGoingAway {
				t.Errorf("%s's socket ended with %v, want close status 1001", c.Name(), c.Err())
			}
		case <-time.After(frameWait):
			t.Errorf("%s's socket still open after inboxd exited", c.Name())
		}
	}
}

// demoOutput is what inboxd --demo printed.
type demoOutput struct {
	text    string            // from "Demo ready." on
	users   map[string]string // user -> its wscat command line
	example string            // the frame to type
}

func parseDemo(t *testing.T, stdout string) demoOutput {
	t.Helper()
	i := strings.Index(stdout, "Demo ready.")
	if i < 0 {
		t.Fatalf("no demo in inboxd's stdout:\n%s", stdout)
	}
	d := demoOutput{text: stdout[i:], users: map[string]string{}}
	lines := strings.Split(d.text, "\n")
	for i, l := range lines {
		l = strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(l, "# ") && i+1 < len(lines):
			d.users[strings.TrimPrefix(l, "# ")] = strings.TrimSpace(lines[i+1])
		case l == "Then type, for example:" && i+1 < len(lines):
			d.example = strings.TrimSpace(lines[i+1])
		}
	}
	if d.example == "" || len(d.users) == 0 {
		t.Fatalf("cannot find the wscat commands and example frame in:\n%s", d.text)
	}
	return d
}

// wscat is user's printed command line, split as the shell would.
func (d demoOutput) wscat(t *testing.T, user string) []string {
	t.Helper()
	line, ok := d.users[user]
	if !ok {
		t.Fatalf("the demo printed no command for %s", user)
	}
	words, pipe, err := shellWords(line, nil)
	if err != nil || len(pipe) > 0 {
		t.Fatalf("%s's command %q: %v", user, line, err)
	}
	return words
}

var tokenRE = regexp.MustCompile(`Bearer [^"]+`)

// normalizeDemo puts the README's addresses in place of srv's and a
// placeholder in place of every token, and drops trailing blank space.
func normalizeDemo(s string, srv *inboxd) string {
	if srv != nil {
		s = strings.ReplaceAll(s, srv.httpAddr, readmeHTTP)
		s = strings.ReplaceAll(s, srv.natsURL, readmeNATS)
		s = strings.ReplaceAll(s, filepath.Join(srv.dir, "data")+string(filepath.Separator), "data/")
	}
	s = tokenRE.ReplaceAllString(s, "Bearer TOKEN")
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i := range lines {
		lines[i] = strings.TrimRight(lines[i], " ")
	}
	return strings.Join(lines, "\n")
}

// checkMessage checks a message frame's exact fields and returns its id.
func checkMessage(t *testing.T, where string, f map[string]json.RawMessage, conv int64, sender, name, text, clientMsgID string) int64 {
	t.Helper()
	want := slices.Clone(seedKeys)
	if clientMsgID != "" {
		want = append(want, "client_msg_id")
	}
	got := slices.Collect(maps.Keys(f))
	// The read model adds is_read and the message's lifecycle (edited_at,
	// deleted, reactions) to history and to a POST's answer.
	got = slices.DeleteFunc(got, func(k string) bool {
		return where == "POST answer" && (k == "is_read" || k == "edited_at" || k == "deleted" || k == "reactions")
	})
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("%s: message fields %v, want %v", where, got, want)
	}
	id := num(f, "id")
	if id <= 0 || num(f, "message_id") != id || num(f, "seq") != id {
		t.Errorf("%s: id %s, message_id %s, seq %s: want one positive number", where, f["id"], f["message_id"], f["seq"])
	}
	if num(f, "conversation_id") != conv || str(f, "sender_id") != sender || str(f, "sender_name") != name ||
		str(f, "message") != text || str(f, "type") != "TEXT" || str(f, "client_msg_id") != clientMsgID {
		t.Errorf("%s: %v, want conversation %d, sender %s (%s), message %q, type TEXT, client_msg_id %q", where, f, conv, sender, name, text, clientMsgID)
	}
	if _, err := time.Parse(time.RFC3339, str(f, "created_at")); err != nil {
		t.Errorf("%s: created_at: %v", where, err)
	}
	return id
}

// checkSampleLine compares the README's sample output line ("< {...}") with
// a received message frame: same fields, same values but created_at.
func checkSampleLine(t *testing.T, rd readme, got map[string]json.RawMessage) {
	t.Helper()
	var line string
	for _, l := range strings.Split(rd.text, "\n") {
		if strings.HasPrefix(l, "< {") {
			line = strings.TrimPrefix(l, "< ")
			break
		}
	}
	var sample map[string]json.RawMessage
	if err := json.Unmarshal([]byte(line), &sample); err != nil {
		t.Fatalf("README.md's sample message line %q: %v", line, err)
	}
	if a, b := slices.Sorted(maps.Keys(sample)), slices.Sorted(maps.Keys(got)); !slices.Equal(a, b) {
		t.Errorf("README.md's sample message has fields %v, the socket sends %v", a, b)
	}
	for k, v := range sample {
		if k != "created_at" && string(v) != string(got[k]) {
			t.Errorf("README.md's sample message has %s %s, the socket sends %s", k, v, got[k])
		}
	}
}

// runAssignments runs the README's `VAR=$(command)` lines the way the shell
// would, with the built inbox for `go run ./cmd/inbox`, in inboxd's working
// directory (so ./data is its data folder), and returns the variables.
func runAssignments(t *testing.T, rd readme, bins binaries, srv *inboxd) map[string]string {
	t.Helper()
	vars := map[string]string{}
	re := regexp.MustCompile(`^([A-Z_]+)=\$\((.*)\)$`)
	for _, b := range rd.blocks {
		if b.lang != "sh" {
			continue
		}
		for _, line := range strings.Split(b.body, "\n") {
			m := re.FindStringSubmatch(strings.TrimSpace(line))
			if m == nil {
				continue
			}
			words, _, err := shellWords(m[2], vars)
			if err != nil {
				t.Fatal(err)
			}
			var cmd *exec.Cmd
			switch {
			case len(words) > 2 && words[0] == "go" && words[1] == "run" && words[2] == "./cmd/inbox":
				cmd = exec.Command(bins.inbox, words[3:]...)
			case len(words) == 4 && words[0] == "jq" && words[1] == "-r":
				if _, err := exec.LookPath("jq"); err == nil {
					cmd = exec.Command("jq", words[1:]...)
					break
				}
				vars[m[1]] = jqField(t, filepath.Join(srv.dir, words[3]), words[2])
				continue
			default:
				t.Fatalf("README.md line %q: the test does not know how to run %q", line, m[2])
			}
			cmd.Dir = srv.dir
			cmd.Env = childEnv()
			out, err := cmd.Output()
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				t.Fatalf("%s: %v\n%s", line, err, ee.Stderr)
			} else if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			vars[m[1]] = strings.TrimSpace(string(out))
			if vars[m[1]] == "" {
				t.Fatalf("%s: printed nothing", line)
			}
		}
	}
	for _, v := range []string{"ALICE", "ADMIN"} {
		if _, ok := vars[v]; !ok {
			t.Fatalf("README.md does not set $%s", v)
		}
	}
	return vars
}

// jqField is `jq -r .field file` for a top-level string field.
func jqField(t *testing.T, file, expr string) string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	mustDecode(t, file, data, &m)
	v, ok := m[strings.TrimPrefix(expr, ".")].(string)
	if !ok || !strings.HasPrefix(expr, ".") {
		t.Fatalf("jq -r %s %s: no such string field", expr, file)
	}
	return v
}

func mustDecode(t *testing.T, what string, data []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v in %s", what, err, data)
	}
}

func compactJSON(t *testing.T, f map[string]json.RawMessage) []byte {
	t.Helper()
	data, err := json.Marshal(f) // map keys sorted
	if err != nil {
		t.Fatal(err)
	}
	return data
}
