// Package wsedge is inbox's WebSocket edge (github.com/gobwas/ws): it
// authenticates before the upgrade, keeps a bounded per-socket state, routes
// what the node's live feed (package feed) hands it to the sockets in memory
// (user → sockets),
// turns client frames into chat.Service calls, and resumes a reconnecting
// client from a cursor (a stream sequence per partition) with no gap and no
// duplicate.
//
// Goroutines: one poller for the hub (Linux: epoll) reads every socket and
// answers what cannot block; a socket's worker exists only while it has frames
// that need the stream (a message, an admitted TYPING, READ, RESUME), and its
// writer only while a write would block; plus one hub-wide pinger and one
// expirer (token expiry, expiry.go). Where the poller cannot be used, each
// socket has a reader goroutine instead. A socket
// ends when its reading ends. Dispatch never blocks on a socket: a socket
// whose queue is full is closed with 4013.
//
// Too many sockets for one user are refused before the upgrade with HTTP 429
// (code rate_limited), so a client never sees a socket open and shut at once.
package wsedge

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"github.com/prometheus/client_golang/prometheus"

	"inbox/admission"
	"inbox/auth"
	"inbox/chat"
	"inbox/eventstore"
	"inbox/internal/logsample"
	"inbox/metrics"
)

// Reader reads a bounded range of a partition and tells every partition's
// last sequence; *eventstore.Store is one.
type Reader interface {
	Partitions() int
	Read(ctx context.Context, k int, from, to uint64, filters []string, fn func(eventstore.Stored) error, opts ...eventstore.ReadOption) error
	Last(ctx context.Context) (eventstore.Cursor, error)
}

// Authenticator verifies the token a request carries, or a token alone (a
// REFRESH frame's); *auth.Verifier is one.
type Authenticator interface {
	Authenticate(r *http.Request) (auth.Claims, error)
	Verify(token string) (auth.Claims, error)
}

// Interest is the live feed's side of opening and closing sockets in
// interest mode (*feed.Feed is one): the feed receives only the events of
// conversations with a socket here, so a socket is registered by the feed,
// between two events, at a cut from which it delivers every event of the
// socket's conversations.
type Interest interface {
	// Attach calls register once, on the feed's goroutine, with the cut
	// (per partition; nil: none): the socket's live frames at or below it
	// are dropped, everything after it reaches the socket. conv is a legacy
	// chat socket's conversation, 0 for an inbox socket (all of user's).
	// An error means register was not called.
	Attach(ctx context.Context, user string, conv int64, register func(cut eventstore.Cursor)) error
	// Detach says that a socket Attach registered closed.
	Detach(user string, conv int64)
}

// Presence hears when a user's first socket on this node opens and the last
// closes. Calls are made in order, one at a time, outside the hub's routing
// lock; they must return quickly (hand slow work to a goroutine).
type Presence interface {
	Online(user string)
	Offline(user string)
}

var (
	_ Reader        = (*eventstore.Store)(nil)
	_ Authenticator = (*auth.Verifier)(nil)
)

// endpoint is what a socket carries.
type endpoint uint8

const (
	epInbox endpoint = iota // /ws/inbox/: every conversation of the user
	epChat                  // /ws/chat/<id>/: one conversation (legacy)
	epJob                   // /ws/job/<id>/: one job's status
)

var endpointNames = [...]string{epInbox: "inbox", epChat: "chat", epJob: "job"}

// Deps are the parts a Hub is built on. Service, Authenticator and Reader
// are required.
type Deps struct {
	// Service appends what clients send; its Directory answers membership.
	Service       *chat.Service
	Authenticator Authenticator
	// Reader serves catch-up reads.
	Reader Reader
	// Presence, if set, hears of a user's first socket opening and last
	// closing on this node.
	Presence Presence
	// Interest, if set, registers inbox and chat sockets with the live feed
	// (interest mode); nil: the feed delivers every event, and a socket is
	// registered at once.
	Interest Interest
	// Metrics counts sockets and frames; nil: a registry of the hub's own.
	Metrics *metrics.Metrics
	// Gate, if set, hears how many frames wait in socket queues and sheds
	// presence changes while the node is busy (docs/overload.md).
	Gate   Gate
	Logger *slog.Logger // nil: discard
}

