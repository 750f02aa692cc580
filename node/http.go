package node

import (
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"inbox/internal/logsample"
)

// Defaults for zero HTTPLimits fields.
const (
	DefaultHTTPReadHeaderTimeout = 10 * time.Second
	DefaultHTTPReadTimeout       = 30 * time.Second
	DefaultHTTPWriteTimeout      = 60 * time.Second
	DefaultHTTPIdleTimeout       = 60 * time.Second
	DefaultHTTPMaxIdlePerIP      = 64
)

// HTTPLimits bound what one HTTP connection may cost. They apply to the API
// and to a WebSocket's handshake only: once upgraded, a socket has none of
// these deadlines (gobwas/ws clears those net/http set when it hijacks the
// connection) and lives by its own ping/pong and write deadlines.
type HTTPLimits struct {
	// ReadHeaderTimeout bounds reading a request's headers.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, headers and body: a body
	// that is announced and never sent is cut off by it.
	ReadTimeout time.Duration
	// WriteTimeout bounds a request from the end of its headers to the end
	// of its response, handler included.
	WriteTimeout time.Duration
	// IdleTimeout is how long a keep-alive connection waits for its next
	// request before the server closes it.
	IdleTimeout time.Duration
	// MaxIdlePerIP is how many keep-alive connections one client address
	// (an IPv6 client: its /64) may hold idle; a connection that finishes
	// a request past it is closed instead of kept (see idleCap).
	MaxIdlePerIP int
}

func (l HTTPLimits) withDefaults() HTTPLimits {
	setD := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	setD(&l.ReadHeaderTimeout, DefaultHTTPReadHeaderTimeout)
	setD(&l.ReadTimeout, DefaultHTTPReadTimeout)
	setD(&l.WriteTimeout, DefaultHTTPWriteTimeout)
	setD(&l.IdleTimeout, DefaultHTTPIdleTimeout)
	if l.MaxIdlePerIP <= 0 {
		l.MaxIdlePerIP = DefaultHTTPMaxIdlePerIP
	}
	return l
}

// newHTTPServer is the node's HTTP server: h behind the limits l.
func newHTTPServer(l HTTPLimits, h http.Handler, log *slog.Logger) *http.Server {
	l = l.withDefaults()
	idle := &idleCap{
		max: l.MaxIdlePerIP, log: logsample.New(log, 0, 0),
		idle: make(map[netip.Prefix]int), conns: make(map[net.Conn]netip.Prefix),
	}
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: l.ReadHeaderTimeout,
		ReadTimeout:       l.ReadTimeout,
		WriteTimeout:      l.WriteTimeout,
		IdleTimeout:       l.IdleTimeout,
		ConnState:         idle.track,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// idleCap caps the idle keep-alive connections of each client address. A
// connection that finishes a request while its address already holds max
// idle ones is closed at once, from its own serving goroutine: its response
// is written and nothing of a next request read, so nothing is cut short.
// The older idle connections stay (closing one of them instead would race
// with a request arriving on it). A client that pools more connections than
// the cap simply reconnects for those.
type idleCap struct {
	max int
	log *logsample.Sampler

	mu    sync.Mutex
	idle  map[netip.Prefix]int      // idle connections per client address
	conns map[net.Conn]netip.Prefix // the connections counted in idle
}

// track is the server's ConnState hook.
func (c *idleCap) track(nc net.Conn, st http.ConnState) {
	c.mu.Lock()
	if a, ok := c.conns[nc]; ok { // it leaves idle: active again, hijacked or closed
		delete(c.conns, nc)
		if c.idle[a]--; c.idle[a] == 0 {
			delete(c.idle, a)
		}
	}
	if st != http.StateIdle {
		c.mu.Unlock()
		return
	}
	a := clientPrefix(nc.RemoteAddr())
	if c.idle[a] >= c.max {
		c.mu.Unlock()
		c.log.Info("http_idle_cap", "closing idle HTTP connection: too many from one address", "remote", a, "limit", c.max)
		nc.Close()
		return
	}
	c.idle[a]++
	c.conns[nc] = a
	c.mu.Unlock()
}

// clientPrefix is who a connection is counted against: its IPv4 address, or
// its IPv6 /64 (one client commonly holds a whole /64).
func clientPrefix(addr net.Addr) netip.Prefix {
	ap, err := netip.ParseAddrPort(addr.String())
	if err != nil {
		return netip.Prefix{} // not IP: all such connections share one count
	}
	ip := ap.Addr().Unmap()
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Prefix(bits)
	return p
}
