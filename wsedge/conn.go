package wsedge

import (
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/time/rate"

	"inbox/auth"
	"inbox/chat"
	"inbox/eventstore"
)

// conn is one socket. Its reading (the poller, or a reader goroutine) owns
// the lifecycle; its write side has one owner at a time (writer.go).
type conn struct {
	hub    *Hub
	nc     net.Conn
	user   string
	sender chat.Sender
	ep     endpoint
	id     int64 // the conversation (epChat) or job (epJob)
	lim    *rate.Limiter
	slot   uint32 // the pinger's turn for this socket (pingSlices); set under hub.mu

	// Read side (reader.go): owned by the one caller of consume.
	in      []byte  // bytes of an incomplete frame
	msg     *[]byte // the fragmented message being reassembled, from msgPool
	inMsg   bool    // a fragmented message is under way
	discard bool    // after a violation: input is dropped unparsed
	strikes int     // rate-limited frames in a row
	poll    pollReg // the poller's registration, if it reads this socket

	seen    atomic.Int64 // when input last arrived (unix ns): liveness
	closeBy atomic.Int64 // reading ends at this time (unix ns); 0: no limit

	mu         sync.Mutex
	pending    []frame       // queued to be written (writer.go)
	owned      bool          // someone holds the write side
	listed     bool          // on the hub's flush list
	waiter     chan struct{} // a catch-up waiting for the write side
	syncBuf    []frame       // live frames held back while catching up
	syncing    bool          // live frames go to syncBuf
	paused     bool          // between catch-up pages: live event frames are dropped
	catching   bool          // a catch-up is admitted or running
	budget     float64       // catch-up bytes the socket may still cost (resume.go)
	budgetAt   time.Time
	closing    bool // a close frame is queued or the reader is gone: queue nothing more
	readerDone bool
	liveFrom   eventstore.Cursor // every event after this was routed to the socket live
	since      eventstore.Cursor // event frames it covers are not sent: the client has them
	jobs       []job             // frames (and a catch-up) for the worker, in arrival order
	working    bool              // the worker goroutine runs

	exp expiry // the token's expiry schedule; guarded by hub.exp.mu (expiry.go)
}

func newConn(h *Hub, nc net.Conn, claims auth.Claims, ep endpoint, id int64) *conn {
	return &conn{
		hub: h, nc: nc, user: claims.UserID, sender: senderOf(claims), ep: ep, id: id,
		lim: rate.NewLimiter(rate.Limit(h.cfg.RatePerSecond), h.cfg.RateBurst),
		exp: expiry{idx: -1},
	}
}

// readAhead is the most an idle socket keeps of its input buffer.
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

// enqueue queues fs, in order, without blocking; the flusher writes them
// (writer.go), frames queued together in one write. A
// full queue closes the socket with 4013: one slow client never holds up
// the feed.
func (c *conn) enqueue(fs ...frame) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range fs {
		c.enqueueLocked(f)
	}
}

// enqueueLocked is enqueue of one frame with c.mu held.
func (c *conn) enqueueLocked(f frame) {
	// An event frame at or below liveFrom was caught up (or, for a socket
	// not resuming, came before it): only the live feed's interest mode
	// dispatches one after the socket registered.
	if c.closing || (f.seq != 0 && (c.paused || c.since.Covers(f.seq) || c.liveFrom.Covers(f.seq))) {
		return
	}
	if c.syncing {
		if len(c.syncBuf) >= c.hub.cfg.SyncBufferFrames {
			c.slowLocked("resume buffer full")
		} else {
			c.syncBuf = append(c.syncBuf, f)
		}
		return
	}
	if len(c.pending) >= c.hub.cfg.QueueFrames {
		c.slowLocked("send queue full")
		return
	}
	if !f.at.IsZero() {
		c.hub.m.DeliveryLatency.Observe(time.Since(f.at).Seconds())
	}
	c.pushLocked(f)
}

func (c *conn) slowLocked(why string) {
	c.hub.m.SlowCloses.Inc()
	c.hub.refusals.Info("slow: "+why, "closing slow socket", "user_id", c.user, "endpoint", endpointNames[c.ep])
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
	c.dropLocked()
	c.pushLocked(closeFrame(code, reason))
	c.syncBuf = nil
}

func (c *conn) isClosing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closing
}

// kill closes the connection at once and ends reading.
func (c *conn) kill() {
	c.closeBy.Store(1)
	c.nc.Close()
}

// start begins reading a registered socket: pre are bytes that came with the
// upgrade request; with resume, the worker first catches up from since.
func (c *conn) start(resume bool, since eventstore.Cursor, pre []byte) {
	c.seen.Store(time.Now().UnixNano())
	if resume {
		c.queue(job{catchUp: true, since: since})
	}
	if len(pre) > 0 && !c.consume(pre) {
		c.finish()
		return
	}
	if c.hub.poll != nil {
		err := c.hub.poll.add(c)
		if err == nil {
			return
		}
		c.hub.log.Debug("socket read by a goroutine", "user_id", c.user, "reason", err)
	}
	go c.readLoop()
}

// finish unregisters the socket and closes it once the writer is done. The
// reader calls it once, when reading ends.
func (c *conn) finish() {
	c.in = nil
	if c.msg != nil {
		putMsg(c.msg)
		c.msg = nil
	}
	c.hub.unregister(c)
	c.mu.Lock()
	c.closing = true
	c.readerDone = true
	c.syncBuf = nil
	idle := !c.owned && len(c.pending) == 0 // else the holder of the write side closes it
	if !c.owned && len(c.pending) > 0 {
		// A close frame (an echo of the client's) still to go: a writer
		// of the socket's own writes it, then closes.
		c.owned = true
		c.startWriterLocked()
	}
	c.mu.Unlock()
	if idle {
		c.nc.Close()
	}
	c.hub.wg.Done()
}
