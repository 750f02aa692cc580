//go:build unix

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"inbox/internal/testutil"
	"inbox/internal/wstest"
)

// The addresses README.md shows; the tests run on free ports and put their own
// addresses in their place.
const (
	readmeHTTP = "127.0.0.1:8000"
	readmeNATS = "nats://127.0.0.1:4222"
)

const (
	buildWait = 5 * time.Minute
	startWait = 90 * time.Second
	stopWait  = 30 * time.Second
	frameWait = 15 * time.Second
)

var (
	buildOnce sync.Once
	buildDir  string
	buildBins binaries
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// binaries are the built commands and the module root they were built from.
type binaries struct{ inboxd, inbox, root string }

// build compiles cmd/inboxd and cmd/inbox once per test binary run, from the
// module root named by `go env GOMOD`, into a temporary folder.
func build(t *testing.T) binaries {
	t.Helper()
	if testing.Short() {
		t.Skip("builds inboxd and inbox and runs them as processes; skipped with -short")
	}
	buildOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), buildWait)
		defer cancel()
		out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
		if err != nil {
			buildErr = fmt.Errorf("go env GOMOD: %w", err)
			return
		}
		gomod := strings.TrimSpace(string(out))
		if gomod == "" || gomod == os.DevNull {
			buildErr = errors.New("go env GOMOD: not inside the module")
			return
		}
		if buildDir, err = os.MkdirTemp("", "inbox-e2e-"); err != nil {
			buildErr = err
			return
		}
		b := binaries{inboxd: filepath.Join(buildDir, "inboxd"), inbox: filepath.Join(buildDir, "inbox"), root: filepath.Dir(gomod)}
		for name, bin := range map[string]string{"inboxd": b.inboxd, "inbox": b.inbox} {
			cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/"+name)
			cmd.Dir = b.root
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("go build ./cmd/%s: %v\n%s", name, err, out)
				return
			}
		}
		buildBins = b
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildBins
}

// childEnv is the test's environment without INBOX_* variables, so that a
// developer's settings do not change what the child processes do.
func childEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "INBOX_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// inboxd is a running inboxd child process.
type inboxd struct {
	t        *testing.T
	cmd      *exec.Cmd
	bin      string
	args     []string
	dir      string // working directory; the data folder is dir/data, as ./data in the README
	httpAddr string
	natsURL  string
	stdout   testutil.Buffer
	stderr   testutil.Buffer
	done     chan struct{}
	waitErr  error
}

// startInboxd runs the built inboxd in a fresh working directory on free
// loopback ports with extra flags, and waits until /readyz answers 200 (and,
// with --demo, until the demo is printed). The process is killed at cleanup
// if it still runs.
func startInboxd(t *testing.T, bins binaries, extra ...string) *inboxd {
	t.Helper()
	work := t.TempDir()
	natsAddr := testutil.FreeAddr(t)
	p := &inboxd{t: t, bin: bins.inboxd, dir: work, httpAddr: testutil.FreeAddr(t), natsURL: "nats://" + natsAddr}
	p.args = append([]string{"--data", filepath.Join(work, "data"), "--http-addr", p.httpAddr, "--nats-listen", natsAddr}, extra...)
	p.run()
	return p
}

// restart runs inboxd again, once p has exited, in the same folder with the
// same flags and addresses.
func (p *inboxd) restart() *inboxd {
	p.t.Helper()
	<-p.done
	q := &inboxd{t: p.t, bin: p.bin, args: p.args, dir: p.dir, httpAddr: p.httpAddr, natsURL: p.natsURL}
	q.run()
	return q
}

// run starts p's process and waits until it is ready.
func (p *inboxd) run() {
	t := p.t
	t.Helper()
	p.done = make(chan struct{})
	p.cmd = exec.Command(p.bin, p.args...)
	p.cmd.Dir = p.dir
	p.cmd.Env = childEnv()
	p.cmd.Stdout = &p.stdout
	p.cmd.Stderr = &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start inboxd: %v", err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill() // only the child this test started, by its PID
			<-p.done
		}
		if t.Failed() {
			t.Logf("inboxd %v\nstdout:\n%s\nstderr:\n%s", p.args, p.stdout.String(), p.stderr.String())
		}
	})

	demo := false
	for _, a := range p.args {
		demo = demo || a == "--demo"
	}
	p.waitFor(startWait, "inboxd ready", func() error {
		resp, err := http.Get("http://" + p.httpAddr + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET /readyz: %s", resp.Status)
		}
		if demo && !strings.Contains(p.stdout.String(), "Inspect the stream") { // "stream:", or "streams (…):"
			return errors.New("demo not printed yet")
		}
		return nil
	})
}

