package console_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/golang-jwt/jwt/v5"

	"inbox/internal/testutil"
)

// TestConsole drives the console in headless Chromium against a real
// inboxd: one server and one browser for all the steps, a browser context
// per user.
func TestConsole(t *testing.T) {
	app := httptest.NewServer(http.HandlerFunc(appPage)) // an allowed origin
	defer app.Close()
	other := httptest.NewServer(http.HandlerFunc(appPage)) // not allowed
	defer other.Close()
	srv := startServer(t, app.URL)
	b := newBrowser(t)

	t.Run("chat", func(t *testing.T) { testChat(t, srv, b) })
	t.Run("ops", func(t *testing.T) { testOps(t, srv, b) })
	t.Run("origins", func(t *testing.T) { testOrigins(t, srv, b, app.URL, other.URL) })
	t.Run("refused", func(t *testing.T) { testRefused(t, srv, b) })
	t.Run("refresh", func(t *testing.T) { testRefresh(t, srv, b) })
	t.Run("restart", func(t *testing.T) { testRestart(t, srv, b) })
}

// What alice and bob say (the screenshot in docs/ shows it).
const (
	aliceSays = "Hi Bob, is the kitchen job still on for Thursday?"
	bobSays   = "Yes, Thursday at 9. I'll bring the tiles."
)

// signIn opens the console at url and signs in as user with one click.
func signIn(p *page, url, user string) {
	p.t.Helper()
	p.do("open the console", chromedp.Navigate(url+"/"))
	p.do("sign in as "+user, chromedp.Click(chromedp.CSS(`button.user[data-user="`+user+`"]`)))
	p.until(user+"'s socket live", `document.querySelector('#conn')?.dataset.state === 'live'`)
}

// messageIDs are the ids of the messages the page shows, in order.
func messageIDs(p *page) []int64 {
	return eval[[]int64](p, `[...document.querySelectorAll('#messages li[data-id]')].map((li) => Number(li.dataset.id))`)
}

func shows(text string) string {
	return `[...document.querySelectorAll('#messages li[data-id] .bubble')].some((b) => b.textContent === ` + js(text) + `)`
}