// Gate is the node's admission control as the hub sees it;
// *admission.Controller is one.
type Gate interface {
	// Admit says whether a presence change may go out now.
	Admit(admission.Kind) error
	// Busy says whether it would refuse one, without counting a refusal.
	Busy(admission.Kind) bool
	// Queued adds n (negative: removes) to the frames waiting in socket
	// queues.
	Queued(n int)
}

var _ Gate = (*admission.Controller)(nil)

// Hub serves the WebSocket endpoints and fans the live feed out to sockets;
// it is the feed's sink (feed.Sink).
type Hub struct {
	cfg    Config
	svc    *chat.Service
	dir    *chat.Directory
	authn  Authenticator
	reader Reader
	pres   Presence // nil: none
	intr   Interest // nil: the feed delivers everything
	m      *metrics.Metrics
	log    *slog.Logger
	// refusals logs, sampled, what a client can provoke at will: refused
	// handshakes and tokens, protocol violations, sockets cut for a limit.
	refusals *logsample.Sampler

	framesOut [numKinds]prometheus.Counter
	framesIn  map[string]prometheus.Counter

	ctx    context.Context // ends at Shutdown: aborts sends and catch-ups
	cancel context.CancelFunc
	wg     sync.WaitGroup // sockets being read, writers, workers, the pinger
	poll   *poller        // reads the sockets; nil: a reader goroutine per socket

	// last is, per partition, the last sequence Dispatch was called with,
	// stored once the event's frames are queued. It is written with mu
	// read-held by the feed (one call at a time) and read with mu held, so
	// a socket registered under mu knows exactly which events it will get
	// live.
	last []atomic.Uint64

	mu     sync.RWMutex
	users  map[string]*userSockets
	closed bool
	slots  uint32 // the ping slot the next socket gets, round robin
	opened uint64 // sockets registered so far

	presMu sync.Mutex // orders Presence calls
	exp    expiries   // token expiry deadlines (expiry.go)

	flush *flushList // sockets with frames to write, for the flusher (writer.go)
	gate  Gate       // nil: nothing shed, queues not reported

	// ACKs held until the event they acknowledge is dispatched (acks.go).
	ackMu sync.Mutex
	acks  []heldAck
	nacks atomic.Int64 // len(acks), and ACKs being held, read without ackMu

	// Presence changes held while the node sheds them (presence.go).
	presHeld presenceHeld
}

// userSockets are one user's sockets on this node.
type userSockets struct {
	conns    []*conn
	reserved int    // upgrades in progress, counted against MaxSocketsPerUser
	opened   uint64 // Hub.opened when the user's latest socket registered
}