// waitFor polls f until it returns nil, failing the test after d or as soon
// as inboxd exits.
func (p *inboxd) waitFor(d time.Duration, what string, f func() error) {
	p.t.Helper()
	testutil.CheckFor(p.t, d, 50*time.Millisecond, func() error {
		err := f()
		if err == nil {
			return nil
		}
		select {
		case <-p.done:
			p.t.Fatalf("waiting for %s: inboxd exited (%v); stderr:\n%s", what, p.waitErr, p.stderr.String())
		default:
		}
		return fmt.Errorf("waiting for %s: %w", what, err)
	})
}

// terminate sends SIGTERM to inboxd (by its PID) and returns its exit code.
func (p *inboxd) terminate() int {
	p.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		p.t.Fatalf("SIGTERM inboxd: %v", err)
	}
	select {
	case <-p.done:
	case <-time.After(stopWait):
		p.t.Fatalf("inboxd still running %s after SIGTERM", stopWait)
	}
	return p.cmd.ProcessState.ExitCode()
}

// readme is README.md and its fenced blocks.
type readme struct {
	text   string
	blocks []fence
}

type fence struct{ lang, body string }

var fenceRE = regexp.MustCompile("(?ms)^```([a-z]*)\n(.*?)^```")

func loadREADME(t *testing.T, root string) readme {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	r := readme{text: string(data)}
	for _, m := range fenceRE.FindAllStringSubmatch(r.text, -1) {
		r.blocks = append(r.blocks, fence{lang: m[1], body: m[2]})
	}
	return r
}

// commands are the command lines of the README's sh blocks that start with
// prefix, in order, with backslash-newline continuations joined.
func (r readme) commands(prefix string) []string {
	var out []string
	for _, b := range r.blocks {
		if b.lang != "sh" {
			continue
		}
		for _, line := range strings.Split(strings.ReplaceAll(b.body, "\\\n", " "), "\n") {
			line = strings.Join(strings.Fields(line), " ")
			if strings.HasPrefix(line, prefix) {
				out = append(out, line)
			}
		}
	}
	return out
}

// block is the body of the first fenced block of lang that starts with prefix.
func (r readme) block(t *testing.T, lang, prefix string) string {
	t.Helper()
	for _, b := range r.blocks {
		if b.lang == lang && strings.HasPrefix(b.body, prefix) {
			return b.body
		}
	}
	t.Fatalf("README.md has no ```%s block starting with %q", lang, prefix)
	return ""
}

// mustContain fails unless the README shows s verbatim.
func (r readme) mustContain(t *testing.T, s string) {
	t.Helper()
	if !strings.Contains(r.text, s) {
		t.Errorf("README.md does not contain %q", s)
	}
}

