package node_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"inbox/internal/testutil"
	"inbox/internal/wstest"
	"inbox/node"
)

// rtRaw opens a raw TCP connection to n's HTTP address.
func rtRaw(t *testing.T, n *node.Node) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", n.HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// rtClosedWithin reports whether the server closes c (or answers and then
// closes it) within d, reading whatever it sends.
func rtClosedWithin(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	return !errors.Is(err, os.ErrDeadlineExceeded)
}

// TestHTTPBodyThatNeverArrivesIsCut is the finding "a POST declaring 60,000
// bytes and sending none hung for 45 s and more": the read timeout cuts it.
func TestHTTPBodyThatNeverArrivesIsCut(t *testing.T) {
	const readTimeout = 500 * time.Millisecond
	n := rtStart(t, rtNATS(t), "body", func(c *node.Config) { c.HTTP.ReadTimeout = readTimeout })
	rtCreate(t, 1, []string{"alice"}, n)
	c := rtRaw(t, n)
	start := time.Now()
	fmt.Fprintf(c, "POST /api/conversations/1/messages HTTP/1.1\r\nHost: inbox\r\nAuthorization: Bearer %s\r\n"+
		"Content-Type: application/json\r\nContent-Length: 60000\r\n\r\n", rtToken(t, "alice"))
	if !rtClosedWithin(c, 5*time.Second) {
		t.Fatalf("connection still open %s after a body that never came (read timeout %s)", time.Since(start).Round(time.Millisecond), readTimeout)
	}
	if d := time.Since(start); d > 4*readTimeout {
		t.Errorf("closed after %s, want about the read timeout %s", d.Round(time.Millisecond), readTimeout)
	}
}

// TestIdleKeepAlivesBeyondCapAreClosed is the finding "1,000 idle keep-alive
// connections stayed open indefinitely": one address keeps at most
// MaxIdlePerIP idle; a connection going idle past that is closed after its
// response, one freed slot is usable again, and an idle connection is
// closed after IdleTimeout.
func TestIdleKeepAlivesBeyondCapAreClosed(t *testing.T) {
	const maxIdle = 3
	n := rtStart(t, rtNATS(t), "idle", func(c *node.Config) {
		c.HTTP.MaxIdlePerIP = maxIdle
		c.HTTP.IdleTimeout = time.Minute
	})
	get := func(c net.Conn) {
		t.Helper()
		fmt.Fprint(c, "GET /healthz HTTP/1.1\r\nHost: inbox\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Close {
			t.Fatalf("GET /healthz: %d (close %v)", resp.StatusCode, resp.Close)
		}
	}
	var conns []net.Conn
	for range 2 * maxIdle {
		c := rtRaw(t, n)
		get(c)
		conns = append(conns, c)
	}
	// Which ones are closed depends on the order the server sees them go
	// idle, which need not be the order they were made in: count them.
	var open []net.Conn
	for _, c := range conns {
		if !rtClosedWithin(c, 300*time.Millisecond) {
			open = append(open, c)
		}
	}
	if len(open) != maxIdle {
		t.Fatalf("%d of %d idle keep-alive connections left open, want %d (the cap)", len(open), len(conns), maxIdle)
	}
	// A slot freed by a client closing is taken by the next connection.
	open[0].Close()
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		c := rtRaw(t, n)
		get(c)
		if rtClosedWithin(c, 300*time.Millisecond) {
			return errors.New("a connection going idle was closed with a slot free")
		}
		return nil
	})

	short := rtStart(t, rtNATS(t), "idle-timeout", func(c *node.Config) { c.HTTP.IdleTimeout = 300 * time.Millisecond })
	c := rtRaw(t, short)
	get(c)
	if !rtClosedWithin(c, 5*time.Second) {
		t.Error("an idle keep-alive connection outlived IdleTimeout")
	}
}

// TestSocketOutlivesHTTPTimeouts: the HTTP timeouts are not applied to an
// upgraded WebSocket. With every timeout at 300 ms, a socket keeps
// exchanging frames for four times that, then carries a message.
func TestSocketOutlivesHTTPTimeouts(t *testing.T) {
	const timeout = 300 * time.Millisecond
	n := rtStart(t, rtNATS(t), "socket", func(c *node.Config) {
		c.HTTP = node.HTTPLimits{ReadHeaderTimeout: timeout, ReadTimeout: timeout, WriteTimeout: timeout, IdleTimeout: timeout}
	})
	rtCreate(t, 1, []string{"alice", "bob"}, n)
	a, b := rtDial(t, n, "alice"), rtDial(t, n, "bob")
	tick := time.NewTicker(timeout / 3)
	defer tick.Stop()
	for end := time.Now().Add(4 * timeout); time.Now().Before(end); {
		<-tick.C
		a.Flush()
		b.Flush()
	}
	id := rtSendMessage(t, a, 1, "still here")
	f := b.Until("the message", func(f wstest.Frame) bool { return rtType(f) == "MESSAGE" })
	if got := fmt.Sprint(f["message_id"]); got != fmt.Sprint(id) || !strings.Contains(fmt.Sprint(f["message"]), "still here") {
		t.Errorf("bob got %v, want message %d", f, id)
	}
}
