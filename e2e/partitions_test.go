//go:build unix

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"inbox/eventstore"
)

// TestPartitionsResumeAcrossRestart: inboxd --demo --partitions 3, a
// conversation of bob's in each partition. bob gets a message in each live,
// closes his socket, misses one in each, inboxd restarts and more come; bob
// reconnects with ?since= set to the cursor built from the seq of the frames
// he got (the highest per partition, seq & 255): he gets exactly what he
// missed, once, then a SYNCED whose cursor names every partition, then
// live messages.
func TestPartitionsResumeAcrossRestart(t *testing.T) {
	const n = 3
	bins := build(t)
	srv := startInboxd(t, bins, "--demo", "--partitions", strconv.Itoa(n))
	admin := "Bearer " + jqField(t, filepath.Join(srv.dir, "data", "dev-secrets.json"), ".admin_token")
	bearer := func(srv *inboxd, user string) string {
		words := parseDemo(t, srv.stdout.String()).wscat(t, user)
		i := slices.Index(words, "-H")
		if i < 0 || i+1 >= len(words) {
			t.Fatalf("the demo printed no Authorization header for %s: %q", user, words)
		}
		_, v, _ := strings.Cut(words[i+1], ":")
		return strings.TrimSpace(v)
	}
	call := func(srv *inboxd, auth, path string, body any) map[string]json.RawMessage {
		t.Helper()
		b, _ := json.Marshal(body)
		c := curlCall{method: "POST", url: "http://" + readmeHTTP + path, body: string(b),
			header: http.Header{"Authorization": {auth}, "Content-Type": {"application/json"}}}
		ctx, cancel := context.WithTimeout(context.Background(), frameWait)
		defer cancel()
		status, data, err := c.do(ctx, srv.httpAddr)
		if err != nil || status != http.StatusCreated {
			t.Fatalf("POST %s %s: %d %s %v", path, b, status, data, err)
		}
		var m map[string]json.RawMessage
		mustDecode(t, path, data, &m)
		return m
	}

	// The demo's conversation 1 (alice and bob) and one more of theirs in
	// each other partition.
	convs := []int64{1}
	for id := int64(3); len(convs) < n; id++ {
		if !slices.ContainsFunc(convs, func(c int64) bool { return eventstore.Partition(c, n) == eventstore.Partition(id, n) }) {
			convs = append(convs, id)
		}
	}
	bob := dialLike(t, "bob", parseDemo(t, srv.stdout.String()).wscat(t, "bob"))
	bob.send(`{"type": "PING"}`)
	bob.next("PONG", ofType("PONG"))
	for _, id := range convs[1:] {
		call(srv, admin, "/api/admin/conversations", map[string]any{"id": id, "members": []map[string]string{
			{"user_id": "alice", "role": "client"}, {"user_id": "bob", "role": "worker"}}})
		bob.next("CONVERSATION_JOINED", func(f map[string]json.RawMessage) bool {
			return ofType("CONVERSATION_JOINED")(f) && num(f, "conversation_id") == id
		})
	}
	send := func(srv *inboxd, round string) map[string]int64 {
		sent := map[string]int64{}
		for _, id := range convs {
			text := fmt.Sprintf("%s in %d", round, id)
			m := call(srv, bearer(srv, "alice"), fmt.Sprintf("/api/conversations/%d/messages", id), map[string]string{"message": text})
			if k := int(num(m, "id") & 255); k != eventstore.Partition(id, n) {
				t.Errorf("message %d of conversation %d names partition %d, want %d", num(m, "id"), id, k, eventstore.Partition(id, n))
			}
			sent[text] = num(m, "id")
		}
		return sent
	}

	// bob gets one message in each conversation live; his position is the
	// highest seq he got in each partition.
	seen := map[int64]int64{} // partition -> highest seq
	for text := range send(srv, "live before") {
		f := bob.next(text, messageWith(text))
		seen[num(f, "seq")&255] = max(seen[num(f, "seq")&255], num(f, "seq"))
	}
	if len(seen) != n {
		t.Fatalf("bob's messages are in partitions %v, want all %d", seen, n)
	}
	var cursor []string
	for _, seq := range seen {
		cursor = append(cursor, strconv.FormatInt(seq, 10))
	}
	bob.CloseNow()

	// He misses messages before and after a restart.
	missed := send(srv, "missed")
	if code := srv.terminate(); code != 0 {
		t.Fatalf("inboxd exited %d on SIGTERM", code)
	}
	srv = srv.restart()
	for text, id := range send(srv, "missed after the restart") {
		missed[text] = id
	}

	words := parseDemo(t, srv.stdout.String()).wscat(t, "bob")
	i := slices.Index(words, "-c") + 1
	u, err := url.Parse(words[i])
	if err != nil {
		t.Fatal(err)
	}
	u.RawQuery = url.Values{"since": {strings.Join(cursor, ",")}}.Encode()
	words[i] = u.String()
	bob = dialLike(t, "bob again", words)
	synced := bob.next("SYNCED", ofType("SYNCED"))
	got := map[string]int64{}
	for _, frame := range bob.Backlog() { // what came before SYNCED
		f := rawFields(frame)
		if isMessage(f) {
			if _, twice := got[str(f, "message")]; twice {
				t.Errorf("caught up twice: %v", frame)
			}
			got[str(f, "message")] = num(f, "id")
		}
	}
	if !maps.Equal(got, missed) {
		t.Errorf("bob resumed from %v and caught up %v, want exactly what he missed: %v", cursor, got, missed)
	}
	entries := strings.Split(str(synced, "cursor"), ",")
	if len(entries) != n {
		t.Fatalf("SYNCED %v: want a cursor of %d event ids", synced, n)
	}
	for k, e := range entries {
		id, err := strconv.ParseInt(e, 10, 64)
		if err != nil || int(id&255) != k {
			t.Errorf("SYNCED cursor %q: entry %d is %q, want an event id of partition %d", str(synced, "cursor"), k, e, k)
		}
	}
	for text := range send(srv, "live after") {
		bob.next(text, messageWith(text))
	}
}
