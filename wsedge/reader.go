package wsedge

import (
	"encoding/binary"
	"io"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// Reading. A socket's input is parsed incrementally by consume, called with
// whatever bytes arrived: by the hub's poller (Linux: one epoll loop reads
// every socket, so an idle socket has no goroutine and a busy one wakes none)
// or by a reader goroutine per socket (elsewhere, or when the poller cannot
// take the connection). Parser state belongs to that one caller.
//
// Frames that cannot block (PING, a throttled TYPING, anything refused) are
// answered on the spot; frames that append to or read the stream go to the
// socket's worker, a goroutine that exists only while it has work and keeps
// the socket's frames in arrival order (see handle.go).

// consume parses p, appended to any incomplete frame from earlier calls, and
// acts on every complete frame. It reports false when reading should end: the
// client sent a close frame. After a violation it keeps reporting true and
// drops the input unparsed until the client closes or closeBy passes.
func (c *conn) consume(p []byte) bool {
	if c.discard {
		return true
	}
	if len(c.in) > 0 {
		c.in = append(c.in, p...)
		p = c.in
	}
	for len(p) > 0 {
		h, n, ok := parseHeader(p)
		if !ok {
			break // more header bytes to come
		}
		if !c.checkHeader(h) {
			return c.violated()
		}
		if int64(len(p)-n) < h.Length {
			break // more payload to come
		}
		payload := p[n : n+int(h.Length)]
		p = p[n+int(h.Length):]
		ws.Cipher(payload, h.Mask, 0)
		if h.OpCode.IsControl() {
			switch c.control(h, payload) {
			case ctlViolation:
				return c.violated()
			case ctlClosed:
				return false
			}
			continue
		}
		if !c.data(h, payload) {
			return c.violated()
		}
	}
	c.keep(p)
	return true
}

// keep holds the unparsed rest of the input for the next call.
func (c *conn) keep(p []byte) {
	if len(p) == 0 && cap(c.in) > readAhead {
		c.in = nil // a large frame's buffer is not kept by an idle socket
		return
	}
	c.in = append(c.in[:0], p...) // p may be c.in's own tail: append moves it
}

// parseHeader parses a frame header at the start of p. ok is false while p
// holds only part of it; n is its length.
func parseHeader(p []byte) (h ws.Header, n int, ok bool) {
	if len(p) < 2 {
		return h, 0, false
	}
	h.Fin = p[0]&0x80 != 0
	h.Rsv = (p[0] & 0x70) >> 4
	h.OpCode = ws.OpCode(p[0] & 0x0f)
	h.Masked = p[1]&0x80 != 0
	length := p[1] & 0x7f
	ext := 0 // bytes of extended length
	switch length {
	case 126:
		ext = 2
	case 127:
		ext = 8
	}
	n = 2 + ext
	if h.Masked {
		n += 4
	}
	if len(p) < n {
		return h, 0, false
	}
	switch ext {
	case 0:
		h.Length = int64(length)
	case 2:
		h.Length = int64(binary.BigEndian.Uint16(p[2:4]))
	case 8:
		h.Length = int64(binary.BigEndian.Uint64(p[2:10]))
		if p[2]&0x80 != 0 {
			h.Length = -1 // the most significant bit must be 0 (RFC 6455 5.2)
		}
	}
	if h.Masked {
		copy(h.Mask[:], p[n-4:n])
	}
	return h, n, true
}

// checkHeader applies the protocol and the size limit to a header; on a
// violation it has closed the socket. RFC 6455's rules (reserved opcodes and
// bits, masking, control frames, fragmentation) are gobwas/ws's CheckHeader;
// the rest is this server's: a length whose top bit is set (parseHeader's
// -1), binary frames (1003) and the size limit (1009).
func (c *conn) checkHeader(h ws.Header) bool {
	size := int64(0)
	if c.msg != nil {
		size = int64(len(*c.msg))
	}
	state := ws.StateServerSide
	if c.inMsg {
		state = state.Set(ws.StateFragmented)
	}
	if h.Length < 0 {
		c.violate(ws.StatusProtocolError, "bad frame header")
	} else if err := ws.CheckHeader(h, state); err != nil {
		c.violate(ws.StatusProtocolError, err.Error())
	} else if h.OpCode == ws.OpBinary {
		c.violate(ws.StatusUnsupportedData, "binary frames are not accepted; send JSON text")
	}
	if !c.discard && !h.OpCode.IsControl() && size+h.Length > int64(c.hub.cfg.MaxFrameBytes) {
		c.violate(ws.StatusMessageTooBig, "message larger than the limit")
	}
	return !c.discard
}

// data takes one text or continuation frame; a complete message is handled.
// It reports false after a violation.
func (c *conn) data(h ws.Header, payload []byte) bool {
	c.inMsg = true
	msg := payload
	if !h.Fin || c.msg != nil {
		if c.msg == nil {
			c.msg = getMsg()
		}
		*c.msg = append(*c.msg, payload...)
		if !h.Fin {
			return true
		}
		msg = *c.msg
	}
	c.inMsg = false
	defer func() {
		if c.msg != nil {
			putMsg(c.msg)
			c.msg = nil
		}
	}()
	switch {
	case c.isClosing():
		// After our close frame, data is read only to find the client's close.
	case !utf8.Valid(msg):
		c.violate(ws.StatusInvalidFramePayloadData, "text frame is not valid UTF-8")
		return false
	default:
		c.handle(msg)
	}
	return true
}

type ctlResult int

const (
	ctlOK ctlResult = iota
	ctlViolation
	ctlClosed
)

// control handles a ping, pong or close frame.
func (c *conn) control(h ws.Header, p []byte) ctlResult {
	switch h.OpCode {
	case ws.OpPing:
		// Pings count against the rate limit; an unanswered ping costs nothing.
		if c.lim.Allow() {
			c.enqueue(frame{wire: wireFrame(ws.OpPong, p), kind: kWSPong})
		}
	case ws.OpPong:
		// Liveness only: any input counts.
	case ws.OpClose:
		code, reason := ws.ParseCloseFrameData(p)
		switch {
		case len(p) == 1:
			c.violate(ws.StatusProtocolError, "close frame payload of one byte")
			return ctlViolation
		case len(p) >= 2 && !validCloseCode(code):
			c.violate(ws.StatusProtocolError, "invalid close code")
			return ctlViolation
		case !utf8.ValidString(reason):
			c.violate(ws.StatusInvalidFramePayloadData, "close reason is not valid UTF-8")
			return ctlViolation
		case len(p) == 0:
			c.closeWith(ws.StatusNormalClosure, "")
		default:
			c.closeWith(code, "") // echo the client's code
		}
		return ctlClosed
	default:
		c.violate(ws.StatusProtocolError, "unknown control opcode")
		return ctlViolation
	}
	return ctlOK
}

// validCloseCode reports whether a client may close with code (RFC 6455
// 7.4). gobwas/ws's CheckCloseFrameData is not used: it accepts codes of
// 5000 and above, which no range defines, and refuses 1012–1014, which IANA
// has registered since.
func validCloseCode(code ws.StatusCode) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}

