package wsedge

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"
	"golang.org/x/time/rate"

	"inbox/auth"
	"inbox/chat"
)

// conn is one socket. Its reader goroutine (run) owns the lifecycle; the
// write side has one owner at a time, marked by writing: the writer goroutine
// while the queue is non-empty, or the reader while it writes a catch-up.
type conn struct {
	hub    *Hub
	nc     net.Conn
	pre    []byte // bytes read but not yet consumed (with the upgrade request, or ahead); read first
	rbuf   []byte // read-ahead buffer, allocated on the socket's first frame; reader only
	user   string
	sender chat.Sender
	ep     endpoint
	id     int64 // the conversation (epChat) or job (epJob)
	lim    *rate.Limiter

	strikes int // rate-limited frames in a row; reader only

	mu         sync.Mutex
	pending    []frame // queued for the writer
	syncBuf    []frame // live frames held back while catching up
	writing    bool    // someone owns the write side
	syncing    bool    // live frames go to syncBuf
	closing    bool    // a close frame is queued or the reader is gone: queue nothing more
	readerDone bool
	handoff    chan struct{} // closed by the writer to hand the write side to a resuming reader
	liveFrom   uint64        // every event after this was routed to the socket live
	minSeq     uint64        // event frames at or below this are not sent: the client has them
}

func newConn(h *Hub, nc net.Conn, claims auth.Claims, ep endpoint, id int64) *conn {
	s := chat.Sender{UserID: claims.UserID, Name: claims.Name}
	if claims.Picture != "" {
		pic := claims.Picture
		s.Avatar = &pic
	}
	return &conn{
		hub: h, nc: nc, user: claims.UserID, sender: s, ep: ep, id: id,
		lim: rate.NewLimiter(rate.Limit(h.cfg.RatePerSecond), h.cfg.RateBurst),
	}
}

// readAhead is the read-ahead buffer's size: a typical client frame fits.
const readAhead = 512

// carries reports whether the socket receives frames of conversation conv
// (non-zero) or job job (non-zero). Membership is the caller's business.
func (c *conn) carries(conv, job int64) bool {
	switch c.ep {
	case epInbox:
		return conv != 0
	case epChat:
		return conv == c.id
	default:
		return job != 0 && job == c.id
	}
}

// enqueue queues f without blocking. A full queue closes the socket with
// 4013: one slow client never holds up the feed.
func (c *conn) enqueue(f frame) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing || (f.seq != 0 && f.seq <= c.minSeq) {
		return
	}
	if c.syncing {
		if len(c.syncBuf) >= c.hub.cfg.SyncBufferFrames {
			c.slowLocked("resume buffer full")
			return
		}
		c.syncBuf = append(c.syncBuf, f)
		return
	}
	if len(c.pending) >= c.hub.cfg.QueueFrames {
		c.slowLocked("send queue full")
		return
	}
	c.pending = append(c.pending, f)
	if !f.at.IsZero() {
		c.hub.m.DeliveryLatency.Observe(time.Since(f.at).Seconds())
	}
	c.startWriterLocked()
}

func (c *conn) slowLocked(why string) {
	c.hub.m.SlowCloses.Inc()
	c.hub.log.Info("closing slow socket", "user_id", c.user, "endpoint", endpointNames[c.ep], "reason", why)
	c.closeLocked(CloseSlowConsumer, "slow consumer: "+why+"; reconnect with since")
}

// closeWith queues a close frame in place of anything not yet written.
func (c *conn) closeWith(code ws.StatusCode, reason string) {
	c.mu.Lock()
	c.closeLocked(code, reason)
	c.mu.Unlock()
}

func (c *conn) closeLocked(code ws.StatusCode, reason string) {
	if c.closing {
		return
	}
	c.closing = true
	c.pending = []frame{closeFrame(code, reason)}
	c.syncBuf = nil
	c.startWriterLocked()
}

func (c *conn) isClosing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closing
}

func (c *conn) startWriterLocked() {
	if c.writing {
		return // the owner picks the frame up
	}
	c.writing = true
	c.hub.wg.Add(1) // the reader is alive (readerDone would have set closing), so the count is > 0
	go c.writeLoop()
}