func testChat(t *testing.T, srv *server, b *browser) {
	g := newGate(t, strings.TrimPrefix(srv.url, "http://"))
	alice := b.page(t, "alice", true)
	bob := b.page(t, "bob", true)
	signIn(alice, g.url(), "alice")
	signIn(bob, srv.url, "bob")

	// Each sees their own conversations: bob is not in conversation 2.
	alice.until("both conversations", `!!document.querySelector('[data-conv="1"]') && !!document.querySelector('[data-conv="2"]')`)
	bob.until("conversation 1", `!!document.querySelector('[data-conv="1"]')`)
	if eval[bool](bob, `!!document.querySelector('[data-conv="2"]')`) {
		t.Error("bob's list shows conversation 2, which he is not a member of")
	}
	// Presence: each sees the other online.
	alice.until("bob online", `!!document.querySelector('[data-conv="1"] .dot.online[data-user="bob"]')`)
	bob.until("alice online", `!!document.querySelector('[data-conv="1"] .dot.online[data-user="alice"]')`)

	// Alice writes; the message is hers once acknowledged.
	alice.click("open conversation 1", `[data-conv="1"]`)
	alice.do("write", chromedp.SendKeys(chromedp.CSS("#composer"), aliceSays+"\r"))
	alice.until("her message stored", shows(aliceSays)+` && !document.querySelector('#messages .pending')`)

	// Bob gets an unread badge, opens the conversation, reads it: alice sees "Seen".
	bob.until("unread badge", `document.querySelector('[data-conv="1"] .badge')?.textContent === '1'`)
	bob.until("preview", `document.querySelector('[data-conv="1"] .conv-last')?.textContent === `+js(aliceSays))
	bob.click("open conversation 1", `[data-conv="1"]`)
	bob.until("alice's message", shows(aliceSays))
	alice.until(`"Seen"`, `document.querySelector('#messages li.mine .seen')?.textContent === 'Seen'`)
	bob.until("badge cleared", `!document.querySelector('[data-conv="1"] .badge')`)

	// Bob types: alice sees it; he deletes what he typed: it clears.
	bob.do("type", chromedp.SendKeys(chromedp.CSS("#composer"), "Hi"))
	alice.until("typing shown", `document.querySelector('#typing').textContent === 'Bob Worker is typing…'`)
	bob.do("erase", chromedp.SendKeys(chromedp.CSS("#composer"), "\b\b"))
	alice.until("typing cleared", `document.querySelector('#typing').textContent === ''`)

	// And answers: the chat goes both ways.
	bob.do("answer", chromedp.SendKeys(chromedp.CSS("#composer"), bobSays+"\r"))
	alice.until("bob's answer", shows(bobSays))
	bob.until("his answer stored", shows(bobSays)+` && !document.querySelector('#messages .pending')`)

	// A refused message shows the server's reason, and can be discarded.
	long := strings.Repeat("x", 250) // the server's limit is 200
	alice.do("write too much", chromedp.SetValue(chromedp.CSS("#composer"), long), chromedp.SendKeys(chromedp.CSS("#composer"), "\r"))
	alice.until("the refusal", `document.querySelector('#messages .pending.failed .msg-error')?.textContent.includes('the limit is 200')`)
	alice.do("discard", chromedp.Click(chromedp.CSS(`#messages .pending.failed button:last-child`)))
	alice.until("discarded", `!document.querySelector('#messages .pending')`)

	testResume(t, srv, g, alice, bob)
	testLifecycle(alice, bob)

	// At phone width the list and the conversation take turns.
	bob.do("phone width", chromedp.EmulateViewport(390, 760))
	bob.until("only the conversation", `!document.querySelector('.convs').offsetParent && !!document.querySelector('.back').offsetParent`)
	if b.shots != "" {
		bob.screenshot("phone")
	}
	bob.do("back to the list", chromedp.Click(chromedp.CSS(".back")))
	bob.until("only the list", `!!document.querySelector('.convs').offsetParent && !document.querySelector('.thread').offsetParent`)
	bob.click("open conversation 1", `[data-conv="1"]`)
	bob.do("desktop width", chromedp.ResetViewport())

	if shot := os.Getenv("INBOX_CONSOLE_SCREENSHOT"); shot != "" {
		screenshotForDocs(t, srv, alice, bob, shot)
	}
}

// testResume cuts alice's socket from the server while her network is
// away (her page is served through a gate that refuses connections), bob
// writes meanwhile, and alice comes back: every message, once, in order.
func testResume(t *testing.T, srv *server, g *gate, alice, bob *page) {
	before := messageIDs(alice)
	synced := srv.metric(t, `inbox_frames_out_total{type="SYNCED"}`)
	g.close()
	var out struct{ Sockets int }
	srv.call(t, "POST", "/api/admin/users/alice/disconnect", srv.secrets.AdminToken, "", http.StatusOK, &out)
	if out.Sockets != 1 {
		t.Fatalf("disconnect closed %d of alice's sockets, want 1", out.Sockets)
	}
	alice.until("alice reconnecting", `document.querySelector('#conn').dataset.state === 'retrying'`)
	var sent []string
	for _, text := range []string{"The tiles came in today.", "Grey, as we said.", "See you on Thursday!"} {
		bob.do("write "+text, chromedp.SendKeys(chromedp.CSS("#composer"), text+"\r"))
		bob.until(text+" stored", shows(text)+` && !document.querySelector('#messages .pending')`)
		sent = append(sent, text)
	}
	if got := messageIDs(alice); len(got) != len(before) {
		t.Fatalf("alice got messages while offline: %v, had %v", got, before)
	}
	g.open()
	alice.until("alice live again", `document.querySelector('#conn').dataset.state === 'live'`)
	for _, text := range sent {
		alice.until(text, shows(text))
	}
	// She is reading the conversation: no unread count stays on it, though
	// the conversation list fetched after the resume may say otherwise.
	alice.until("no unread badge on the open conversation", `!document.querySelector('[data-conv="1"] .badge')`)
	// Two events a page: the three messages came in two pages at least.
	if pages := srv.metric(t, `inbox_frames_out_total{type="SYNCED"}`) - synced; pages < 2 {
		t.Errorf("alice's catch-up ended with %v SYNCED frames, want pages (2 or more)", pages)
	}
	got := messageIDs(alice)
	if len(got) != len(before)+len(sent) {
		t.Errorf("alice shows %d messages after resuming, want %d + %d: %v", len(got), len(before), len(sent), got)
	}
	for i := 1; i < len(got); i++ {
		if got[i] <= got[i-1] {
			t.Errorf("messages out of order or doubled: %v", got)
			break
		}
	}
}

