package console_test

// Harness of the browser tests: a real inboxd (node.Start on its own data
// folder, development secrets) and headless Chromium driven by chromedp, one
// browser context per user so that two pages are two users. Every page's
// console is collected: an exception, or an error the page logged, fails the
// test. On failure every page leaves a screenshot in the folder the log
// names.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"inbox/auth"
	"inbox/internal/testnode"
	"inbox/internal/testutil"
	"inbox/node"
	"inbox/wsedge"
)

// wait bounds every browser step.
const wait = 15 * time.Second

// chromium finds the browser: INBOX_CHROMIUM, or Debian's chromium on PATH.
// A machine without one skips the browser tests, except under CI=true,
// where that is a failure (testutil.RequireTool).
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("INBOX_CHROMIUM"); p != "" {
		return p
	}
	return testutil.RequireTool(t, "the console's tests drive headless Chromium (apt-get install chromium, or set INBOX_CHROMIUM)",
		"chromium", "chromium-browser", "google-chrome-stable", "google-chrome")
}

// browser is one headless Chromium with a fresh profile.
type browser struct {
	ctx   context.Context
	shots string // where failure screenshots go
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	path := chromium(t)
	profile, err := os.MkdirTemp("", "inbox-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.UserDataDir(profile),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		// Without these Chromium reaches for the network on its own, which a
		// closed machine refuses.
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.WindowSize(1280, 800),
	)
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, bcancel := chromedp.NewContext(actx)
	if err := chromedp.Do(bctx); err != nil {
		bcancel()
		acancel()
		os.RemoveAll(profile)
		t.Fatalf("start %s: %v", path, err)
	}
	t.Cleanup(func() {
		bcancel()
		acancel()
		// Chromium's children may still write there for a moment.
		for range 50 {
			if os.RemoveAll(profile) == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	return &browser{ctx: bctx, shots: os.Getenv("INBOX_BROWSER_SHOTS")}
}

// page is one tab in a browser context of its own (its own cookies and
// storage): one user.
type page struct {
	t      *testing.T
	b      *browser
	name   string
	ctx    context.Context
	strict bool // page errors fail the test

	mu       sync.Mutex
	problems []string
	log      []string
}

// page opens a tab in a new browser context. strict: anything the page logs
// at error level, or throws, fails the test at its end.
func (b *browser) page(t *testing.T, name string, strict bool) *page {
	t.Helper()
	ctx, cancel := chromedp.NewContext(b.ctx, chromedp.WithNewBrowserContext())
	p := &page{t: t, b: b, name: name, ctx: ctx, strict: strict}
	if err := chromedp.Do(ctx); err != nil {
		cancel()
		t.Fatalf("%s: open a tab: %v", name, err)
	}
	msgs := chromedp.Console(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m, err := range msgs {
			if err != nil {
				return
			}
			p.note(m)
		}
	}()
	t.Cleanup(func() {
		if t.Failed() {
			p.screenshot("failed")
		}
		if p.strict {
			p.checkConsole()
		}
		cancel()
		<-done
	})
	return p
}

// note records a console message; errors and exceptions are problems,
// except the browser's own report of a refused request or socket (source
// network), which the page expects and handles.
func (p *page) note(m chromedp.ConsoleMessage) {
	line := fmt.Sprintf("%s %s: %s", m.Type, m.Source, m.Text)
	if m.URL != "" {
		line += fmt.Sprintf(" (%s:%d)", m.URL, m.Line+1)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.log = append(p.log, line)
	bad := m.IsException() || m.Type == "error" || m.Type == "assert"
	if bad && m.Source == "network" {
		bad = false
	}
	if bad {
		p.problems = append(p.problems, line)
	}
}

// checkConsole fails the test if the page logged an error or threw.
func (p *page) checkConsole() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pr := range p.problems {
		p.t.Errorf("%s: console: %s", p.name, pr)
	}
	p.problems = nil
}

// do runs actions, failing the test (with a screenshot) on error.
func (p *page) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, wait)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		p.fail("%s: %v", what, err)
	}
}

// click clicks the element css selects, in the page's own JavaScript and
// polled until it is there: a list the page re-renders (a presence dot, a
// count) replaces its elements, so a node chromedp found can be gone by the
// time it clicks ("Could not find node with given id").
func (p *page) click(what, css string) {
	p.t.Helper()
	p.until(what, `(() => { const el = document.querySelector(`+js(css)+`); if (!el) return false; el.click(); return true })()`)
}

// until waits for the JavaScript expression to be true.
func (p *page) until(what, expr string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, wait)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(wait))); err != nil {
		p.fail("waiting for %s (%s): %v", what, expr, err)
	}
}

// eval evaluates a JavaScript expression into T.
func eval[T any](p *page, expr string) T {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, wait)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		p.fail("evaluate %s: %v", expr, err)
	}
	return v
}

func (p *page) fail(format string, args ...any) {
	p.t.Helper()
	p.mu.Lock()
	log := strings.Join(p.log, "\n  ")
	p.mu.Unlock()
	p.t.Fatalf("%s: %s\nconsole:\n  %s", p.name, fmt.Sprintf(format, args...), log)
}

// screenshot saves what the page shows and says where.
func (p *page) screenshot(label string) {
	dir := p.b.shots
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "inbox-console-shots-"); err != nil {
			p.t.Logf("screenshot: %v", err)
			return
		}
		p.b.shots = dir
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(p.ctx), 5*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		p.t.Logf("%s: screenshot: %v", p.name, err)
		return
	}
	name := strings.NewReplacer("/", "_", " ", "_").Replace(p.t.Name() + "-" + p.name + "-" + label + ".png")
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		p.t.Logf("%s: screenshot: %v", p.name, err)
		return
	}
	p.t.Logf("%s: screenshot %s", p.name, path)
}

