package httpapi

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"inbox/chat"
	"inbox/eventstore"
	"inbox/internal/logsample"
	"inbox/internal/testutil"
)

// TestIDAbove2To53IsRefusedAndAssignmentNeverWraps is the finding "creating
// conversation id 9223372036854775807 made the next assigned id negative and
// broke every later create": ids above 2^53−1 are refused with 400, and
// assignment stops at 2^53−1 with 409 instead of wrapping.
func TestIDAbove2To53IsRefusedAndAssignmentNeverWraps(t *testing.T) {
	n := newNode(t, nodeOptions{})
	const maxID = eventstore.MaxID
	create := func(path, body string, status int) int64 {
		t.Helper()
		var out struct{ ID int64 }
		r := n.must(t, status, req{method: "POST", path: path, auth: n.admin(), body: body})
		if status == http.StatusCreated {
			r.json(t, &out)
			if !eventstore.ValidID(out.ID) {
				t.Fatalf("%s %s: assigned id %d", path, body, out.ID)
			}
		} else if e := r.error(t); status == http.StatusBadRequest && !strings.Contains(e.Error, "9007199254740991") {
			t.Errorf("%s %s: %+v, want it to name the 2^53−1 cap", path, body, e)
		}
		return out.ID
	}
	conv := func(id int64) string {
		if id == 0 {
			return `{"members":[{"user_id":"u1","role":"client"}]}`
		}
		return fmt.Sprintf(`{"id":%d,"members":[{"user_id":"u1","role":"client"}]}`, id)
	}
	job := func(id int64) string {
		if id == 0 {
			return `{"members":["u1"]}`
		}
		return fmt.Sprintf(`{"id":%d,"members":["u1"]}`, id)
	}

	for _, kind := range []struct {
		path string
		body func(int64) string
	}{{"/api/admin/conversations", conv}, {"/api/admin/jobs", job}} {
		t.Run(strings.TrimPrefix(kind.path, "/api/admin/"), func(t *testing.T) {
			// The exact repro: the largest int64, then a create without id.
			create(kind.path, kind.body(1<<63-1), http.StatusBadRequest)
			create(kind.path, kind.body(maxID+1), http.StatusBadRequest)
			if id := create(kind.path, kind.body(0), http.StatusCreated); id != 1 {
				t.Errorf("next id %d, want 1", id)
			}
			// Up to the cap, and not one past it.
			create(kind.path, kind.body(maxID-1), http.StatusCreated)
			if id := create(kind.path, kind.body(0), http.StatusCreated); id != maxID {
				t.Errorf("next id %d, want %d", id, int64(maxID))
			}
			create(kind.path, kind.body(0), http.StatusConflict)
			create(kind.path, kind.body(0), http.StatusConflict)
			create(kind.path, kind.body(7), http.StatusCreated) // an explicit id still works
		})
	}
}

// TestIDStoredAbove2To53IsSkippedByAssignment: a conversation stored with a
// larger id before the cap existed does not stop assignment below it.
func TestIDStoredAbove2To53IsSkippedByAssignment(t *testing.T) {
	n := newNode(t, nodeOptions{})
	n.createConversation(t, 41, "u1")
	seq, err := n.store.Append(context.Background(), &eventstore.Created{ConversationID: 1 << 62,
		Members: []eventstore.Member{{UserID: "u1", Role: eventstore.RoleMember}}}, eventstore.ExpectNew())
	if err != nil {
		t.Fatal(err)
	}
	if err := n.svc.Directory().WaitFor(context.Background(), seq); err != nil {
		t.Fatal(err)
	}
	if id := n.createConversation(t, 0, "u1"); id != 42 {
		t.Errorf("next id %d, want 42", id)
	}
}

// TestIDAbove2To53InPathOrQueryIsRefused: ids in paths and the history's
// before are capped like ids in bodies.
func TestIDAbove2To53InPathOrQueryIsRefused(t *testing.T) {
	n := newNode(t, nodeOptions{})
	n.createConversation(t, 1, "u1")
	for _, rq := range []req{
		{method: "GET", path: "/api/conversations/9007199254740992/messages", auth: n.user("u1")},
		{method: "GET", path: "/api/conversations/1/messages?before=9007199254740992", auth: n.user("u1")},
		{method: "POST", path: "/api/conversations/9007199254740992/messages", auth: n.user("u1"), body: `{"message":"x"}`},
		{method: "POST", path: "/api/admin/conversations/9007199254740992/members", auth: n.admin(), body: `{"user_id":"u2","role":"member"}`},
		{method: "POST", path: "/api/admin/jobs/9007199254740992/status", auth: n.admin(), body: `{"status":"x"}`},
	} {
		r := n.must(t, http.StatusBadRequest, rq)
		if e := r.error(t); e.Code != chat.CodeBadRequest || !strings.Contains(e.Error, "9007199254740991") {
			t.Errorf("%s %s: %+v", rq.method, rq.path, e)
		}
	}
}