// writeLoop writes the queue until it is empty, then exits.
func (c *conn) writeLoop() {
	defer c.hub.wg.Done()
	for {
		c.mu.Lock()
		batch := c.pending
		c.pending = nil
		if len(batch) == 0 {
			c.releaseLocked()
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		if err := c.write(batch); err != nil {
			c.nc.Close() // the reader fails and finishes
			c.mu.Lock()
			c.closing = true
			c.pending = nil
			c.releaseLocked()
			c.mu.Unlock()
			return
		}
	}
}

// releaseLocked gives up the write side: to a reader waiting to resume, or
// for good; the last one out closes the connection.
func (c *conn) releaseLocked() {
	if c.handoff != nil {
		close(c.handoff)
		c.handoff = nil
		return
	}
	c.writing = false
	if c.readerDone {
		c.nc.Close()
	}
}

// write sends frames in one writev. The caller owns the write side.
func (c *conn) write(frames []frame) error {
	bufs := make(net.Buffers, 0, len(frames))
	sentClose := false
	for _, f := range frames {
		bufs = append(bufs, f.wire)
		sentClose = sentClose || f.kind == kWSClose
	}
	c.nc.SetWriteDeadline(time.Now().Add(c.hub.cfg.WriteTimeout))
	if _, err := bufs.WriteTo(c.nc); err != nil {
		return err
	}
	for _, f := range frames {
		c.hub.framesOut[f.kind].Inc()
	}
	if sentClose {
		// Half-close and give the client CloseGrace to answer; the reader
		// then finishes and the connection is closed without a reset that
		// could destroy the close frame in flight.
		if cw, ok := c.nc.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
		c.nc.SetReadDeadline(time.Now().Add(c.hub.cfg.CloseGrace))
	}
	return nil
}

// Read reads the connection, first the bytes that came with the upgrade.
func (c *conn) Read(p []byte) (int, error) {
	if len(c.pre) > 0 {
		n := copy(p, c.pre)
		c.pre = c.pre[n:]
		if len(c.pre) == 0 {
			c.pre = nil
		}
		return n, nil
	}
	if len(p) >= readAhead {
		return c.nc.Read(p)
	}
	// A frame header is read in small pieces (2 bytes, then length and mask):
	// one read syscall into a small buffer serves a whole small frame instead
	// of three. The buffer exists only once the socket has sent something.
	if c.rbuf == nil {
		c.rbuf = make([]byte, readAhead)
	}
	n, err := c.nc.Read(c.rbuf)
	if n > 0 {
		c.pre = c.rbuf[:n]
		return c.Read(p)
	}
	return 0, err
}

// run is the socket's reader goroutine.
func (c *conn) run(resume bool, since uint64) {
	defer c.finish()
	if resume {
		c.catchUp(since)
	}
	c.readLoop()
}

// finish unregisters the socket and closes it once the writer is done.
func (c *conn) finish() {
	c.hub.unregister(c)
	c.mu.Lock()
	c.closing = true
	c.readerDone = true
	c.syncBuf = nil
	idle := !c.writing
	c.mu.Unlock()
	if idle {
		c.nc.Close()
	}
	c.hub.wg.Done()
}

// errViolation ends the read loop after a protocol or policy violation.
var errViolation = errors.New("violation")

// readLoop reads frames until the connection ends: control frames are
// answered here (gobwas/ws's wsutil helpers would swallow them), data frames
// are reassembled from their fragments, bounded by MaxFrameBytes, and handled.
func (c *conn) readLoop() {
	cfg := &c.hub.cfg
	var msg *[]byte // the message being reassembled, from msgPool
	defer func() {
		if msg != nil {
			putMsg(msg)
		}
	}()
	inMsg := false
	var deadlineSet time.Time
	for {
		// The read deadline (two ping intervals) is pushed forward at most
		// every half interval: a busy socket does not re-arm a timer per frame.
		if now := time.Now(); now.Sub(deadlineSet) > cfg.PingInterval/2 && !c.isClosing() {
			c.nc.SetReadDeadline(now.Add(2 * cfg.PingInterval))
			deadlineSet = now
		}
		h, err := ws.ReadHeader(c)
		if err != nil {
			if errors.Is(err, ws.ErrHeaderLengthMSB) || errors.Is(err, ws.ErrHeaderLengthUnexpected) {
				c.violate(ws.StatusProtocolError, "bad frame header")
			}
			return
		}
		switch {
		case h.Rsv != 0:
			c.violate(ws.StatusProtocolError, "reserved bits set: no extension was negotiated")
			return
		case !h.Masked:
			c.violate(ws.StatusProtocolError, "client frames must be masked")
			return
		}
		if h.OpCode.IsControl() {
			if err := c.control(h); err != nil {
				return
			}
			continue
		}
		switch h.OpCode {
		case ws.OpText:
			if inMsg {
				c.violate(ws.StatusProtocolError, "new message before the previous one ended")
				return
			}
			inMsg = true
		case ws.OpContinuation:
			if !inMsg {
				c.violate(ws.StatusProtocolError, "continuation frame without a message")
				return
			}
		case ws.OpBinary:
			c.violate(ws.StatusUnsupportedData, "binary frames are not accepted; send JSON text")
			return
		default:
			c.violate(ws.StatusProtocolError, "unknown opcode")
			return
		}
		size := int64(0)
		if msg != nil {
			size = int64(len(*msg))
		}
		if size+h.Length > int64(cfg.MaxFrameBytes) {
			c.violate(ws.StatusMessageTooBig, "message larger than the limit")
			return
		}
		if msg == nil {
			msg = getMsg()
		}
		start := len(*msg)
		*msg = append(*msg, make([]byte, h.Length)...)
		p := (*msg)[start:]
		if _, err := io.ReadFull(c, p); err != nil {
			return
		}
		ws.Cipher(p, h.Mask, 0)
		if !h.Fin {
			continue
		}
		inMsg = false
		if c.isClosing() {
			// After our close frame, data is read only to find the client's close.
		} else if !utf8.Valid(*msg) {
			c.violate(ws.StatusInvalidFramePayloadData, "text frame is not valid UTF-8")
			return
		} else {
			c.handle(*msg)
		}
		putMsg(msg)
		msg = nil
	}
}

// control handles a ping, pong or close frame. A non-nil error ends the read loop.
func (c *conn) control(h ws.Header) error {
	if !h.Fin || h.Length > ws.MaxControlFramePayloadSize {
		c.violate(ws.StatusProtocolError, "fragmented or oversized control frame")
		return errViolation
	}
	var buf [ws.MaxControlFramePayloadSize]byte
	p := buf[:h.Length]
	if _, err := io.ReadFull(c, p); err != nil {
		return err
	}
	ws.Cipher(p, h.Mask, 0)
	switch h.OpCode {
	case ws.OpPing:
		// Pings count against the rate limit; an unanswered ping costs nothing.
		if c.lim.Allow() {
			c.enqueue(frame{wire: wireFrame(ws.OpPong, p), kind: kWSPong})
		}
	case ws.OpPong:
		// Liveness only: the read deadline moves on with every frame.
	case ws.OpClose:
		code, reason := ws.ParseCloseFrameData(p)
		switch {
		case len(p) == 1:
			c.violate(ws.StatusProtocolError, "close frame payload of one byte")
		case len(p) >= 2 && !validCloseCode(code):
			c.violate(ws.StatusProtocolError, "invalid close code")
		case !utf8.ValidString(reason):
			c.violate(ws.StatusInvalidFramePayloadData, "close reason is not valid UTF-8")
		case len(p) == 0:
			c.closeWith(ws.StatusNormalClosure, "")
		default:
			c.closeWith(code, "") // echo the client's code
		}
		return io.EOF
	default:
		c.violate(ws.StatusProtocolError, "unknown control opcode")
		return errViolation
	}
	return nil
}

func validCloseCode(code ws.StatusCode) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}

// violate closes the socket for a protocol or policy violation, then reads
// and drops whatever the client still sends until it closes or CloseGrace
// (after the close frame is written) passes. The frame stream may be broken
// mid-frame, so nothing is parsed any more.
func (c *conn) violate(code ws.StatusCode, reason string) {
	c.hub.log.Debug("closing socket: violation", "user_id", c.user, "code", int(code), "reason", reason)
	c.closeWith(code, reason)
	c.nc.SetReadDeadline(time.Now().Add(c.hub.cfg.WriteTimeout + c.hub.cfg.CloseGrace))
	var buf [256]byte
	for {
		if _, err := c.Read(buf[:]); err != nil {
			return
		}
	}
}

// msgPool recycles message buffers between messages, so an idle socket holds none.
var msgPool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

func getMsg() *[]byte { return msgPool.Get().(*[]byte) }

func putMsg(b *[]byte) {
	if cap(*b) > 64<<10 {
		return
	}
	*b = (*b)[:0]
	msgPool.Put(b)
}
