//go:build linux

package wsedge

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// poller reads every socket of a hub from one epoll instance on one
// goroutine. An idle socket costs no goroutine; a frame costs one read(2)
// and no scheduler wake-up, so thousands of chatty sockets (a typing storm)
// do not queue up in the Go scheduler ahead of the message path. Frames that
// block go to the socket's worker (handle.go).
//
// The poller also ends reading for sockets that have been silent for two
// ping intervals or whose close is overdue (closeBy), every sweep interval.
type poller struct {
	h     *Hub
	epfd  int
	buf   []byte // one read's bytes; consume copies what it keeps
	sweep time.Duration

	// The last read's result, and the function that reads into buf: made
	// once, so a read allocates nothing.
	n      int
	rerr   error
	readFn func(fd uintptr) bool

	mu    sync.Mutex
	conns map[uint64]*conn // by registration id: a reused fd number never reaches the wrong socket
	next  uint64

	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

// pollReg is a socket's registration with the poller.
type pollReg struct {
	id  uint64
	raw syscall.RawConn
}

// canWrite reports whether tryWritev can be used.
func (r pollReg) canWrite() bool { return r.raw != nil }

// maxIovecs is the most buffers one writev(2) takes (IOV_MAX).
const maxIovecs = 1024

// tryWritev writes as much of frames as the socket's buffer takes now, in
// one writev(2) per maxIovecs frames, without waiting: the bytes written (0
// and no error if it takes nothing), and the calls that wrote some.
func (r pollReg) tryWritev(frames []frame) (total, writes int, _ error) {
	var werr error
	var iov [][]byte
	err := r.raw.Write(func(fd uintptr) bool {
		for len(frames) > 0 {
			chunk := frames[:min(len(frames), maxIovecs)]
			iov = iov[:0]
			want := 0
			for _, f := range chunk {
				iov = append(iov, f.wire)
				want += len(f.wire)
			}
			var n int
			for {
				n, werr = unix.Writev(int(fd), iov)
				if werr != unix.EINTR {
					break
				}
			}
			if n > 0 {
				writes++
			}
			if werr != nil {
				return true
			}
			total += n
			if n < want {
				return true // the socket's buffer is full
			}
			frames = frames[len(chunk):]
		}
		return true
	})
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return total, writes, nil // a blocking write's old deadline: the writer sets a new one
	case err != nil:
		return total, writes, err
	case werr == unix.EAGAIN:
		return total, writes, nil
	case werr != nil:
		return total, writes, werr
	}
	return total, writes, nil
}

// pollWait bounds one epoll_wait, so stop and sweeps are noticed.
const pollWait = 100 * time.Millisecond

func newPoller(h *Hub) (*poller, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	sweep := min(250*time.Millisecond, h.cfg.PingInterval/4, h.cfg.CloseGrace/4)
	p := &poller{
		h: h, epfd: fd, buf: make([]byte, 64<<10), sweep: max(sweep, 10*time.Millisecond),
		conns: make(map[uint64]*conn),
		stop:  make(chan struct{}), done: make(chan struct{}),
	}
	p.readFn = func(fd uintptr) bool {
		for {
			p.n, p.rerr = unix.Read(int(fd), p.buf)
			if p.rerr != unix.EINTR {
				return true // never wait: epoll said it is readable
			}
		}
	}
	return p, nil
}

var errNoFD = errors.New("connection has no file descriptor")

// add starts reading c.
func (p *poller) add(c *conn) error {
	sc, ok := c.nc.(syscall.Conn)
	if !ok {
		return errNoFD
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return fmt.Errorf("poll socket: %w", err)
	}
	p.mu.Lock()
	p.next++
	id := p.next
	c.mu.Lock() // enqueue reads c.poll
	c.poll = pollReg{id: id, raw: raw}
	c.mu.Unlock()
	p.conns[id] = c
	p.mu.Unlock()
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(uint32(id)), Pad: int32(uint32(id >> 32))}
	var cerr error
	if err = raw.Control(func(fd uintptr) { cerr = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, int(fd), &ev) }); err == nil {
		err = cerr
	}
	if err != nil {
		p.mu.Lock()
		delete(p.conns, id)
		p.mu.Unlock()
		c.mu.Lock()
		c.poll = pollReg{}
		c.mu.Unlock()
		return fmt.Errorf("epoll_ctl add: %w", err)
	}
	return nil
}

// run is the poller's goroutine; it ends after close.
func (p *poller) run() {
	defer close(p.done)
	defer unix.Close(p.epfd)
	events := make([]unix.EpollEvent, 256)
	ready := make([]*conn, 0, len(events))
	var swept time.Time
	for {
		n, err := unix.EpollWait(p.epfd, events, int(pollWait/time.Millisecond))
		if err != nil && !errors.Is(err, unix.EINTR) {
			p.h.log.Error("epoll_wait failed; sockets are no longer read", "err", err)
			return
		}
		now := time.Now()
		ready = ready[:0]
		p.mu.Lock()
		for _, ev := range events[:max(n, 0)] {
			if c := p.conns[uint64(uint32(ev.Fd))|uint64(uint32(ev.Pad))<<32]; c != nil {
				ready = append(ready, c)
			}
		}
		p.mu.Unlock()
		for i, c := range ready {
			p.read(c, now)
			ready[i] = nil
		}
		if now.Sub(swept) >= p.sweep {
			p.expire(now)
			swept = now
		}
		select {
		case <-p.stop:
			return
		default:
		}
	}
}

// read reads what c has (once: epoll is level-triggered, the rest is read
// on the next round) and parses it.
func (p *poller) read(c *conn, now time.Time) {
	p.n, p.rerr = 0, nil
	err := c.poll.raw.Read(p.readFn)
	n, rerr := p.n, p.rerr
	switch {
	case err == nil && rerr == unix.EAGAIN:
		return
	case err != nil || rerr != nil || n <= 0:
		p.finish(c) // closed, reset or end of input
		return
	}
	c.seen.Store(now.UnixNano())
	if !c.consume(p.buf[:n]) {
		p.finish(c)
	}
}

// expire ends reading for sockets that are silent too long or past closeBy.
func (p *poller) expire(now time.Time) {
	ns := now.UnixNano()
	var dead []*conn
	p.mu.Lock()
	for _, c := range p.conns {
		if c.expired(ns) {
			dead = append(dead, c)
		}
	}
	p.mu.Unlock()
	for _, c := range dead {
		p.finish(c)
	}
}

// finish stops reading c and finishes the socket.
func (p *poller) finish(c *conn) {
	p.mu.Lock()
	delete(p.conns, c.poll.id)
	p.mu.Unlock()
	// A closed descriptor has already left the epoll set.
	c.poll.raw.Control(func(fd uintptr) { unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, int(fd), nil) })
	c.finish()
}

// close stops the poller; the hub calls it once every socket has finished.
func (p *poller) close() {
	p.stopOnce.Do(func() { close(p.stop) })
	<-p.done
}