// New returns a Hub; zero Config fields take their defaults. It panics if a
// required dependency is missing: that is a wiring mistake, not a runtime
// condition.
func New(cfg Config, d Deps) *Hub {
	switch {
	case d.Service == nil:
		panic("wsedge: no chat service")
	case d.Authenticator == nil:
		panic("wsedge: no authenticator")
	case d.Reader == nil:
		panic("wsedge: no stream reader")
	}
	if d.Metrics == nil {
		d.Metrics = metrics.New(metrics.Sources{})
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	cfg = cfg.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	h := &Hub{
		cfg: cfg, svc: d.Service, dir: d.Service.Directory(), authn: d.Authenticator, reader: d.Reader,
		pres: d.Presence, intr: d.Interest, m: d.Metrics,
		log:      d.Logger.With("component", "wsedge"),
		framesIn: make(map[string]prometheus.Counter),
		ctx:      ctx, cancel: cancel,
		users: make(map[string]*userSockets),
		last:  make([]atomic.Uint64, max(d.Reader.Partitions(), 1)),
		flush: newFlushList(), gate: d.Gate,
	}
	h.refusals = logsample.New(h.log, 0, 0)
	h.exp.wake = make(chan struct{}, 1)
	for k := range numKinds {
		h.framesOut[k] = h.m.FramesOut.WithLabelValues(kindLabels[k])
	}
	for _, t := range []string{inMessage, inTyping, inRead, inPing, inResume, inRefresh, inEdit, inDelete, inReact, inInvalid} {
		h.framesIn[t] = h.m.FramesIn.WithLabelValues(t)
	}
	if !cfg.goroutineReaders {
		p, err := newPoller(h)
		if err != nil {
			h.log.Info("reading each socket on its own goroutine", "reason", err)
		} else {
			h.poll = p
			go p.run()
		}
	}
	h.wg.Add(2)
	go h.pinger()
	go h.expirer()
	go h.flusher() // stopped by Shutdown once the sockets are done
	return h
}

// queued tells the gate, if any, that n frames (negative: fewer) wait in
// socket queues.
func (h *Hub) queued(n int) {
	if h.gate != nil && n != 0 {
		h.gate.Queued(n)
	}
}

// ServeHTTP upgrades /ws/inbox/, /ws/chat/<id>/ and /ws/job/<id>/ after
// authenticating the request and checking membership; ?since=<seq> resumes.
func (h *Hub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ep, id, ok := route(r.URL.Path)
	if !ok {
		httpError(w, http.StatusNotFound, chat.CodeNotFound, "no WebSocket endpoint at "+r.URL.Path)
		return
	}
	if ep != epInbox && id > eventstore.MaxID {
		httpError(w, http.StatusBadRequest, chat.CodeBadRequest, "the id in the path must be a positive integer up to "+strconv.FormatInt(eventstore.MaxID, 10)+" (2^53−1)")
		return
	}
	// What gobwas/ws would refuse in plain text is refused here as JSON,
	// like every other error of the service.
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		httpError(w, http.StatusMethodNotAllowed, codeMethodNotAllowed, "a WebSocket handshake is a GET, not "+r.Method)
		return
	}
	claims, err := h.authn.Authenticate(r)
	if err != nil {
		reason := authReason(err)
		h.m.AuthFailures.WithLabelValues(reason).Inc()
		h.refusals.Info("auth_"+reason, "socket refused: authentication", "endpoint", endpointNames[ep], "remote", r.RemoteAddr, "err", err)
		httpError(w, http.StatusUnauthorized, "unauthorized", err.Error())
		return
	}
	// After the token, so a refused one reads the same whether or not the
	// request is a handshake.
	if !isUpgrade(r) {
		h.refusals.Info("not_websocket", "socket refused: not a WebSocket handshake", "endpoint", endpointNames[ep], "remote", r.RemoteAddr)
		w.Header().Set("Upgrade", "websocket")
		w.Header().Set("Connection", "Upgrade")
		httpError(w, http.StatusUpgradeRequired, chat.CodeBadRequest, r.URL.Path+" is a WebSocket endpoint: connect with a WebSocket client (Connection: Upgrade, Upgrade: websocket)")
		return
	}
	user := claims.UserID
	switch {
	case ep == epChat && !h.dir.IsMember(id, user):
		httpError(w, http.StatusForbidden, chat.CodeForbidden, "not a member of conversation "+strconv.FormatInt(id, 10))
		return
	case ep == epJob && !h.dir.IsJobMember(id, user):
		httpError(w, http.StatusForbidden, chat.CodeForbidden, "not a member of job "+strconv.FormatInt(id, 10))
		return
	}
	var since eventstore.Cursor
	var refused error // the socket opens live and is told why it was not caught up
	resume := r.URL.Query().Has("since")
	if resume {
		if since, err = h.parseSince(r.URL.Query().Get("since")); err != nil {
			httpError(w, http.StatusBadRequest, chat.CodeBadRequest, err.Error())
			return
		}
		if err := h.checkSince(r.Context(), since); err != nil {
			if chat.CodeOf(err) != chat.CodeBadRequest {
				httpError(w, http.StatusServiceUnavailable, chat.CodeUnavailable, err.Error())
				return
			}
			resume, since, refused = false, nil, err
		}
	}
	if status, code, msg := h.reserve(user); status != 0 {
		httpError(w, status, code, msg)
		return
	}
	nc, rw, _, err := ws.HTTPUpgrader{Timeout: h.cfg.WriteTimeout}.Upgrade(r, w)
	if err != nil {
		h.unreserve(user)
		if nc != nil {
			nc.Close() // the upgrader has answered with an HTTP error
		}
		h.refusals.Info("handshake", "socket refused: handshake", "user_id", user, "remote", r.RemoteAddr, "err", err)
		return
	}
	// No deadline of the HTTP server's (read, write, idle) applies to a
	// socket: gobwas/ws clears them on upgrade, and so does this, whatever
	// the library does. The socket's own are set per read and write.
	nc.SetDeadline(time.Time{})
	c := newConn(h, nc, claims, ep, id)
	// The request's reader may hold bytes the client sent right after the
	// handshake; they come first. net/http's buffers are then dropped.
	var pre []byte
	if n := rw.Reader.Buffered(); n > 0 {
		p, _ := rw.Reader.Peek(n)
		pre = append([]byte(nil), p...)
	}
	if !h.attach(r.Context(), c, resume, since) {
		return
	}
	h.schedule(c, claims.ExpiresAt)
	if refused != nil {
		c.enqueue(encodeError(refused, "", 0))
	}
	c.start(resume, since, pre)
}

