package wsedge

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"inbox/auth"
	"inbox/internal/testutil"
)

// TestIdleSocketMemory measures what an idle authenticated socket costs the
// server: N sockets are opened by a child process (so the clients' memory is
// not counted), then the server's RSS and Go heap+stacks are compared with
// the figures before. Opt in with the number of sockets:
//
//	WSEDGE_MEMTEST=5000 go test -run TestIdleSocketMemory -v ./wsedge
func TestIdleSocketMemory(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("WSEDGE_MEMTEST"))
	if n <= 0 {
		t.Skip("set WSEDGE_MEMTEST=<sockets> to measure")
	}
	nd := newNode(t, nodeOptions{cfg: Config{PingInterval: time.Hour}})
	before := measure()

	cmd := exec.Command(os.Args[0], "-test.run=^TestMemClients$")
	cmd.Env = append(os.Environ(), "WSEDGE_MEMCLIENTS="+strconv.Itoa(n), "WSEDGE_MEMCLIENTS_URL="+nd.wsURL("/ws/inbox/"))
	cmd.Stderr = os.Stderr
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); cmd.Wait() })
	sc := bufio.NewScanner(stdout)
	for sc.Scan() && !strings.HasPrefix(sc.Text(), "ready") {
	}
	testutil.CheckFor(t, time.Minute, 50*time.Millisecond, func() error {
		if got := metricValue(nd.m.OpenSockets); got != float64(n) {
			return fmt.Errorf("%v sockets open, want %d", got, n)
		}
		return nil
	})
	report(t, "idle sockets", n, before, measure())

	// Once every socket has sent a PING and received its PONG (so its reader
	// ran the decoder and a writer came and went), idle again.
	fmt.Fprintln(stdin, "ping")
	pings := nd.hub.framesIn[inPing]
	testutil.CheckFor(t, time.Minute, 50*time.Millisecond, func() error {
		if got := metricValue(pings); got != float64(n) {
			return fmt.Errorf("%v PINGs handled, want %d", got, n)
		}
		return nil
	})
	sc.Scan() // "pinged": every PONG arrived
	report(t, "sockets idle after a PING/PONG", n, before, measure())
}

func report(t *testing.T, what string, n int, before, after memFigures) {
	t.Logf("%d %s: RSS %+.0f KiB = %.2f KiB/socket; Go heap %.2f KiB/socket, goroutine stacks %.2f KiB/socket; %d goroutines more",
		n, what, float64(after.rss-before.rss)/1024, float64(after.rss-before.rss)/1024/float64(n),
		float64(after.heap-before.heap)/1024/float64(n), float64(after.stack-before.stack)/1024/float64(n), after.goroutines-before.goroutines)
}

type memFigures struct {
	rss, heap, stack int64
	goroutines       int
}

func measure() memFigures {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	f := memFigures{heap: int64(ms.HeapInuse), stack: int64(ms.StackInuse), goroutines: runtime.NumGoroutine()}
	b, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			f.rss = kb * 1024
		}
	}
	return f
}

// TestMemClients is the child process of TestIdleSocketMemory: it opens the
// sockets, says "ready" and holds them until its stdin closes.
func TestMemClients(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("WSEDGE_MEMCLIENTS"))
	if n <= 0 {
		t.Skip("child of TestIdleSocketMemory")
	}
	minter, err := auth.NewMinter(auth.MinterConfig{Secret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	url := os.Getenv("WSEDGE_MEMCLIENTS_URL")
	var conns []net.Conn
	for i := range n {
		tok, err := minter.Mint(fmt.Sprintf("user%d", i), "", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		d := ws.Dialer{Header: ws.HandshakeHeaderString("Authorization: Bearer " + tok + "\r\n")}
		c, _, _, err := d.Dial(context.Background(), url)
		if err != nil {
			t.Fatalf("socket %d: %v", i, err)
		}
		conns = append(conns, c)
	}
	fmt.Println("ready")
	in := bufio.NewReader(os.Stdin)
	in.ReadString('\n')
	for _, c := range conns {
		ws.WriteFrame(c, ws.MaskFrameInPlace(ws.NewTextFrame([]byte(`{"type":"PING"}`))))
	}
	for _, c := range conns {
		if f, err := ws.ReadFrame(c); err != nil || f.Header.OpCode != ws.OpText {
			t.Fatalf("PONG: %v %v", f.Header, err)
		}
	}
	fmt.Println("pinged")
	in.ReadString('\n')
	runtime.KeepAlive(conns)
}
