package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobwas/ws"
)

// maxFrame bounds one frame (and one reassembled message) read from the
// server.
const maxFrame = 1 << 20

// writeTimeout bounds one frame write; a server that does not read for this
// long is treated as gone.
const writeTimeout = 5 * time.Second

// socket is one client WebSocket: one reader goroutine, writes serialised by
// a mutex into one buffer (header and masked payload in one write).
type socket struct {
	idx  int // user index
	conn net.Conn

	wmu     sync.Mutex
	wbuf    []byte
	closing atomic.Bool
	local   atomic.Bool // the bench closed it (not the server)

	done      chan struct{} // closed when the reader exits
	closeCode atomic.Int32  // close code the server sent, if any
	readErr   error         // why the reader stopped; read after done
}

// frameFunc handles one text message from the server. p is reused after it
// returns.
type frameFunc func(s *socket, p []byte)

// dialer opens client sockets bound to loopback source addresses in turn.
type dialer struct {
	wsURL   string // ws://host:port/ws/inbox/
	sources []net.IP
	next    atomic.Uint64
	timeout time.Duration
}

func (d *dialer) dial(ctx context.Context, token string) (net.Conn, *bufio.Reader, error) {
	nd := net.Dialer{Timeout: d.timeout}
	if len(d.sources) > 0 {
		src := d.sources[d.next.Add(1)%uint64(len(d.sources))]
		nd.LocalAddr = &net.TCPAddr{IP: src}
	}
	var refusal string // the server's reason for an answer other than 101
	wd := ws.Dialer{Timeout: d.timeout, NetDial: nd.DialContext, OnStatusError: func(_ int, _ []byte, resp io.Reader) {
		refusal = refusalReason(resp)
	}}
	conn, br, _, err := wd.Dial(ctx, d.wsURL+"?token="+url.QueryEscape(token))
	if err != nil {
		if refusal != "" {
			err = fmt.Errorf("%w: %s", err, refusal)
		}
		return nil, nil, err
	}
	return conn, br, nil
}

// refusalReason is the "error" of the JSON body of a refused upgrade, if any.
func refusalReason(r io.Reader) string {
	resp, err := http.ReadResponse(bufio.NewReader(r), nil)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var body struct {
		Error string `json:"error"`
	}
	if json.NewDecoder(io.LimitReader(resp.Body, 4<<10)).Decode(&body) != nil {
		return ""
	}
	return body.Error
}

// retryable reports whether a failed dial is worth another try: refused or
// reset connections and timeouts (a busy accept queue), but not an HTTP
// answer such as 401.
func retryable(err error) bool {
	var se ws.StatusError
	if errors.As(err, &se) {
		return int(se) >= 500 || int(se) == 429
	}
	if errors.Is(err, context.Canceled) {
		return false
	}
	return true
}

// openSocket dials with up to tries attempts and starts the reader.
func (d *dialer) openSocket(ctx context.Context, idx int, token string, tries int, onText frameFunc, onExit func(*socket)) (*socket, error) {
	var err error
	for attempt := range tries {
		if attempt > 0 {
			backoff := time.Duration(50<<min(attempt, 6)) * time.Millisecond
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(backoff):
			}
		}
		var conn net.Conn
		var br *bufio.Reader
		conn, br, err = d.dial(ctx, token)
		if err == nil {
			s := &socket{idx: idx, conn: conn, done: make(chan struct{})}
			if br == nil {
				br = bufio.NewReaderSize(conn, 2048)
			}
			go s.readLoop(br, onText, onExit)
			return s, nil
		}
		if errors.Is(err, syscall.EADDRNOTAVAIL) {
			return nil, fmt.Errorf("open socket: %w (out of ephemeral ports: add --source-addrs)", err)
		}
		if !retryable(err) {
			break
		}
	}
	return nil, fmt.Errorf("open socket: %w", err)
}

// readLoop reads frames until the connection ends: answers pings, reassembles
// fragmented messages, hands text messages to onText, records a close code.
func (s *socket) readLoop(br *bufio.Reader, onText frameFunc, onExit func(*socket)) {
	defer func() {
		close(s.done)
		if onExit != nil {
			onExit(s)
		}
	}()
	var buf, msg []byte
	fragmented := false
	for {
		h, err := ws.ReadHeader(br)
		if err != nil {
			s.readErr = err
			return
		}
		if h.Length > maxFrame || (fragmented && int64(len(msg))+h.Length > maxFrame) {
			s.readErr = fmt.Errorf("frame of %d bytes is too large", h.Length)
			s.conn.Close()
			return
		}
		n := int(h.Length)
		if cap(buf) < n {
			buf = make([]byte, n)
		}
		p := buf[:n]
		if _, err := io.ReadFull(br, p); err != nil {
			s.readErr = err
			return
		}
		if h.Masked {
			ws.Cipher(p, h.Mask, 0)
		}
		switch h.OpCode {
		case ws.OpPing:
			_ = s.write(ws.OpPong, p)
		case ws.OpPong:
		case ws.OpClose:
			code, _ := ws.ParseCloseFrameData(p)
			s.closeCode.Store(int32(code))
			if s.closing.CompareAndSwap(false, true) {
				_ = s.write(ws.OpClose, ws.NewCloseFrameBody(code, ""))
			}
			s.conn.Close()
			s.readErr = io.EOF
			return
		case ws.OpText, ws.OpBinary:
			if h.Fin {
				onText(s, p)
				continue
			}
			msg, fragmented = append(msg[:0], p...), true
		case ws.OpContinuation:
			if !fragmented {
				s.readErr = errors.New("continuation frame without a first frame")
				s.conn.Close()
				return
			}
			msg = append(msg, p...)
			if h.Fin {
				onText(s, msg)
				msg, fragmented = msg[:0], false
			}
		}
	}
}

// write sends one masked frame in a single write.
func (s *socket) write(op ws.OpCode, payload []byte) error {
	h := ws.Header{Fin: true, OpCode: op, Masked: true, Mask: ws.NewMask(), Length: int64(len(payload))}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	b := s.wbuf[:0]
	var hb [ws.MaxHeaderSize]byte
	hw := fixedWriter{b: hb[:0]}
	if err := ws.WriteHeader(&hw, h); err != nil {
		return err
	}
	b = append(b, hw.b...)
	start := len(b)
	b = append(b, payload...)
	ws.Cipher(b[start:], h.Mask, 0)
	s.wbuf = b
	if cap(s.wbuf) > 64<<10 {
		s.wbuf = nil // do not keep a large buffer per socket
	}
	_ = s.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	_, err := s.conn.Write(b)
	return err
}

// writeText sends payload as a text frame unless the socket is closing.
func (s *socket) writeText(payload []byte) error {
	if s.closing.Load() {
		return net.ErrClosed
	}
	return s.write(ws.OpText, payload)
}

// alive reports whether the reader is still running.
func (s *socket) alive() bool {
	select {
	case <-s.done:
		return false
	default:
		return !s.closing.Load()
	}
}

// close says goodbye (1000), waits up to wait for the server's close, then
// closes the connection and waits for the reader.
func (s *socket) close(wait time.Duration) {
	s.local.Store(true)
	if s.closing.CompareAndSwap(false, true) {
		_ = s.write(ws.OpClose, ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))
	}
	t := time.NewTimer(wait)
	select {
	case <-s.done:
	case <-t.C:
	}
	t.Stop()
	s.conn.Close()
	<-s.done
}

// fixedWriter appends into a caller-owned slice.
type fixedWriter struct{ b []byte }

func (w *fixedWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}