// parseSince reads a resume cursor (?since=, RESUME's since or cursor).
func (h *Hub) parseSince(s string) (eventstore.Cursor, error) {
	c, err := eventstore.ParseCursor(s, len(h.last))
	if err != nil {
		if len(h.last) == 1 {
			return nil, badRequest("since must be a stream sequence (an integer from 0 to %d): %v", int64(eventstore.MaxID), err)
		}
		return nil, badRequest("since must be a cursor: the event ids (seq) of the %d partitions' last events received, comma-separated, as SYNCED's cursor gives: %v", len(h.last), err)
	}
	return c, nil
}

// lastCursor is, per partition, the last sequence dispatched. Read it with
// mu held (or read-held by the feed) for a consistent cursor.
func (h *Hub) lastCursor() eventstore.Cursor {
	c := eventstore.NewCursor(len(h.last))
	for k := range h.last {
		c[k] = h.last[k].Load()
	}
	return c
}

// dispatched reports whether the feed has dispatched the event with id.
func (h *Hub) dispatched(id uint64) bool {
	k, seq := eventstore.Split(len(h.last), id)
	return k < len(h.last) && seq <= h.last[k].Load()
}

// markDispatched records that the frames of the event with id are queued.
// mu is read-held by the feed.
func (h *Hub) markDispatched(id uint64) {
	if k, seq := eventstore.Split(len(h.last), id); k < len(h.last) {
		h.last[k].Store(seq)
	}
}

// Passed moves the dispatched sequences up to c (the feed hands no event at
// or below it any more: where it starts, and what interest mode skipped),
// and releases the ACKs waiting for events there.
func (h *Hub) Passed(c eventstore.Cursor) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for k := range min(len(c), len(h.last)) {
		if c[k] > h.last[k].Load() {
			h.last[k].Store(c[k])
		}
	}
	h.releaseAcks()
}