// shellWords splits a command line the way sh does for the simple commands the
// README shows: 'single' and "double" quotes, backslash escapes, $VAR and
// ${VAR} from vars (an unknown one is an error), and a comment. A pipe ends
// the command; what follows it is returned as pipe.
func shellWords(line string, vars map[string]string) (words, pipe []string, err error) {
	var (
		cur    strings.Builder
		inWord bool
		rs     = []rune(line)
	)
	flush := func() {
		if inWord {
			words = append(words, cur.String())
		}
		cur.Reset()
		inWord = false
	}
	expand := func(i int) (int, error) { // rs[i] == '$'
		j := i + 1
		var name string
		switch {
		case j < len(rs) && rs[j] == '{':
			end := runeIndex(rs, j, '}')
			if end < 0 {
				return 0, fmt.Errorf("unclosed ${ in %q", line)
			}
			name = string(rs[j+1 : end])
			j = end + 1
		case j < len(rs) && rs[j] == '(':
			return 0, fmt.Errorf("command substitution in %q is not something the test runs", line)
		default:
			for j < len(rs) && (rs[j] == '_' || rs[j] >= 'A' && rs[j] <= 'Z' || rs[j] >= 'a' && rs[j] <= 'z' || rs[j] >= '0' && rs[j] <= '9') {
				j++
			}
			name = string(rs[i+1 : j])
		}
		v, ok := vars[name]
		if !ok {
			return 0, fmt.Errorf("$%s in %q is not set by the README", name, line)
		}
		cur.WriteString(v)
		return j, nil
	}
	for i := 0; i < len(rs); {
		c := rs[i]
		switch {
		case c == ' ' || c == '\t':
			flush()
			i++
		case c == '#' && !inWord:
			flush()
			return words, pipe, nil
		case c == '|':
			flush()
			pipe, _, err = shellWords(string(rs[i+1:]), vars)
			return words, pipe, err
		case c == '\\' && i+1 < len(rs):
			cur.WriteRune(rs[i+1])
			inWord = true
			i += 2
		case c == '\'':
			end := runeIndex(rs, i+1, '\'')
			if end < 0 {
				return nil, nil, fmt.Errorf("unclosed ' in %q", line)
			}
			cur.WriteString(string(rs[i+1 : end]))
			inWord = true
			i = end + 1
		case c == '"':
			inWord = true
			i++
			for ; i < len(rs) && rs[i] != '"'; i++ {
				switch {
				case rs[i] == '\\' && i+1 < len(rs) && strings.ContainsRune(`"\$`, rs[i+1]):
					cur.WriteRune(rs[i+1])
					i++
				case rs[i] == '$':
					j, err := expand(i)
					if err != nil {
						return nil, nil, err
					}
					i = j - 1
				default:
					cur.WriteRune(rs[i])
				}
			}
			if i >= len(rs) {
				return nil, nil, fmt.Errorf(`unclosed " in %q`, line)
			}
			i++
		case c == '$':
			j, err := expand(i)
			if err != nil {
				return nil, nil, err
			}
			inWord = true
			i = j
		default:
			cur.WriteRune(c)
			inWord = true
			i++
		}
	}
	flush()
	return words, pipe, nil
}

// runeIndex is the index of the first r in rs at or after from, or -1.
func runeIndex(rs []rune, from int, r rune) int {
	for i := from; i < len(rs); i++ {
		if rs[i] == r {
			return i
		}
	}
	return -1
}

// curlCall is a curl command line of the README as an HTTP request.
type curlCall struct {
	line   string
	method string
	url    string // as the README writes it
	header http.Header
	body   string
	grep   *regexp.Regexp // `| grep PATTERN`: a line of the answer must match
}