// TestHTTPBodyWithInvalidUTF8IsRefused is the finding "HTTP JSON bodies with
// invalid UTF-8 are silently replaced": encoding/json stored U+FFFD where the
// socket refuses the frame. The body is now refused with 400 and nothing is
// stored.
func TestHTTPBodyWithInvalidUTF8IsRefused(t *testing.T) {
	n := newNode(t, nodeOptions{})
	n.createConversation(t, 1, "u1")
	for _, rq := range []req{
		{method: "POST", path: "/api/conversations/1/messages", auth: n.user("u1"), body: "{\"message\":\"caf\xe9\"}"},
		{method: "PUT", path: "/api/admin/profiles/u1", auth: n.admin(), body: "{\"name\":\"\xff\xfe\"}"},
		{method: "POST", path: "/api/admin/conversations/1/messages", auth: n.admin(), body: "{\"message\":\"x\xc3\"}"},
	} {
		r := n.must(t, http.StatusBadRequest, rq)
		if e := r.error(t); e.Code != chat.CodeBadRequest || !strings.Contains(e.Error, "not valid UTF-8") {
			t.Errorf("%s %s: %+v", rq.method, rq.path, e)
		}
	}
	if msgs := n.messages(t, "u1", 1, ""); len(msgs) != 0 {
		t.Errorf("stored %d messages from refused bodies", len(msgs))
	}
}

// TestHTTPFieldNamesMatchExactly is the finding "field names match
// case-insensitively": encoding/json took {"MESSAGE": ...} for message. A
// name that differs in case is now an unknown field (400), and a name given
// twice is refused rather than the last one silently winning.
func TestHTTPFieldNamesMatchExactly(t *testing.T) {
	n := newNode(t, nodeOptions{})
	n.createConversation(t, 1, "u1")
	for _, tc := range []struct {
		rq   req
		says string
	}{
		{req{method: "POST", path: "/api/conversations/1/messages", auth: n.user("u1"), body: `{"MESSAGE":"hi"}`}, `unknown field "MESSAGE"`},
		{req{method: "POST", path: "/api/conversations/1/messages", auth: n.user("u1"), body: `{"message":"hi","Type":"TEXT"}`}, `unknown field "Type"`},
		{req{method: "POST", path: "/api/conversations/1/messages", auth: n.user("u1"), body: `{"message":"a","message":"b"}`}, `field "message" appears twice`},
		{req{method: "POST", path: "/api/admin/conversations", auth: n.admin(), body: `{"Members":[{"user_id":"u2","role":"member"}]}`}, `unknown field "Members"`},
		{req{method: "POST", path: "/api/admin/conversations", auth: n.admin(), body: `{"members":[{"USER_ID":"u2","role":"member"}]}`}, `unknown field "members[0].USER_ID"`},
	} {
		r := n.must(t, http.StatusBadRequest, tc.rq)
		if e := r.error(t); e.Code != chat.CodeBadRequest || !strings.Contains(e.Error, tc.says) {
			t.Errorf("%s %s: %+v, want it to say %q", tc.rq.body, tc.rq.path, e, tc.says)
		}
	}
	if msgs := n.messages(t, "u1", 1, ""); len(msgs) != 0 {
		t.Errorf("stored %d messages from refused bodies", len(msgs))
	}
}

// TestRefusedRequestsAreLoggedSampled is the finding "auth failures can flood
// the log": a request refused before its handler (a bad token, the rate
// limit, no route) still gets its access line at INFO, but at most
// logsample.DefaultBurst per reason per interval.
func TestRefusedRequestsAreLoggedSampled(t *testing.T) {
	var out testutil.Buffer
	n := newNode(t, nodeOptions{log: slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	const tries = 3 * logsample.DefaultBurst
	for range tries {
		n.must(t, http.StatusUnauthorized, req{method: "GET", path: "/api/conversations", auth: "Bearer not.a.jwt"})
		n.must(t, http.StatusForbidden, req{method: "POST", path: "/api/admin/jobs", auth: "Bearer wrong-admin-token-0123456789", body: `{}`})
		n.must(t, http.StatusNotFound, req{method: "GET", path: "/api/nothing"})
	}
	n.must(t, http.StatusOK, req{method: "GET", path: "/api/conversations", auth: n.user("u1")})
	for _, tc := range []struct{ reason, status string }{
		{"http_user_invalid", "status=401"}, {"http_admin_wrong", "status=403"}, {"http_no_route", "status=404"},
	} {
		var lines []string
		for _, l := range strings.Split(out.String(), "\n") {
			if strings.Contains(l, tc.status) {
				lines = append(lines, l)
			}
		}
		if len(lines) != logsample.DefaultBurst {
			t.Errorf("%d lines with %s for %d requests, want %d", len(lines), tc.status, tries, logsample.DefaultBurst)
			continue
		}
		if !strings.Contains(lines[0], "level=INFO") || !strings.Contains(lines[0], "reason="+tc.reason) {
			t.Errorf("line %q, want level INFO and reason %s", lines[0], tc.reason)
		}
	}
	if got := strings.Count(out.String(), "status=200"); got != 1 {
		t.Errorf("%d lines for the one accepted request", got)
	}
}