// checkSince refuses a resume from beyond the stream's last sequence in a
// partition: the socket would drop every live event up to since as already
// seen, and go deaf there until the stream got there. A since the hub has
// dispatched is known good without asking the stream.
func (h *Hub) checkSince(ctx context.Context, since eventstore.Cursor) error {
	if h.lastCursor().Reaches(since) {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, h.cfg.ResumeTimeout)
	defer cancel()
	last, err := h.reader.Last(ctx)
	if err != nil {
		return &chat.Error{Code: chat.CodeUnavailable, Msg: "event stream unavailable: cannot resume now", Err: err}
	}
	if !last.Reaches(since) {
		if len(last) == 1 {
			return chat.Errorf(chat.CodeBadRequest,
				"since %s is beyond the stream's last sequence %s: nothing was caught up and the socket is live; resume from a sequence you received", since, last)
		}
		return chat.Errorf(chat.CodeBadRequest,
			"since %s is beyond the streams' last events %s in a partition: nothing was caught up and the socket is live; resume from a cursor you received", since, last)
	}
	return nil
}

// route parses an endpoint path; the trailing slash is optional.
func route(path string) (endpoint, int64, bool) {
	rest, ok := strings.CutPrefix(path, "/ws/")
	if !ok {
		return 0, 0, false
	}
	rest = strings.TrimSuffix(rest, "/")
	if rest == "inbox" {
		return epInbox, 0, true
	}
	kind, idStr, ok := strings.Cut(rest, "/")
	if !ok || idStr == "" || idStr[0] == '+' || idStr[0] == '-' {
		return 0, 0, false
	}
	id, err := strconv.ParseInt(idStr, 10, 64)
	if err != nil || id <= 0 {
		return 0, 0, false
	}
	switch kind {
	case "chat":
		return epChat, id, true
	case "job":
		return epJob, id, true
	}
	return 0, 0, false
}

// codeMethodNotAllowed is the error code of a request under another method
// than GET (as httpapi's).
const codeMethodNotAllowed = "method_not_allowed"

// isUpgrade reports whether r asks for a WebSocket: Connection names the
// upgrade token and Upgrade is websocket (RFC 6455 4.2.1). gobwas/ws checks
// the same inside HTTPUpgrader.Upgrade, but only there, with no exported
// helper, and it answers a failure in plain text; this check comes first so
// that a plain GET gets the service's JSON 426. The rest of the handshake
// (Sec-WebSocket-Key, -Version) is left to gobwas/ws.
func isUpgrade(r *http.Request) bool {
	if !strings.EqualFold(strings.TrimSpace(r.Header.Get("Upgrade")), "websocket") {
		return false
	}
	for _, v := range r.Header.Values("Connection") {
		for tok := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(tok), "upgrade") {
				return true
			}
		}
	}
	return false
}

func authReason(err error) string {
	switch {
	case errors.Is(err, auth.ErrNoToken):
		return "missing"
	case errors.Is(err, auth.ErrTokenExpired):
		return "expired"
	}
	return "invalid"
}

func httpError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(struct {
		Error string `json:"error"`
		Code  string `json:"code"`
	}{msg, code})
}

// reserve counts an upgrade in progress against the user's socket limit. It
// returns a non-zero HTTP status if the socket must be refused.
func (h *Hub) reserve(user string) (status int, code, msg string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return http.StatusServiceUnavailable, chat.CodeUnavailable, "server shutting down"
	}
	us := h.users[user]
	if us == nil {
		us = &userSockets{}
		h.users[user] = us
	}
	if len(us.conns)+us.reserved >= h.cfg.MaxSocketsPerUser {
		return http.StatusTooManyRequests, chat.CodeRateLimited,
			"too many sockets: at most " + strconv.Itoa(h.cfg.MaxSocketsPerUser) + " per user"
	}
	us.reserved++
	h.wg.Add(1) // the socket's reader, or undone by unreserve
	return 0, "", ""
}

func (h *Hub) unreserve(user string) {
	h.mu.Lock()
	if us := h.users[user]; us != nil {
		us.reserved--
		if len(us.conns) == 0 && us.reserved == 0 {
			delete(h.users, user)
		}
	}
	h.mu.Unlock()
	h.wg.Done()
}

