package wsedge

import (
	"net"
	"slices"
	"sync"
	"time"
)

// Writing. A socket's output has one owner at a time, the write side
// (conn.owned, under conn.mu). Nobody writes without it:
//
//   - Anyone may queue a frame (enqueue): the live feed, the socket's
//     worker, the poller's inline answers, the pinger, unread counts,
//     presence, the expirer. Queueing never writes and never blocks; a
//     socket nobody owns goes on the hub's flush list.
//   - The hub's flusher, one goroutine, takes the write side of each socket
//     on its list in turn and writes everything queued in one writev(2),
//     without waiting, then releases it. Whatever was queued since the
//     socket's last pass goes in that one call: under load an echo and its
//     ACK, a message and its UNREAD, several events.
//   - What a socket's buffer does not take at once goes, with the write
//     side, to a writer goroutine of the socket's own, which waits (at most
//     WriteTimeout per write) until the queue is empty, then releases.
//   - A catch-up (resume.go) acquires the write side, waiting for its holder
//     to hand it over, writes its pages directly and releases it; what was
//     queued meanwhile is flushed then.
//
// Whoever releases the write side of a socket whose reading has ended
// closes the connection.
//
// Lock order. A lock on the left may be held while taking one on its right,
// never the other way round (as nats-server's locksordering.txt):
//
//	hub.presMu → hub.mu → conn.mu → hub.flush.mu   register, unregister
//	hub.mu → hub.ackMu → conn.mu                    Dispatch releasing held ACKs
//	hub.mu → conn.mu                                Dispatch, PushUnread, PushPresence, resume, catch-up's end
//	hub.presMu → hub.presHeld.mu                    presence changes held while shedding
//	feed.Feed.mu → hub.mu                           the live feed dispatching (whole stream) and sending unread counts
//	poller.mu → conn.mu                             the poller registering a socket
//	conn.mu → hub.flush.mu                          queueing (enqueue) lists the socket
//	hub.exp.mu alone                                token expiry (expiry.go)

// flushList is the sockets with frames queued and no owner, for the flusher.
type flushList struct {
	mu    sync.Mutex
	conns []*conn
	wake  chan struct{} // one token: the list became non-empty
	stop  chan struct{} // closed by Shutdown once sockets are done
	done  chan struct{} // closed when the flusher has stopped
	once  sync.Once
}