// parseCurl understands the curl flags the README uses; any other flag is an
// error, so that the README cannot show what the test does not check.
func parseCurl(line string, vars map[string]string) (curlCall, error) {
	words, pipe, err := shellWords(line, vars)
	if err != nil {
		return curlCall{}, err
	}
	c := curlCall{line: line, header: http.Header{}}
	if len(words) == 0 || words[0] != "curl" {
		return c, fmt.Errorf("not a curl command: %q", line)
	}
	for i := 1; i < len(words); i++ {
		w := words[i]
		arg := func() (string, error) {
			if i+1 >= len(words) {
				return "", fmt.Errorf("curl %s without a value in %q", w, line)
			}
			i++
			return words[i], nil
		}
		switch w {
		case "-s", "-S", "-sS", "-i", "--silent", "--show-error", "--include":
		case "-X", "--request":
			if c.method, err = arg(); err != nil {
				return c, err
			}
		case "-H", "--header":
			h, err := arg()
			if err != nil {
				return c, err
			}
			k, v, ok := strings.Cut(h, ":")
			if !ok {
				return c, fmt.Errorf("header %q without a colon in %q", h, line)
			}
			c.header.Add(strings.TrimSpace(k), strings.TrimSpace(v))
		case "-d", "--data":
			if c.body, err = arg(); err != nil {
				return c, err
			}
		default:
			if strings.HasPrefix(w, "-") {
				return c, fmt.Errorf("curl flag %s in %q: teach the test what it does", w, line)
			}
			if c.url != "" {
				return c, fmt.Errorf("two URLs in %q", line)
			}
			c.url = w
		}
	}
	if c.url == "" {
		return c, fmt.Errorf("no URL in %q", line)
	}
	if c.method == "" {
		c.method = http.MethodGet
		if c.body != "" {
			c.method = http.MethodPost
		}
	}
	// What curl does with -d and no Content-Type of its own.
	if c.body != "" && c.header.Get("Content-Type") == "" {
		c.header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if len(pipe) > 0 {
		if len(pipe) != 2 || pipe[0] != "grep" {
			return c, fmt.Errorf("pipe to %q in %q: the test knows only `| grep PATTERN`", pipe, line)
		}
		if c.grep, err = regexp.Compile("(?m)" + pipe[1]); err != nil {
			return c, err
		}
	}
	return c, nil
}

// route is "METHOD /path" without the query, for matching calls to checks.
func (c curlCall) route() string {
	path := strings.TrimPrefix(c.url, "http://"+readmeHTTP)
	path, _, _ = strings.Cut(path, "?")
	return c.method + " " + path
}

// do sends the call to httpAddr instead of the README's address.
func (c curlCall) do(ctx context.Context, httpAddr string) (int, []byte, error) {
	prefix := "http://" + readmeHTTP + "/"
	if !strings.HasPrefix(c.url, prefix) {
		return 0, nil, fmt.Errorf("%q does not go to %s", c.line, prefix)
	}
	var body io.Reader
	if c.body != "" {
		body = strings.NewReader(c.body)
	}
	req, err := http.NewRequestWithContext(ctx, c.method, "http://"+httpAddr+"/"+strings.TrimPrefix(c.url, prefix), body)
	if err != nil {
		return 0, nil, err
	}
	req.Header = c.header.Clone()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return resp.StatusCode, data, err
}

// wsClient is the tests' WebSocket client (internal/wstest); waits may come
// in any order (Await).
type wsClient struct {
	*wstest.Client
	t *testing.T
}

// dialLike connects as the wscat command line words ("wscat -c URL -H
// HEADER") would.
func dialLike(t *testing.T, name string, wscat []string) *wsClient {
	t.Helper()
	var url string
	header := http.Header{}
	for i := 1; i+1 < len(wscat); i += 2 {
		switch wscat[i] {
		case "-c":
			url = wscat[i+1]
		case "-H":
			k, v, _ := strings.Cut(wscat[i+1], ":")
			header.Add(strings.TrimSpace(k), strings.TrimSpace(v))
		default:
			t.Fatalf("wscat flag %q in %q: teach the test what it does", wscat[i], wscat)
		}
	}
	if wscat[0] != "wscat" || url == "" || len(wscat)%2 != 1 {
		t.Fatalf("not a wscat command: %q", wscat)
	}
	return &wsClient{Client: wstest.Dial(t, url, wstest.Options{Header: header, Name: name, Wait: frameWait}), t: t}
}

func (c *wsClient) send(frame string) {
	c.t.Helper()
	c.SendRaw(frame)
}

// next waits for the first frame, in order, for which match is true; the
// frames it passes over stay for later waits.
func (c *wsClient) next(what string, match func(f map[string]json.RawMessage) bool) map[string]json.RawMessage {
	c.t.Helper()
	f := c.Await(what, func(f wstest.Frame) bool { return match(rawFields(f)) })
	return rawFields(f)
}

// rawFields is f with each field as its JSON.
func rawFields(f wstest.Frame) map[string]json.RawMessage {
	m := make(map[string]json.RawMessage, len(f))
	for k, v := range f {
		m[k], _ = json.Marshal(v)
	}
	return m
}

// str is a frame's string field ("" if absent or not a string).
func str(f map[string]json.RawMessage, key string) string {
	var s string
	json.Unmarshal(f[key], &s)
	return s
}

// num is a frame's integer field (0 if absent).
func num(f map[string]json.RawMessage, key string) int64 {
	var n int64
	json.Unmarshal(f[key], &n)
	return n
}

// isMessage: a message frame carries "message" and "id"; control frames never do.
func isMessage(f map[string]json.RawMessage) bool {
	_, m := f["message"]
	_, id := f["id"]
	return m && id
}

func ofType(typ string) func(map[string]json.RawMessage) bool {
	return func(f map[string]json.RawMessage) bool { return !isMessage(f) && str(f, "type") == typ }
}

func messageWith(text string) func(map[string]json.RawMessage) bool {
	return func(f map[string]json.RawMessage) bool { return isMessage(f) && str(f, "message") == text }
}