// interestOf is what a socket asks the live feed for: a legacy chat
// socket's conversation, or (0) its user's; ok is false for a job socket,
// whose statuses every node receives.
func (c *conn) interestOf() (conv int64, ok bool) {
	switch c.ep {
	case epChat:
		return c.id, true
	case epInbox:
		return 0, true
	}
	return 0, false
}

// attach registers the socket, through the live feed in interest mode. It
// reports false if the socket was closed instead (the hub shut down, or the
// feed is not running).
func (h *Hub) attach(ctx context.Context, c *conn, resume bool, since eventstore.Cursor) bool {
	conv, ok := c.interestOf()
	if h.intr == nil || !ok {
		return h.register(c, resume, since, nil)
	}
	ctx, cancel := context.WithTimeout(ctx, h.cfg.ResumeTimeout)
	defer cancel()
	registered := false
	err := h.intr.Attach(ctx, c.user, conv, func(cut eventstore.Cursor) {
		registered = h.register(c, resume, since, cut)
	})
	switch {
	case err != nil:
		h.log.Warn("socket refused: the live feed did not take it", "user_id", c.user, "err", err)
		h.refuse(c, ws.StatusInternalServerError, "live feed unavailable; reconnect")
		return false
	case !registered:
		h.intr.Detach(c.user, conv)
	}
	return registered
}

// refuse closes an upgraded socket that was never registered.
func (h *Hub) refuse(c *conn, code ws.StatusCode, reason string) {
	c.nc.SetWriteDeadline(time.Now().Add(h.cfg.WriteTimeout))
	c.nc.Write(closeFrame(code, reason).wire)
	c.nc.Close()
	h.unreserve(c.user)
}

// register turns a reservation into a live socket. Under the routing lock it
// notes the last dispatched sequence, or the feed's cut if that is later, so
// a resuming socket buffers exactly the events after it. It reports false if
// the hub shut down meanwhile (the socket is then closed with 1001).
func (h *Hub) register(c *conn, resume bool, since, cut eventstore.Cursor) bool {
	h.presMu.Lock()
	defer h.presMu.Unlock()
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		h.refuse(c, ws.StatusGoingAway, "server shutting down")
		return false
	}
	us := h.users[c.user]
	us.reserved--
	us.conns = append(us.conns, c)
	first := len(us.conns) == 1
	c.slot = h.slots
	h.slots = (h.slots + 1) % pingSlices
	h.opened++
	us.opened = h.opened
	c.liveFrom = h.lastCursor()
	c.liveFrom.Max(cut)
	if resume {
		c.syncing, c.catching = true, true
		c.owned = true // the worker writes the catch-up itself
		c.since = since
	}
	h.mu.Unlock()

	h.m.OpenSockets.Inc()
	h.log.Debug("socket open", "user_id", c.user, "endpoint", endpointNames[c.ep], "id", c.id, "seq", c.liveFrom.String())
	if first && h.pres != nil {
		h.pres.Online(c.user)
	}
	return true
}

func (h *Hub) unregister(c *conn) {
	h.presMu.Lock()
	defer h.presMu.Unlock()
	h.mu.Lock()
	us := h.users[c.user]
	for i, o := range us.conns {
		if o == c {
			us.conns[i] = us.conns[len(us.conns)-1]
			us.conns[len(us.conns)-1] = nil
			us.conns = us.conns[:len(us.conns)-1]
			break
		}
	}
	last := len(us.conns) == 0
	if last && us.reserved == 0 {
		delete(h.users, c.user)
	}
	h.mu.Unlock()
	h.unschedule(c)
	if conv, ok := c.interestOf(); ok && h.intr != nil {
		h.intr.Detach(c.user, conv)
	}

	h.m.OpenSockets.Dec()
	h.log.Debug("socket closed", "user_id", c.user, "endpoint", endpointNames[c.ep], "id", c.id)
	if last && h.pres != nil {
		h.pres.Offline(c.user)
	}
}