// server is the inboxd under test: development secrets (one-click sign-in),
// its own origin and app allowed to use the cookie.
type server struct {
	cfg     node.Config
	node    *node.Node
	url     string // http://127.0.0.1:port
	secrets auth.DevSecrets
	minter  *auth.Minter
}

// startServer runs an inboxd on a port picked first, so that its own origin
// can be among allowedOrigins, with the demo users and conversations.
func startServer(t *testing.T, allowedOrigins ...string) *server {
	t.Helper()
	return startServerWith(t, 1, allowedOrigins...)
}

// startServerWith is startServer with the stream in partitions partitions.
func startServerWith(t *testing.T, partitions int, allowedOrigins ...string) *server {
	t.Helper()
	addr := testutil.FreeAddr(t)
	url := "http://" + addr
	cfg := testnode.Config(t)
	dir := cfg.DataDir
	cfg.HTTPAddr, cfg.NodeID, cfg.Partitions = addr, "console-test", partitions
	cfg.AllowedOrigins = append([]string{url}, allowedOrigins...)
	// Catch-ups of two events a page: a resume pages (SYNCED "more": true).
	// Tokens warned of 90 minutes before they expire: a one-hour token gets
	// TOKEN_EXPIRING at once.
	cfg.Edge = wsedge.Config{RatePerSecond: 1000, RateBurst: 1000, ResumePageEvents: 2, TokenGrace: 90 * time.Minute}
	cfg.Limits.MaxText = 200
	cfg.API.UserRate, cfg.API.UserBurst = 1000, 1000
	s := &server{cfg: cfg, url: url}
	s.start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := s.node.SeedDemo(ctx); err != nil {
		t.Fatalf("demo: %v", err)
	}
	secrets, err := auth.LoadDevSecrets(dir)
	if err != nil {
		t.Fatal(err)
	}
	minter, err := auth.NewMinter(auth.MinterConfig{Secret: secrets.JWTSecret})
	if err != nil {
		t.Fatal(err)
	}
	s.secrets, s.minter = secrets, minter
	return s
}

func (s *server) start(t *testing.T) {
	t.Helper()
	s.node = testnode.Start(t, s.cfg)
}

func (s *server) stop(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := s.node.Shutdown(ctx); err != nil {
		t.Logf("shut down inboxd: %v", err)
	}
}

func (s *server) token(t *testing.T, user, name string) string {
	t.Helper()
	tok, err := s.minter.Mint(user, name, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// call makes an HTTP request to the server and decodes a JSON answer into
// out (if not nil); a status other than want fails t.
func (s *server) call(t *testing.T, method, path, bearer, body string, want int, out any) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	r, err := http.NewRequest(method, s.url+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if bearer != "" {
		r.Header.Set("Authorization", "Bearer "+bearer)
	}
	if body != "" {
		r.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("%s %s: %d %s, want %d", method, path, resp.StatusCode, b, want)
	}
	if out != nil {
		if err := json.NewDecoder(bytes.NewReader(b)).Decode(out); err != nil {
			t.Fatalf("%s %s: %v in %s", method, path, err, b)
		}
	}
}

// js quotes s as a JavaScript string literal.
func js(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// gate is a TCP proxy in front of the server. Closed, it refuses new
// connections as a network that went away would (open ones carry on), so a
// page stays away while the test acts.
type gate struct {
	ln     net.Listener
	target string
	shut   atomic.Bool
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

func newGate(t *testing.T, target string) *gate {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &gate{ln: ln, target: target, conns: make(map[net.Conn]struct{})}
	g.wg.Go(g.accept)
	t.Cleanup(func() {
		ln.Close()
		g.mu.Lock()
		for c := range g.conns {
			c.Close()
		}
		g.mu.Unlock()
		g.wg.Wait()
	})
	return g
}

func (g *gate) url() string { return "http://" + g.ln.Addr().String() }

// close refuses new connections until open.
func (g *gate) close() { g.shut.Store(true) }
func (g *gate) open()  { g.shut.Store(false) }

func (g *gate) accept() {
	for {
		c, err := g.ln.Accept()
		if err != nil {
			return
		}
		if g.shut.Load() {
			c.Close()
			continue
		}
		g.wg.Go(func() { g.pipe(c) })
	}
}

func (g *gate) pipe(c net.Conn) {
	defer c.Close()
	d, err := net.Dial("tcp", g.target)
	if err != nil {
		return
	}
	defer d.Close()
	if !g.track(c, d) {
		return
	}
	defer g.untrack(c, d)
	done := make(chan struct{}, 2)
	go func() { io.Copy(d, c); done <- struct{}{} }()
	go func() { io.Copy(c, d); done <- struct{}{} }()
	<-done // one side ended: end both
	c.Close()
	d.Close()
	<-done
}

func (g *gate) track(cs ...net.Conn) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.conns == nil {
		return false
	}
	for _, c := range cs {
		g.conns[c] = struct{}{}
	}
	return true
}

func (g *gate) untrack(cs ...net.Conn) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, c := range cs {
		delete(g.conns, c)
	}
}

// metric reads one sample of the server's /metrics ("name{labels}").
func (s *server) metric(t *testing.T, sample string) float64 {
	t.Helper()
	resp, err := http.Get(s.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", line, err)
			}
			return f
		}
	}
	return 0
}