// testLifecycle: alice edits a message and bob sees the new text marked
// edited; bob reacts and takes it back, alice sees the count come and go;
// alice deletes a message and bob sees it deleted, his list's preview
// back on the message before it.
func testLifecycle(alice, bob *page) {
	const draft, edited = "Grey tiles, then?", "Grey tiles, then? And white grout."
	alice.do("write", chromedp.SendKeys(chromedp.CSS("#composer"), draft+"\r"))
	alice.until("stored", shows(draft)+` && !document.querySelector('#messages .pending')`)
	mine := `[...document.querySelectorAll('#messages li.mine')].find((li) => li.querySelector('.bubble')?.textContent === ` + js(draft) + `)`
	click(alice, "edit her message", mine+`.querySelector('[data-action="edit"]')`)
	alice.do("new text", chromedp.SetValue(chromedp.CSS(`#messages .edit-form textarea`), edited),
		chromedp.Click(chromedp.CSS(`#messages .edit-form button[type="submit"]`)))
	bob.until("the edit", shows(edited)+` && [...document.querySelectorAll('#messages li[data-id]')].some((li) => li.querySelector('.bubble')?.textContent === `+
		js(edited)+` && li.querySelector('.edited'))`)
	alice.until("her edit", shows(edited))

	theirs := `[...document.querySelectorAll('#messages li.theirs')].find((li) => li.querySelector('.bubble')?.textContent === ` + js(edited) + `)`
	click(bob, "react", theirs+`.querySelector('[data-action="react"]')`)
	bob.do("👍", chromedp.Click(chromedp.CSS(`#messages .msg-actions.open .pick[data-emoji="👍"]`)))
	alice.until("bob's 👍", `document.querySelector('#messages li.mine .reaction[data-emoji="👍"]')?.textContent === '👍 1'`)
	if alice.b.shots != "" {
		alice.screenshot("reaction")
	}
	bob.until("his 👍 marked", `!!document.querySelector('#messages li.theirs .reaction.mine[data-emoji="👍"]')`)
	bob.do("take it back", chromedp.Click(chromedp.CSS(`#messages li.theirs .reaction.mine[data-emoji="👍"]`)))
	alice.until("no 👍", `!document.querySelector('#messages .reaction')`)

	const oops = "Oops, that was for another chat"
	alice.do("write", chromedp.SendKeys(chromedp.CSS("#composer"), oops+"\r"))
	alice.until("stored", shows(oops)+` && !document.querySelector('#messages .pending')`)
	bob.until("bob's preview", `document.querySelector('[data-conv="1"] .conv-last')?.textContent === `+js(oops))
	last := `[...document.querySelectorAll('#messages li.mine')].find((li) => li.querySelector('.bubble')?.textContent === ` + js(oops) + `)`
	click(alice, "delete it", last+`.querySelector('[data-action="delete"]')`)
	alice.do("for everyone", chromedp.Click(chromedp.CSS(`#messages [data-action="confirm-delete"]`)))
	bob.until("deleted for bob", `!(`+shows(oops)+`) && !!document.querySelector('#messages li.deleted .bubble.deleted')`)
	bob.until("preview back", `document.querySelector('[data-conv="1"] .conv-last')?.textContent !== `+js(oops))
	alice.until("deleted for alice", `!(`+shows(oops)+`)`)
}

// click clicks the element expr finds (a message's action, shown on hover).
func click(p *page, what, expr string) {
	p.t.Helper()
	if !eval[bool](p, `(() => { const el = `+expr+`; if (!el) return false; el.click(); return true })()`) {
		p.fail("%s: nothing to click", what)
	}
}