// Dispatch routes one stream event to the sockets it concerns. The live
// feed calls it one event at a time, each partition's in stream order,
// right after dir.Apply(st) returned ch. Each frame is encoded once and its bytes shared by every
// recipient; Dispatch never blocks on a socket.
func (h *Hub) Dispatch(st eventstore.Stored, ch chat.Change) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	seq := st.Seq
	// last moves once the event's frames are queued, under mu: a socket
	// registering gets, live, exactly the events after it. Then the ACKs
	// waiting for it follow it into the queues.
	defer h.releaseAcks()
	defer h.markDispatched(seq)
	switch e := st.Event.(type) {
	case *eventstore.Message:
		h.deliverLocked(st.Time, ch.Members, "", e.ConversationID, 0, func() frame { return encodeMessage(seq, e) }, ch.Unread...)
	case *eventstore.Typing:
		h.deliverLocked(st.Time, ch.Members, e.UserID, e.ConversationID, 0, func() frame { return encodeTyping(seq, e) })
	case *eventstore.Read:
		h.deliverLocked(st.Time, ch.Members, "", e.ConversationID, 0, func() frame { return encodeRead(seq, e) })
	case *eventstore.Created:
		h.membershipLocked(st, e.ConversationID, ch)
	case *eventstore.MemberChanged:
		h.membershipLocked(st, e.ConversationID, ch)
	case *eventstore.JobStatus:
		h.deliverLocked(st.Time, ch.Members, "", 0, e.JobID, func() frame { return encodeJobStatus(seq, e) })
	case *eventstore.Edit:
		h.deliverLocked(st.Time, ch.Members, "", e.ConversationID, 0, func() frame { return encodeEdited(seq, e) })
	case *eventstore.Delete:
		h.deliverLocked(st.Time, ch.Members, "", e.ConversationID, 0, func() frame { return encodeDeleted(seq, e.ConversationID, e.MessageID) })
	case *eventstore.Erased:
		h.deliverLocked(st.Time, ch.Members, "", e.ConversationID, 0, func() frame { return encodeDeleted(seq, e.ConversationID, e.MessageID) })
	case *eventstore.React:
		h.deliverLocked(st.Time, ch.Members, "", e.ConversationID, 0, func() frame { return encodeReaction(seq, e) })
	}
}

func (h *Hub) membershipLocked(st eventstore.Stored, conv int64, ch chat.Change) {
	if len(ch.Joined) > 0 {
		h.deliverLocked(st.Time, ch.Joined, "", conv, 0, func() frame { return encodeJoined(st.Seq, conv, ch.Members) })
	}
	if len(ch.Left) > 0 {
		h.deliverLocked(st.Time, ch.Left, "", conv, 0, func() frame { return encodeLeft(st.Seq, conv) })
	}
}

// deliverLocked queues the frame enc makes (once, on the first recipient) to
// every socket of users, except skip's, that carries conversation conv or job
// job. A user named in counts (the live feed's unread counts of conv; users
// and counts sorted by user) gets its UNREAD queued with the frame, so one
// write carries both. h.mu must be held.
func (h *Hub) deliverLocked(at time.Time, users []string, skip string, conv, job int64, enc func() frame, counts ...chat.UnreadCount) {
	var f frame
	made := false
	for _, u := range users {
		for len(counts) > 0 && counts[0].User < u {
			counts = counts[1:]
		}
		us := h.users[u]
		if us == nil || u == skip {
			continue
		}
		var unread frame
		counted := len(counts) > 0 && counts[0].User == u
		if counted {
			unread = encodeUnread(conv, counts[0].Unread)
		}
		for _, c := range us.conns {
			if !c.carries(conv, job) {
				continue
			}
			if !made {
				f, made = enc(), true
				f.at = at
			}
			if counted {
				c.enqueue(f, unread)
			} else {
				c.enqueue(f)
			}
		}
	}
}