// violate closes the socket for a protocol or policy violation. The frame
// stream may be broken mid-frame, so from now on input is dropped unparsed
// until the client closes or the close frame's write and CloseGrace pass.
func (c *conn) violate(code ws.StatusCode, reason string) {
	c.hub.refusals.Info(reason, "closing socket: violation", "user_id", c.user, "code", int(code))
	c.closeWith(code, reason)
	c.readUntil(time.Now().Add(c.hub.cfg.WriteTimeout + c.hub.cfg.CloseGrace))
	c.discard = true
}

// violated drops the parser state after a violation; reading goes on.
func (c *conn) violated() bool {
	c.in = nil
	if c.msg != nil {
		putMsg(c.msg)
		c.msg = nil
	}
	return true
}

// readUntil ends reading at t at the latest.
func (c *conn) readUntil(t time.Time) {
	ns := t.UnixNano()
	for {
		old := c.closeBy.Load()
		if old != 0 && old <= ns {
			break
		}
		if c.closeBy.CompareAndSwap(old, ns) {
			break
		}
	}
	c.nc.SetReadDeadline(t) // a reader goroutine blocked in Read
}

// expired reports whether the socket's reading should end at now: it sent
// nothing (not even a pong) for two ping intervals, or a close is overdue.
func (c *conn) expired(now int64) bool {
	if by := c.closeBy.Load(); by != 0 && now >= by {
		return true
	}
	return now-c.seen.Load() > int64(2*c.hub.cfg.PingInterval)
}

// readLoop is the socket's reader goroutine where the poller is not used.
func (c *conn) readLoop() {
	defer c.finish()
	buf := make([]byte, 4<<10)
	for {
		dl := time.Now().Add(2 * c.hub.cfg.PingInterval)
		if by := c.closeBy.Load(); by != 0 && by < dl.UnixNano() {
			dl = time.Unix(0, by)
		}
		c.nc.SetReadDeadline(dl)
		n, err := c.nc.Read(buf)
		if n > 0 && !c.consume(buf[:n]) {
			return
		}
		if err != nil {
			if err != io.EOF {
				c.hub.log.Debug("socket read ended", "user_id", c.user, "err", err)
			}
			return
		}
	}
}

// msgPool recycles message buffers between fragmented messages.
var msgPool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

func getMsg() *[]byte { return msgPool.Get().(*[]byte) }

func putMsg(b *[]byte) {
	if cap(*b) > 64<<10 {
		return
	}
	*b = (*b)[:0]
	msgPool.Put(b)
}
