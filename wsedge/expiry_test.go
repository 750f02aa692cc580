package wsedge

import (
	"fmt"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"

	"inbox/chat"
	"inbox/internal/testutil"
	"inbox/internal/wstest"
)

// tokenFor mints a token for user that expires in ttl and returns it with
// its exp as the server reads it (JWT times are whole seconds).
func (n *node) tokenFor(t *testing.T, user string, ttl time.Duration) (string, time.Time) {
	t.Helper()
	tok, err := n.minter.Mint(user, user, ttl)
	if err != nil {
		t.Fatal(err)
	}
	claims, err := n.hub.authn.Verify(tok)
	if err != nil {
		t.Fatal(err)
	}
	return tok, claims.ExpiresAt
}

// TestTokenExpiryClosesSocket (issue 15, item 10): a socket used to keep
// receiving after its token expired. It is warned TokenGrace before the
// expiry (TOKEN_EXPIRING), keeps working until the expiry plus TokenGrace,
// and is then closed with 4001; a REFRESH with another user's token changes
// nothing.
func TestTokenExpiryClosesSocket(t *testing.T) { eachReader(t, testTokenExpiryClosesSocket) }

func testTokenExpiryClosesSocket(t *testing.T, goroutines bool) {
	const grace = 300 * time.Millisecond
	n := newNode(t, nodeOptions{cfg: Config{TokenGrace: grace, goroutineReaders: goroutines}})
	n.create(t, 1, "alice", "bob")
	tok, exp := n.tokenFor(t, "bob", 2*time.Second)
	b, _, err := n.tryDial(t, tok, "/ws/inbox/")
	if err != nil {
		t.Fatal(err)
	}
	b.Ping()
	b.Send(map[string]any{"type": "REFRESH", "token": n.token(t, "alice")})
	if e := b.Expect("ERROR"); e["code"] != chat.CodeForbidden {
		t.Fatalf("REFRESH with alice's token on bob's socket: %v", e)
	}

	w := b.Expect("TOKEN_EXPIRING")
	if early := time.Until(exp.Add(-grace)); early > 50*time.Millisecond {
		t.Fatalf("warned %v before the token's expiry less the grace", early)
	}
	if w["expires_at"] != exp.UTC().Format(expiresAtLayout) || w["close_at"] != exp.Add(grace).UTC().Format(expiresAtLayout) {
		t.Fatalf("warning %v, want expires_at %v and close_at %v", w, exp, exp.Add(grace))
	}
	live := n.send(t, "alice", 1, "still delivered during the grace")
	if f := b.Expect(wstest.Message); uint64(testutil.Int(t, f, "seq")) != live {
		t.Fatalf("during the grace: %v", f)
	}
	if code := b.CloseStatus(); code != websocket.StatusCode(CloseTokenExpired) {
		t.Fatalf("closed with %v, want 4001", code)
	}
	if early := time.Until(exp.Add(grace)); early > 50*time.Millisecond {
		t.Fatalf("closed %v before the token's expiry plus the grace", early)
	}
}

// TestRefreshKeepsSocketAlive (issue 15, item 10): a REFRESH with a fresh
// token of the same user is confirmed (REFRESHED) and the socket outlives
// the old token; a token that does not verify is refused unauthorized.
func TestRefreshKeepsSocketAlive(t *testing.T) {
	const grace = 300 * time.Millisecond
	n := newNode(t, nodeOptions{cfg: Config{TokenGrace: grace}})
	n.create(t, 1, "alice", "bob")
	tok, exp := n.tokenFor(t, "bob", 3*time.Second)
	b, _, err := n.tryDial(t, tok, "/ws/chat/1/")
	if err != nil {
		t.Fatal(err)
	}
	b.Ping()
	expired := signToken(t, jwt.SigningMethodHS256, []byte(testSecret), jwt.MapClaims{"sub": "bob", "exp": time.Now().Add(-time.Hour).Unix()})
	for _, bad := range []string{expired, "not a token", tok + "x"} {
		b.Send(map[string]any{"type": "REFRESH", "token": bad})
		if e := b.Expect("ERROR"); e["code"] != "unauthorized" {
			t.Fatalf("REFRESH with %.20q: %v", bad, e)
		}
	}
	fresh, freshExp := n.tokenFor(t, "bob", time.Hour)
	b.Send(map[string]any{"type": "REFRESH", "token": fresh})
	if r := b.Expect("REFRESHED"); r["expires_at"] != freshExp.UTC().Format(expiresAtLayout) {
		t.Fatalf("refreshed: %v, want expires_at %v", r, freshExp)
	}
	// Past the old token's close time the socket still answers and receives.
	testutil.CheckFor(t, frameWait, 100*time.Millisecond, func() error {
		b.Ping()
		if until := time.Until(exp.Add(grace + 200*time.Millisecond)); until > 0 {
			return fmt.Errorf("the old token's close time is %v away", until)
		}
		return nil
	})
	live := n.send(t, "alice", 1, "after the old token")
	if f := b.Expect(wstest.Message); uint64(testutil.Int(t, f, "seq")) != live {
		t.Fatalf("after the old token's close time: %v", f)
	}
}