// PushUnread sends an UNREAD frame with user's unread count of conv to its
// sockets that carry conv. The live feed calls it once the event that made
// the count has been dispatched (feed.Feed.PushUnread).
func (h *Hub) PushUnread(conv int64, user string, unread int64) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	h.deliverLocked(time.Time{}, []string{user}, "", conv, 0, func() frame { return encodeUnread(conv, unread) })
}

// Opened says when user's latest socket here registered, as a number that
// grows with every socket the hub registers (0: the user has none): a
// socket opened since a count was sent has not been told it.
func (h *Hub) Opened(user string) uint64 {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if us := h.users[user]; us != nil {
		return us.opened
	}
	return 0
}

// Connected reports whether user has a socket on this node, or one being
// opened.
func (h *Hub) Connected(user string) bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.users[user] != nil
}

// deliverPresence tells the users who share a conversation with user that it
// came online or went offline (lastSeen: when, if known). The frame goes to
// their inbox sockets and to their legacy chat sockets of a conversation user
// is in; never to user's own sockets, never to anyone else. It is encoded once.
func (h *Hub) deliverPresence(user string, online bool, lastSeen time.Time) {
	contacts := h.dir.Contacts(user)
	if len(contacts) == 0 {
		return
	}
	var f frame
	made := false
	h.mu.RLock()
	defer h.mu.RUnlock()
	for _, u := range contacts {
		us := h.users[u]
		if us == nil {
			continue
		}
		for _, c := range us.conns {
			switch c.ep {
			case epInbox:
			case epChat:
				if !h.dir.IsMember(c.id, user) {
					continue
				}
			default:
				continue
			}
			if !made {
				f, made = encodePresence(user, online, lastSeen), true
			}
			c.enqueue(f)
		}
	}
}

// pingSlices is how many turns the pinger spreads one round over.
const pingSlices = 100

// pinger pings every socket once per PingInterval: one ticker for the node,
// taking the sockets in pingSlices turns (by slot, handed out round robin),
// so 20,000 sockets cost 200 pings per turn rather than 20,000 writes, and
// as many pongs, at once. Pinging 10,000 sockets at once held fan-out
// messages up by about 100 ms in `inbox bench`. A socket that answers nothing
// is cut by the liveness sweep; one that does not read fills its queue and
// is closed as slow.
func (h *Hub) pinger() {
	defer h.wg.Done()
	turns := uint32(max(1, min(pingSlices, h.cfg.PingInterval/(10*time.Millisecond))))
	t := time.NewTicker(h.cfg.PingInterval / time.Duration(turns))
	defer t.Stop()
	var conns []*conn
	for turn := uint32(0); ; turn = (turn + 1) % turns {
		select {
		case <-h.ctx.Done():
			return
		case <-t.C:
		}
		h.releaseAcksHeldBefore(time.Now().Add(-maxAckHold))
		// The pings are written outside the routing lock: thousands of
		// writes must not hold up a registration, and Dispatch behind it.
		conns = conns[:0]
		h.mu.RLock()
		for _, us := range h.users {
			for _, c := range us.conns {
				if c.slot%turns == turn {
					conns = append(conns, c)
				}
			}
		}
		h.mu.RUnlock()
		for i, c := range conns {
			c.enqueue(pingFrame)
			conns[i] = nil
		}
		h.releasePresence()
	}
}

// Shutdown stops accepting sockets and closes every open one with 1001, then
// waits for their goroutines until ctx ends (then it cuts the rest off).
// It may be called more than once.
func (h *Hub) Shutdown(ctx context.Context) error {
	h.mu.Lock()
	h.closed = true
	var conns []*conn
	for _, us := range h.users {
		conns = append(conns, us.conns...)
	}
	h.mu.Unlock()
	h.cancel()
	for _, c := range conns {
		c.closeWith(ws.StatusGoingAway, "server shutting down")
	}
	done := make(chan struct{})
	go func() {
		h.wg.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		for _, c := range conns {
			c.kill()
		}
		<-done
		err = ctx.Err()
	}
	h.stopFlusher()
	if h.poll != nil {
		h.poll.close()
	}
	return err
}