func newFlushList() *flushList {
	return &flushList{wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
}

// add lists c. conn.mu is held.
func (l *flushList) add(c *conn) {
	l.mu.Lock()
	l.conns = append(l.conns, c)
	first := len(l.conns) == 1
	l.mu.Unlock()
	if first {
		select {
		case l.wake <- struct{}{}:
		default:
		}
	}
}

// take returns the listed sockets, and lists the next ones in spare's room.
func (l *flushList) take(spare []*conn) []*conn {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.conns
	l.conns = spare[:0]
	return out
}

// flusher writes the listed sockets until Shutdown stops it.
func (h *Hub) flusher() {
	l := h.flush
	defer close(l.done)
	var batch []*conn
	for {
		select {
		case <-l.stop:
			return
		case <-l.wake:
		}
		batch = l.take(batch)
		for i, c := range batch {
			c.flush()
			batch[i] = nil
		}
	}
}

// stopFlusher stops the flusher and waits for it. It may be called more
// than once.
func (h *Hub) stopFlusher() {
	h.flush.once.Do(func() { close(h.flush.stop) })
	<-h.flush.done
}

// pushLocked queues f. An UNREAD replaces one of the same conversation
// still queued: only the latest count goes out, after everything queued
// before it. conn.mu is held.
func (c *conn) pushLocked(f frame) {
	if f.kind == kUnread {
		if i := slices.IndexFunc(c.pending, func(p frame) bool { return p.kind == kUnread && p.conv == f.conv }); i >= 0 {
			c.pending = slices.Delete(c.pending, i, i+1)
			c.hub.queued(-1)
		}
	}
	c.pending = append(c.pending, f)
	c.hub.queued(1)
	c.listLocked()
}

// listLocked puts the socket on the flush list if it has frames queued and
// nobody holds its write side. conn.mu is held.
func (c *conn) listLocked() {
	if !c.owned && !c.listed && len(c.pending) > 0 {
		c.listed = true
		c.hub.flush.add(c)
	}
}

// takeLocked takes the queued frames for writing. conn.mu is held.
func (c *conn) takeLocked() []frame {
	batch := c.pending
	c.pending = nil
	c.hub.queued(-len(batch))
	return batch
}

// dropLocked drops the queued frames (the socket is closing). conn.mu is held.
func (c *conn) dropLocked() {
	c.hub.queued(-len(c.pending))
	c.pending = nil
}

// releaseLocked gives up the write side: to a catch-up waiting for it, or
// for good. The last one out of a socket whose reading ended closes the
// connection; otherwise frames queued meanwhile are listed for the flusher.
// conn.mu is held.
func (c *conn) releaseLocked() {
	if c.waiter != nil {
		close(c.waiter) // handed over: owned stays set
		c.waiter = nil
		return
	}
	c.owned = false
	if c.readerDone {
		c.dropLocked()
		c.nc.Close()
		return
	}
	c.listLocked()
}

// acquireLocked takes the write side for a catch-up: at once (nil) if
// nobody holds it, else it returns a channel the holder closes when it hands
// the write side over, which it always does (its queue drains, or a write
// fails). conn.mu is held.
func (c *conn) acquireLocked() <-chan struct{} {
	if !c.owned {
		c.owned = true
		return nil
	}
	c.waiter = make(chan struct{})
	return c.waiter
}

// flush writes what is queued, without waiting, if nobody holds the write
// side; what the socket does not take goes to a writer goroutine. The
// flusher calls it.
func (c *conn) flush() {
	c.mu.Lock()
	c.listed = false
	if c.owned || len(c.pending) == 0 {
		c.mu.Unlock()
		return
	}
	c.owned = true
	if !c.poll.canWrite() {
		c.startWriterLocked() // no non-blocking write here: the writer waits
		c.mu.Unlock()
		return
	}
	batch := c.takeLocked()
	reg := c.poll
	c.mu.Unlock()

	n, writes, err := reg.tryWritev(batch)
	c.hub.m.SocketWrites.Add(float64(writes))
	if err != nil {
		c.failed()
		return
	}
	done, rest := splitWritten(batch, n)
	c.wrote(done)
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(rest) == 0 {
		c.releaseLocked()
		return
	}
	// The socket's buffer is full: the rest goes first, and the writer
	// goroutine waits for the client to read.
	c.pending = append(rest, c.pending...)
	c.hub.queued(len(rest))
	c.startWriterLocked()
}

// splitWritten splits frames after n bytes were written: the frames written
// whole, and the rest, the first perhaps cut (its wire is a sub-slice; the
// bytes are shared by every recipient and never changed).
func splitWritten(frames []frame, n int) (done, rest []frame) {
	for i, f := range frames {
		if n < len(f.wire) {
			rest = slices.Clone(frames[i:])
			rest[0].wire = f.wire[n:]
			return frames[:i], rest
		}
		n -= len(f.wire)
	}
	return frames, nil
}

// startWriterLocked starts the writer goroutine, which holds the write side
// until the queue is empty. conn.mu is held, and owned set.
func (c *conn) startWriterLocked() {
	c.hub.wg.Add(1) // the reader is alive, or a writer still owns the socket: the count is > 0
	go c.writeLoop()
}

// writeLoop writes the queue, waiting for the client to read, until it is
// empty, then releases the write side.
func (c *conn) writeLoop() {
	defer c.hub.wg.Done()
	for {
		c.mu.Lock()
		batch := c.takeLocked()
		if len(batch) == 0 {
			c.releaseLocked()
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		if err := c.write(batch); err != nil {
			c.failed()
			return
		}
	}
}

// failed ends a socket whose write failed: reading ends too, nothing more is
// queued, and the write side is released. The caller holds the write side.
func (c *conn) failed() {
	c.kill()
	c.mu.Lock()
	c.closing = true
	c.dropLocked()
	c.releaseLocked()
	c.mu.Unlock()
}

// write sends frames in one writev, waiting at most WriteTimeout. The
// caller holds the write side.
func (c *conn) write(frames []frame) error {
	bufs := make(net.Buffers, 0, len(frames))
	for _, f := range frames {
		bufs = append(bufs, f.wire)
	}
	c.nc.SetWriteDeadline(time.Now().Add(c.hub.cfg.WriteTimeout))
	c.hub.m.SocketWrites.Inc() // one writev, mostly (more if the socket's buffer fills)
	if _, err := bufs.WriteTo(c.nc); err != nil {
		return err
	}
	c.wrote(frames)
	return nil
}

// wrote counts frames written whole and, after a close frame, half-closes
// the connection and gives the client CloseGrace to answer; the reader then
// finishes and the connection is closed without a reset that could destroy
// the close frame in flight. The caller holds the write side.
func (c *conn) wrote(frames []frame) {
	sentClose := false
	for _, f := range frames {
		c.hub.framesOut[f.kind].Inc()
		sentClose = sentClose || f.kind == kWSClose
	}
	if sentClose {
		if cw, ok := c.nc.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
		c.readUntil(time.Now().Add(c.hub.cfg.CloseGrace))
	}
}
