package wsedge

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/gobwas/ws"

	"inbox/internal/logsample"
	"inbox/internal/testutil"
	"inbox/internal/wstest"
)

// TestPlainGetOnSocketRouteAnswersJSON is the finding "a plain GET on a
// WebSocket route answers gobwas/ws's plain text": with a valid token it now
// answers 426 with the service's JSON error body (and Upgrade: websocket),
// without one 401 as a handshake would; another method 405 with Allow: GET.
func TestPlainGetOnSocketRouteAnswersJSON(t *testing.T) {
	n := newNode(t, nodeOptions{})
	n.create(t, 1, "alice")
	for _, path := range []string{"/ws/inbox/", "/ws/chat/1/", "/ws/inbox/?since=0"} {
		for _, token := range []string{"", n.token(t, "alice")} {
			for _, method := range []string{"GET", "POST"} {
				req, err := http.NewRequest(method, n.srv.URL+path, nil)
				if err != nil {
					t.Fatal(err)
				}
				if token != "" {
					req.Header.Set("Authorization", "Bearer "+token)
				}
				if method == "POST" { // a handshake in all but its method
					wstest.Handshake(req.Header)
				}
				resp, err := n.srv.Client().Do(req)
				if err != nil {
					t.Fatal(err)
				}
				var body struct{ Error, Code string }
				derr := json.NewDecoder(resp.Body).Decode(&body)
				resp.Body.Close()
				want, wantCode, header, value := http.StatusUpgradeRequired, "bad_request", "Upgrade", "websocket"
				switch {
				case method == "POST":
					want, wantCode, header, value = http.StatusMethodNotAllowed, "method_not_allowed", "Allow", "GET"
				case token == "": // the token is checked first
					want, wantCode, header, value = http.StatusUnauthorized, "unauthorized", "Cache-Control", "no-store"
				}
				switch {
				case derr != nil:
					t.Errorf("%s %s: HTTP %d with a body that is not JSON: %v", method, path, resp.StatusCode, derr)
				case resp.StatusCode != want || body.Code != wantCode || body.Error == "":
					t.Errorf("%s %s: HTTP %d %+v, want %d %s", method, path, resp.StatusCode, body, want, wantCode)
				case resp.Header.Get("Content-Type") != "application/json" || resp.Header.Get(header) != value:
					t.Errorf("%s %s: Content-Type %q, %s %q", method, path, resp.Header.Get("Content-Type"), header, resp.Header.Get(header))
				}
			}
		}
	}
}

// TestRefusalsAreLoggedAtInfoSampled is the finding "protocol violations and
// auth failures are logged at debug": they are logged at INFO, at most
// logsample.DefaultBurst lines per reason per interval, however many come.
func TestRefusalsAreLoggedAtInfoSampled(t *testing.T) {
	var out testutil.Buffer
	n := newNode(t, nodeOptions{cfg: Config{MaxSocketsPerUser: 1000},
		log: slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	const tries = 3 * logsample.DefaultBurst
	for range tries {
		checkHandshake(t, n, badCase{header: http.Header{"Authorization": {"Bearer not.a.jwt"}}, wantStatus: 401})
	}
	valid := n.token(t, "alice")
	for range tries {
		r, err := n.rawDial(t, valid, "/ws/inbox/", nil)
		if err != nil {
			t.Fatal(err)
		}
		r.writeRaw(ws.Header{Fin: true, OpCode: ws.OpText, Length: 2}, []byte("{}")) // unmasked
		if code, err := r.closeCode(); err != nil || code != ws.StatusProtocolError {
			t.Fatalf("closed with %d (%v)", code, err)
		}
	}
	for _, msg := range []string{"socket refused: authentication", "closing socket: violation"} {
		var lines []string
		for _, l := range strings.Split(out.String(), "\n") {
			if strings.Contains(l, `msg="`+msg+`"`) {
				lines = append(lines, l)
			}
		}
		if len(lines) != logsample.DefaultBurst {
			t.Errorf("%d lines %q for %d refusals, want %d:\n%s", len(lines), msg, tries, logsample.DefaultBurst, strings.Join(lines, "\n"))
			continue
		}
		if !strings.Contains(lines[0], "level=INFO") || !strings.Contains(lines[0], "reason=") {
			t.Errorf("line %q, want level INFO with a reason", lines[0])
		}
	}
}