// screenshotForDocs saves alice's view, with a conversation going on, as
// docs/console.png (INBOX_CONSOLE_SCREENSHOT names the file).
func screenshotForDocs(t *testing.T, srv *server, alice, bob *page, path string) {
	carol := srv.token(t, "carol", "Carol Client")
	srv.call(t, "POST", "/api/conversations/2/messages", carol, `{"message":"Could you send the photos of the bathroom?"}`, http.StatusCreated, nil)
	alice.until("carol's unread", `document.querySelector('[data-conv="2"] .badge')?.textContent === '1'`)
	bob.do("type", chromedp.SendKeys(chromedp.CSS("#composer"), "Sure"))
	alice.until("typing shown", `document.querySelector('#typing').textContent !== ''`)
	alice.do("size", chromedp.EmulateViewport(1200, 720))
	png, err := chromedp.Run(alice.ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("console screenshot: %s", path)
}

func testOps(t *testing.T, srv *server, b *browser) {
	p := b.page(t, "operator", true)
	p.do("open /ops", chromedp.Navigate(srv.url+"/ops"))
	p.until("the token form", `!!document.querySelector('#admin-token')`)
	if eval[bool](p, `!!document.querySelector('.tiles')`) {
		t.Fatal("the operator view shows figures without an admin token")
	}

	p.do("a wrong token", chromedp.SendKeys(chromedp.CSS("#admin-token"), "not-the-token\r"))
	p.until("refused", `document.querySelector('.signin-status')?.textContent.includes('refused')`)
	if eval[bool](p, `!!document.querySelector('.tiles')`) {
		t.Fatal("the operator view shows figures for a wrong token")
	}

	p.do("the admin token", chromedp.SetValue(chromedp.CSS("#admin-token"), srv.secrets.AdminToken), chromedp.SendKeys(chromedp.CSS("#admin-token"), "\r"))
	p.until("the stream", `!!document.querySelector('tr[data-stream="INBOX"]')`)
	p.until("rates", `/^[0-9.,]+$/.test(document.querySelector('[data-tile="Appends/s"] .tile-value').textContent)`)
	events := func() string {
		return eval[string](p, `document.querySelector('tr[data-stream="INBOX"] td').textContent`)
	}
	before := events()
	bob := srv.token(t, "bob", "Bob Worker")
	srv.call(t, "POST", "/api/conversations/1/messages", bob, `{"message":"for the operator"}`, http.StatusCreated, nil)
	p.until("the new event counted", `document.querySelector('tr[data-stream="INBOX"] td').textContent !== `+js(before))
	for _, tile := range []string{"Open sockets", "Feed lag", "Feed delay", "Shed", "Projection lag", "Deliveries/s"} {
		p.until(tile, `!!document.querySelector('[data-tile="`+tile+`"] .tile-value')`)
	}
	if b.shots != "" {
		p.screenshot("ops")
	}
}

// appPage is the app of an allowed origin, in miniature: it reads the
// conversation list and the history from inboxd (the api query parameter)
// with the inbox_token cookie, and shows what it got or why not.
func appPage(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	fmt.Fprint(w, `<!doctype html><title>app</title><pre id="out">…</pre><script type="module">
const api = new URLSearchParams(location.search).get('api');
const out = document.getElementById('out');
try {
  const get = async (path) => {
    const r = await fetch(api + path, {credentials: 'include'});
    if (!r.ok) throw new Error('HTTP ' + r.status);
    return r.json();
  };
  const {conversations} = await get('/api/conversations');
  const {messages} = await get('/api/conversations/1/messages');
  out.textContent = 'conversations ' + conversations.map((c) => c.id).join(',') + '; history ' + messages.map((m) => m.message).reverse().join('|');
} catch (e) {
  out.textContent = 'blocked: ' + e.message;
}
</script>`)
}

func testOrigins(t *testing.T, srv *server, b *browser, allowed, other string) {
	cookie := func(token string) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
			_, err := chromedp.Call(ctx, network.SetCookie, network.SetCookieParams{
				Name: "inbox_token", Value: token, URL: srv.url, SameSite: network.CookieSameSiteLax,
			})
			return err
		})
	}
	alice := srv.token(t, "alice", "Alice Doe")

	p := b.page(t, "allowed origin", true)
	p.do("cookie and open the app", cookie(alice), chromedp.Navigate(allowed+"/?api="+srv.url))
	p.until("the app's answer", `document.querySelector('#out').textContent !== '…'`)
	got := eval[string](p, `document.querySelector('#out').textContent`)
	if !strings.HasPrefix(got, "conversations ") || !strings.Contains(got, "1") || !strings.Contains(got, "2") || !strings.Contains(got, aliceSays+"|"+bobSays) {
		t.Errorf("the app on an allowed origin got %q, want both conversations and the history", got)
	}

	// Another origin's page gets nothing (the browser reports the refused
	// CORS request on its console: this page is not strict).
	q := b.page(t, "other origin", false)
	q.do("cookie and open the page", cookie(alice), chromedp.Navigate(other+"/?api="+srv.url))
	q.until("the page's answer", `document.querySelector('#out').textContent !== '…'`)
	if got := eval[string](q, `document.querySelector('#out').textContent`); !strings.HasPrefix(got, "blocked:") {
		t.Errorf("a page on another origin got %q, want it blocked", got)
	}
}

