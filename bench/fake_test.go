package bench

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/golang-jwt/jwt/v5"

	"inbox/internal/testutil"
)

// fakeInbox is a minimal stand-in for inboxd speaking the documented
// contract: admin conversations, /metrics, and /ws/inbox/ delivering each
// message (with ACK) to every member. It exercises the bench's plumbing
// without the real server.
type fakeInbox struct {
	secret, admin string

	mu      sync.Mutex // orders appends and fan-out
	nextID  int64
	seq     int64
	refuse  func(text string) bool // messages it holds are refused (shed) with unavailable
	stored  atomic.Int64
	members map[int64][]string
	conns   map[string]*fakeConn
	open    atomic.Int64
	created atomic.Int64
}

type fakeConn struct {
	mu   sync.Mutex
	conn net.Conn
}

func (c *fakeConn) send(v any) {
	b, _ := json.Marshal(v)
	c.mu.Lock()
	defer c.mu.Unlock()
	_ = wsutil.WriteServerText(c.conn, b)
}

func newFakeInbox(t *testing.T) (*fakeInbox, *httptest.Server) {
	t.Helper()
	f := &fakeInbox{secret: "bench-fake-secret-0123456789abcdef", admin: "bench-fake-admin-token-0123456789", nextID: 1000, members: map[int64][]string{}, conns: map[string]*fakeConn{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/admin/conversations", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+f.admin {
			http.Error(w, `{"error":"no","code":"unauthorized"}`, http.StatusUnauthorized)
			return
		}
		var body struct {
			ID      int64 `json:"id"`
			Members []struct {
				UserID string `json:"user_id"`
			} `json:"members"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil || len(body.Members) == 0 {
			http.Error(w, `{"error":"bad","code":"bad_request"}`, http.StatusBadRequest)
			return
		}
		f.mu.Lock()
		id := body.ID
		if id == 0 {
			f.nextID++
			id = f.nextID
		}
		if _, ok := f.members[id]; ok {
			f.mu.Unlock()
			http.Error(w, `{"error":"exists","code":"conflict"}`, http.StatusConflict)
			return
		}
		for _, m := range body.Members {
			f.members[id] = append(f.members[id], m.UserID)
		}
		f.mu.Unlock()
		f.created.Add(1)
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"id":%d}`, id)
	})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		n := f.open.Load()
		// A millisecond of CPU per message stored.
		fmt.Fprintf(w, "# HELP process_resident_memory_bytes x\nprocess_resident_memory_bytes %d\nprocess_cpu_seconds_total %g\ngo_goroutines %d\ninbox_open_sockets %d\n",
			1e8+n*1000, 1.5+float64(f.stored.Load())/1000, 10+n, n)
	})
	mux.HandleFunc("GET /ws/inbox/", func(w http.ResponseWriter, r *http.Request) {
		tok, err := jwt.Parse(r.URL.Query().Get("token"), func(*jwt.Token) (any, error) { return []byte(f.secret), nil },
			jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired())
		if err != nil {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		user, _ := tok.Claims.GetSubject()
		conn, _, _, err := ws.UpgradeHTTP(r, w)
		if err != nil {
			return
		}
		c := &fakeConn{conn: conn}
		f.mu.Lock()
		f.conns[user] = c
		f.mu.Unlock()
		f.open.Add(1)
		go func() {
			defer func() {
				f.open.Add(-1)
				f.mu.Lock()
				delete(f.conns, user)
				f.mu.Unlock()
				conn.Close()
			}()
			for {
				data, op, err := wsutil.ReadClientData(conn)
				if err != nil {
					return
				}
				if op != ws.OpText {
					continue
				}
				f.handle(c, user, data)
			}
		}()
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return f, srv
}

func (f *fakeInbox) handle(c *fakeConn, user string, data []byte) {
	var in struct {
		ConversationID int64  `json:"conversation_id"`
		Message        string `json:"message"`
		Type           string `json:"type"`
		ClientMsgID    string `json:"client_msg_id"`
	}
	if err := json.Unmarshal(data, &in); err != nil {
		c.send(map[string]any{"type": "ERROR", "code": "bad_request", "error": err.Error()})
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	members := f.members[in.ConversationID]
	if !contains(members, user) {
		c.send(map[string]any{"type": "ERROR", "code": "forbidden", "client_msg_id": in.ClientMsgID})
		return
	}
	if f.refuse != nil && f.refuse(in.Message) {
		c.send(map[string]any{"type": "ERROR", "code": "unavailable", "error": "server busy", "client_msg_id": in.ClientMsgID, "retry_after_ms": 100})
		return
	}
	f.seq++
	f.stored.Add(1)
	c.send(map[string]any{"type": "ACK", "client_msg_id": in.ClientMsgID, "message_id": f.seq, "seq": f.seq})
	msg := map[string]any{"id": f.seq, "conversation_id": in.ConversationID, "sender_id": user, "message": in.Message,
		"type": "TEXT", "message_id": f.seq, "seq": f.seq, "client_msg_id": in.ClientMsgID}
	for _, m := range members {
		if mc := f.conns[m]; mc != nil {
			mc.send(msg)
		}
	}
}

func (f *fakeInbox) setRefuse(refuse func(text string) bool) {
	f.mu.Lock()
	f.refuse = refuse
	f.mu.Unlock()
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func writeDevSecrets(t *testing.T, secret, admin string) string {
	t.Helper()
	dir := t.TempDir()
	data := fmt.Sprintf(`{"jwt_secret":%q,"admin_token":%q}`, secret, admin)
	if err := os.WriteFile(filepath.Join(dir, "dev-secrets.json"), []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestRunAgainstFake(t *testing.T) {
	f, srv := newFakeInbox(t)
	dir := writeDevSecrets(t, f.secret, f.admin)

	t.Run("fanout", func(t *testing.T) {
		rep, err := Run(t.Context(), Config{
			URL: srv.URL, Mode: ModeFanout, Users: 20, Rate: 400, Duration: 1e9, Warmup: 2e8,
			Settle: 1e8, Drain: 5e9, DataDir: dir, Seed: 1,
			// Pass judges loss and order here, not speed: a loaded machine
			// (or -race) can push the p99 of a correct run past the default
			// 50 ms, and make the bench send late.
			RampP99: time.Minute, keepUp: 1e-9,
		})
		if err != nil {
			t.Fatal(err)
		}
		s := rep.Fanout
		if s == nil || s.Sent < 300 || s.Lost != 0 || s.Duplicated != 0 || s.OutOfOrder != 0 || s.Acked != s.Sent ||
			s.Expected != 2*s.Sent || s.Delivered != s.Expected || s.Unknown != 0 || !s.Pass {
			t.Fatalf("fanout step = %+v", s)
		}
		if s.Latency.Count == 0 || s.Latency.P99 <= 0 {
			t.Fatalf("latency %+v", s.Latency)
		}
		// The fake spends 1 ms per message stored, and each is delivered twice.
		if s.ServerCPUSeconds != round3(float64(s.Sent)/1000) || s.ServerCPUPerDelivery != 500 || s.BenchCPUSeconds <= 0 || s.BenchCPUPerDelivery <= 0 {
			t.Fatalf("server cpu %v s, %v µs per delivery; bench %v s, %v µs per delivery",
				s.ServerCPUSeconds, s.ServerCPUPerDelivery, s.BenchCPUSeconds, s.BenchCPUPerDelivery)
		}
		if rep.Sockets != 20 || rep.Conversations != 10 || rep.AliveAtEnd != 20 || len(rep.Disconnects) != 0 {
			t.Fatalf("report = %+v", rep)
		}
		var out strings.Builder
		if err := rep.WriteTable(&out); err != nil || !strings.Contains(out.String(), "delivered") {
			t.Fatalf("table: %v\n%s", err, out.String())
		}
		out.Reset()
		if err := rep.WriteJSON(&out); err != nil || strings.Count(out.String(), "\n") != 1 || !strings.Contains(out.String(), `"lost":0`) {
			t.Fatalf("json: %v\n%s", err, out.String())
		}
	})

	t.Run("ramp", func(t *testing.T) {
		// The ramp climbs while steps pass and stops at the first that
		// fails: here the fake refuses every message of the second step. A
		// step is judged on loss and refusals, not speed (keepUp, RampP99),
		// which a loaded machine decides.
		f.setRefuse(func(text string) bool { return strings.HasPrefix(text, "b:2:") })
		defer f.setRefuse(nil)
		rep, err := Run(t.Context(), Config{
			URL: srv.URL, Mode: ModeFanout, Conversations: 5, Ramp: []float64{100, 200, 300}, Duration: 3e8,
			Settle: 1e7, DataDir: dir, RampP99: time.Minute, keepUp: 1e-9,
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Ramp) != 2 || rep.MaxRateOK != 100 || rep.Users != 10 || rep.Fanout == nil || rep.Fanout.RateTarget != 100 {
			t.Fatalf("ramp = %+v, max %v", rep.Ramp, rep.MaxRateOK)
		}
		first, second := rep.Ramp[0], rep.Ramp[1]
		if !first.Pass || first.Lost != 0 || first.Delivered != 2*first.Sent {
			t.Fatalf("first step = %+v", first)
		}
		if second.Pass || second.Errors["unavailable"] != second.Sent || second.Refused != second.Sent || second.Expected != 0 || !strings.Contains(second.Fail, "refused") {
			t.Fatalf("second step = %+v", second)
		}
	})

	t.Run("overload", func(t *testing.T) {
		// The fake sheds every other message of the overload (step 1) and
		// none of the recovery (step 2).
		var n atomic.Int64
		f.setRefuse(func(text string) bool { return strings.HasPrefix(text, "b:1:") && n.Add(1)%2 == 0 })
		defer f.setRefuse(nil)
		rep, err := Run(t.Context(), Config{
			URL: srv.URL, Mode: ModeOverload, Conversations: 5, Rate: 400, Duration: 5e8, Warmup: 1e8,
			RecoverRate: 200, RecoverAfter: 1e8, RecoverFor: 3e8, Settle: 1e7, DataDir: dir,
			// Correctness is judged here, not speed (see fanout).
			RampP99: time.Minute, OverloadP99: time.Minute, keepUp: 1e-9,
		})
		if err != nil {
			t.Fatal(err)
		}
		o := rep.Overload
		if o == nil || !o.Pass || o.Sent < 100 || o.Shed < o.Sent/3 || o.Accepted+o.Shed != o.Sent || o.ShedByCode["unavailable"] != o.Shed ||
			o.Unanswered != 0 || o.AcceptedLost != 0 || o.ErrorsWithoutID != 0 || o.Recovery.Acked != o.Recovery.Sent || o.RecoveryShed != 0 || o.Note != "" {
			t.Fatalf("overload = %+v", o)
		}
		var out strings.Builder
		if err := rep.WriteTable(&out); err != nil || !strings.Contains(out.String(), "overload run: ok") {
			t.Fatalf("table: %v\n%s", err, out.String())
		}
		// A server that sheds nothing passes too, with a note saying so.
		f.setRefuse(nil)
		rep, err = Run(t.Context(), Config{
			URL: srv.URL, Mode: ModeOverload, Conversations: 5, Rate: 200, Duration: 3e8, RecoverAfter: 1e8, RecoverFor: 2e8,
			Settle: 1e7, DataDir: dir, RampP99: time.Minute, OverloadP99: time.Minute, keepUp: 1e-9,
		})
		if err != nil || rep.Overload == nil || !rep.Overload.Pass || rep.Overload.Note == "" {
			t.Fatalf("overload without shedding: %v %+v", err, rep.Overload)
		}
	})

	t.Run("idle", func(t *testing.T) {
		before := f.created.Load()
		rep, err := Run(t.Context(), Config{
			URL: srv.URL, Mode: ModeIdle, Users: 50, ConvsPerUser: 3, Settle: 1e8, DataDir: dir, IDBase: 500000,
		})
		if err != nil {
			t.Fatal(err)
		}
		if got := f.created.Load() - before; got != 75 {
			t.Fatalf("created %d conversations, want 75", got)
		}
		i := rep.Idle
		if i == nil || i.RSSPerSocket != 1000 || i.GoroutinesPerSock != 1 || i.ServerOpenSockets != 50 || rep.Sockets != 50 {
			t.Fatalf("idle = %+v", i)
		}
		testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
			if n := f.open.Load(); n != 0 {
				return fmt.Errorf("%d sockets still open", n)
			}
			return nil
		})
	})

	t.Run("id collision", func(t *testing.T) {
		_, err := Run(t.Context(), Config{URL: srv.URL, Mode: ModeIdle, Users: 4, ConvsPerUser: 1, DataDir: dir, IDBase: 500000})
		if err == nil || !strings.Contains(err.Error(), "--id-base") {
			t.Fatalf("err = %v", err)
		}
	})

	t.Run("bad token", func(t *testing.T) {
		_, err := Run(t.Context(), Config{URL: srv.URL, Mode: ModeIdle, Users: 3, ConvsPerUser: 0, DataDir: dir, JWTSecret: "a-wrong-secret-of-enough-length-0123", AdminToken: f.admin})
		if err == nil || !strings.Contains(err.Error(), "401") {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestRunRefuses(t *testing.T) {
	dir := writeDevSecrets(t, "bench-refuses-secret-0123456789abcdef", "bench-refuses-admin-0123456789")
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"remote", Config{URL: "http://10.1.2.3:8000"}, "loopback"},
		{"mode", Config{Mode: "storm"}, "--mode"},
		{"too many sockets", Config{Users: 1 << 30}, "open files"},
		{"rate", Config{Rate: -1}, "--msg-rate"},
		{"unreachable", Config{URL: "http://127.0.0.1:1", DataDir: dir}, "not reachable"},
		{"no secrets", Config{URL: "http://127.0.0.1:1", DataDir: t.TempDir()}, "development secrets"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Run(t.Context(), tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Run = %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}