// testRefused: carol signs in with the inbox_token cookie on the console's
// own origin; her token then expires and her socket is cut. The upgrade is
// refused (401), which a page cannot read: the console asks GET /api/session
// and shows why.
func testRefused(t *testing.T, srv *server, b *browser) {
	cookie := func(token string) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
			_, err := chromedp.Call(ctx, network.SetCookie, network.SetCookieParams{
				Name: "inbox_token", Value: token, URL: srv.url, SameSite: network.CookieSameSiteStrict,
			})
			return err
		})
	}
	p := b.page(t, "carol", true)
	p.do("cookie and open the console", cookie(srv.token(t, "carol", "Carol Client")), chromedp.Navigate(srv.url+"/"))
	p.do("continue with the cookie", chromedp.Click(chromedp.CSS(".signin-cookie button")))
	p.until("carol's socket live", `document.querySelector('#conn')?.dataset.state === 'live'`)
	p.until("her conversation", `!!document.querySelector('[data-conv="2"]')`)

	expired, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": "carol", "name": "Carol Client", "exp": time.Now().Add(-time.Hour).Unix(),
	}).SignedString([]byte(srv.secrets.JWTSecret))
	if err != nil {
		t.Fatal(err)
	}
	p.do("the cookie expires", cookie(expired))
	srv.call(t, "POST", "/api/admin/users/carol/disconnect", srv.secrets.AdminToken, "", http.StatusOK, nil)
	p.until("the reason shown", `document.querySelector('.signin-status')?.textContent.includes('token expired')`)
	if b.shots != "" {
		p.screenshot("refused")
	}
}

// testRefresh: a token pasted in that expires within the server's grace
// period gets TOKEN_EXPIRING at once; the console renews it (development
// sign-in) with a REFRESH and keeps the new token for its next socket.
func testRefresh(t *testing.T, srv *server, b *browser) {
	pasted := srv.token(t, "carol", "Carol Client") // one hour; warned 90 minutes ahead
	refreshed := srv.metric(t, `inbox_frames_out_total{type="REFRESHED"}`)
	p := b.page(t, "carol", true)
	p.do("open the console", chromedp.Navigate(srv.url+"/"))
	p.do("paste a token", chromedp.SetValue(chromedp.CSS("#token"), pasted), chromedp.SendKeys(chromedp.CSS("#token"), "\r"))
	p.until("carol's socket live", `document.querySelector('#conn')?.dataset.state === 'live'`)
	p.until("a renewed token", `(sessionStorage.getItem('inbox.token') ?? `+js(pasted)+`) !== `+js(pasted))
	renewed := eval[string](p, `sessionStorage.getItem('inbox.token')`)
	testutil.CheckFor(t, wait, 20*time.Millisecond, func() error {
		if srv.metric(t, `inbox_frames_out_total{type="REFRESHED"}`) <= refreshed {
			return errors.New("the server answered no REFRESH with REFRESHED")
		}
		return nil
	})
	var s struct {
		UserID string `json:"user_id"`
	}
	srv.call(t, "GET", "/api/session", renewed, "", http.StatusOK, &s)
	if s.UserID != "carol" {
		t.Errorf("the renewed token names %q, want carol", s.UserID)
	}
	p.do("reload", chromedp.Reload())
	p.until("live again with it", `document.querySelector('#conn')?.dataset.state === 'live'`)
}

// testRestart: the server stops and starts again; the page reconnects and
// catches up with what was sent after the restart, and is live again.
func testRestart(t *testing.T, srv *server, b *browser) {
	p := b.page(t, "alice", true)
	signIn(p, srv.url, "alice")
	p.click("open conversation 1", `[data-conv="1"]`)
	p.until("history", shows(aliceSays))
	before := len(messageIDs(p))
	srv.stop(t)
	p.until("alice reconnecting", `document.querySelector('#conn').dataset.state === 'retrying'`)
	srv.start(t)
	bob := srv.token(t, "bob", "Bob Worker")
	srv.call(t, "POST", "/api/conversations/1/messages", bob, `{"message":"after the restart"}`, http.StatusCreated, nil)
	p.until("the message sent after the restart", shows("after the restart"))
	p.until("live", `document.querySelector('#conn').dataset.state === 'live'`)
	if got := messageIDs(p); len(got) != before+1 {
		t.Errorf("alice shows %d messages, want %d + 1: %v", len(got), before, got)
	}
}

// TestConsolePartitions: against a server of 3 partitions the console
// resumes with a cursor (what it saw per partition): after a restart it
// shows what was sent in two partitions, each once, and is live.
func TestConsolePartitions(t *testing.T) {
	srv := startServerWith(t, 3)
	b := newBrowser(t)
	admin := srv.secrets.AdminToken
	// The demo's conversations 1 and 2 are in partition 1; 3 is in 2.
	srv.call(t, "POST", "/api/admin/conversations", admin, `{"id":3,"members":[{"user_id":"alice","role":"client"},{"user_id":"carol","role":"worker"}]}`, http.StatusCreated, nil)
	srv.call(t, "POST", "/api/conversations/1/messages", srv.token(t, "bob", "Bob Worker"), `{"message":"before the restart"}`, http.StatusCreated, nil)
	p := b.page(t, "alice", true)
	signIn(p, srv.url, "alice")
	p.click("open conversation 1", `[data-conv="1"]`)
	p.until("history", shows("before the restart"))
	before := len(messageIDs(p))
	srv.stop(t)
	p.until("alice reconnecting", `document.querySelector('#conn').dataset.state === 'retrying'`)
	srv.start(t)
	srv.call(t, "POST", "/api/conversations/1/messages", srv.token(t, "bob", "Bob Worker"), `{"message":"partition 1 after the restart"}`, http.StatusCreated, nil)
	srv.call(t, "POST", "/api/conversations/3/messages", srv.token(t, "carol", "Carol Client"), `{"message":"partition 2 after the restart"}`, http.StatusCreated, nil)
	p.until("the message of partition 1", shows("partition 1 after the restart"))
	p.until("the preview of partition 2", `document.querySelector('[data-conv="3"] .conv-last')?.textContent === "partition 2 after the restart"`)
	p.until("live", `document.querySelector('#conn').dataset.state === 'live'`)
	if got := messageIDs(p); len(got) != before+1 {
		t.Errorf("alice shows %d messages, want %d + 1: %v", len(got), before, got)
	}
	// Resumed from each partition's position: nothing the page had came
	// again (from the newest id alone, partition 2 was read from its start
	// and conversation 3's CONVERSATION_JOINED was sent once more).
	if n := framesOut(t, srv, "CONVERSATION_JOINED"); n != 0 {
		t.Errorf("the restarted server sent %v CONVERSATION_JOINED frames, want none: the console did not resume from a cursor", n)
	}
}

// framesOut is how many frames of type kind the server has sent since it started
// (inbox_frames_out_total).
func framesOut(t *testing.T, srv *server, kind string) float64 {
	t.Helper()
	r, err := http.NewRequest("GET", srv.url+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("Authorization", "Bearer "+srv.secrets.AdminToken)
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	prefix := `inbox_frames_out_total{type="` + kind + `"} `
	for line := range strings.SplitSeq(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, prefix); ok {
			var n float64
			fmt.Sscan(v, &n)
			return n
		}
	}
	return 0
}
