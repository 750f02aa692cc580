// Package httpapi serves inbox's HTTP API: the user endpoints (conversation
// list, history, sending without a socket) authenticated with the same JWT as
// the socket, the service endpoints behind the admin token, and the
// operations endpoints (health, readiness, metrics, the OpenAPI document).
//
// Writes go through the same chat.Service as the WebSocket edge, so input is
// validated in one place. Reads come from the SQLite projection; before
// answering a user, a handler waits (bounded by Config.ConsistencyWait) until
// the projection has applied the user's own latest write on this node, so a
// client reads its own writes. When the wait runs out the answer is sent
// anyway, marked with the header "X-Inbox-Stale: true"; a POST whose event is
// stored but not yet readable answers 202 with the message's id instead of
// 201 with the full message.
package httpapi

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"inbox/auth"
	"inbox/chat"
	"inbox/internal/logsample"
	"inbox/metrics"
	"inbox/projections"
)

// Defaults for zero Config fields.
const (
	DefaultMaxBodyBytes    = 64 << 10
	DefaultConsistencyWait = 2 * time.Second
	DefaultUserRate        = 20
)

// StaleHeader is set to "true" on an answer that may miss the caller's
// latest writes: the projection did not catch up within ConsistencyWait.
const StaleHeader = "X-Inbox-Stale"

// Config tunes the API.
type Config struct {
	// MaxBodyBytes bounds a request body; a larger one is refused with 413.
	MaxBodyBytes int64
	// ConsistencyWait bounds how long a request waits for the projection to
	// reach the caller's latest write.
	ConsistencyWait time.Duration
	// UserRate and UserBurst bound the requests one user makes to the user
	// routes of this node, all together (a token bucket); past them a
	// request is answered 429 rate_limited with Retry-After. UserBurst
	// defaults to twice UserRate.
	UserRate  float64
	UserBurst int
}

func (c *Config) defaults() {
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.ConsistencyWait <= 0 {
		c.ConsistencyWait = DefaultConsistencyWait
	}
	if c.UserRate <= 0 {
		c.UserRate = DefaultUserRate
	}
	if c.UserBurst <= 0 {
		c.UserBurst = int(max(1, 2*c.UserRate))
	}
}

// Authenticator verifies the user token a request carries; *auth.Verifier is one.
type Authenticator interface {
	Authenticate(r *http.Request) (auth.Claims, error)
}

// AdminChecker checks a request's service token, returning an error wrapping
// auth.ErrUnauthorized (missing) or auth.ErrForbidden (wrong); *auth.AdminToken is one.
type AdminChecker interface {
	Check(r *http.Request) error
}

// ReadModel answers the user queries; *projections.DB is one.
type ReadModel interface {
	Conversations(ctx context.Context, userID string) ([]projections.Conversation, error)
	Messages(ctx context.Context, convID, before int64, limit int) ([]projections.Message, error)
}

// Projection reports how far the read model has applied the stream;
// *projections.Projector is one.
type Projection interface {
	WaitFor(ctx context.Context, seq uint64) error
}

// Presence answers whether a user is online on any node and, if not, when it
// was last seen (zero: unknown); *presence.Tracker is one.
type Presence interface {
	Status(user string) (online bool, lastSeen time.Time)
}

var (
	_ Authenticator = (*auth.Verifier)(nil)
	_ AdminChecker  = (*auth.AdminToken)(nil)
	_ ReadModel     = (*projections.DB)(nil)
	_ Projection    = (*projections.Projector)(nil)
)

// Deps are the parts the API is built on. Service, Verifier, Admin, DB and
// Projection are required.
type Deps struct {
	Service    *chat.Service
	Verifier   Authenticator
	Admin      AdminChecker
	DB         ReadModel
	Projection Projection
	// Presence answers GET /api/presence; nil: that route answers 503.
	Presence Presence
	// Metrics receives the request counts and serves /metrics; nil: a
	// registry of the API's own.
	Metrics *metrics.Metrics
	// Ready reports whether the node can serve (GET /readyz); nil: always.
	Ready func(ctx context.Context) error
	// Status reports the node for GET /api/admin/status; nil: 503.
	Status func(ctx context.Context) (Status, error)
	// Sockets closes a user's sockets (POST
	// /api/admin/users/{user_id}/disconnect); nil: 503.
	Sockets Sockets
	// Eraser erases messages and users (POST …/erase); nil: 503.
	Eraser Eraser
	// Dev mints tokens for the console's development sign-in (/api/dev/);
	// nil, as on any node with configured secrets: those routes answer 404.
	Dev DevTokens
	// Logger gets one line per request, sampled (logsample) for requests
	// refused before their handler: a bad credential, the rate limit, no
	// route; nil: discard.
	Logger *slog.Logger
}

// api holds what the handlers share.
type api struct {
	cfg   Config
	svc   *chat.Service
	dir   *chat.Directory
	users Authenticator
	admin AdminChecker
	reads ReadModel
	proj  Projection
	pres  Presence
	m     *metrics.Metrics
	ready func(ctx context.Context) error
	log   *slog.Logger
	// refusals logs the requests refused before their handler, sampled.
	refusals *logsample.Sampler
	mux      *http.ServeMux
	limit    *userLimits

	origins Origins // nil: no CORS
	status  func(ctx context.Context) (Status, error)
	sockets Sockets
	eraser  Eraser
	dev     DevTokens
}

// New returns the API's handler. It panics if a required dependency is
// missing: that is a wiring mistake, not a runtime condition.
func New(cfg Config, d Deps) http.Handler {
	cfg.defaults()
	switch {
	case d.Service == nil:
		panic("httpapi: no chat service")
	case d.Verifier == nil:
		panic("httpapi: no user token verifier")
	case d.Admin == nil:
		panic("httpapi: no admin token checker")
	case d.DB == nil:
		panic("httpapi: no read model")
	case d.Projection == nil:
		panic("httpapi: no projection")
	}
	if d.Metrics == nil {
		d.Metrics = metrics.New(metrics.Sources{})
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.Ready == nil {
		d.Ready = func(context.Context) error { return nil }
	}
	a := &api{
		cfg: cfg, svc: d.Service, dir: d.Service.Directory(), users: d.Verifier, admin: d.Admin,
		reads: d.DB, proj: d.Projection, pres: d.Presence, m: d.Metrics, ready: d.Ready, log: d.Logger, mux: http.NewServeMux(),
		limit:  newUserLimits(cfg.UserRate, cfg.UserBurst),
		status: d.Status, sockets: d.Sockets, eraser: d.Eraser, dev: d.Dev,
	}
	a.refusals = logsample.New(a.log, 0, 0)
	a.origins, _ = d.Verifier.(Origins)
	for _, rt := range routes {
		a.mux.Handle(rt.pattern(), a.wrap(rt.pattern(), rt))
	}
	a.mux.Handle("/", a.wrap(unmatched, route{handle: (*api).notFound}))
	return a.mux
}

// Who may call a route.
type access int

const (
	public access = iota
	user          // a user JWT (auth.Verifier)
	admin         // the service admin token
)

// route is one API endpoint. The table below is the single list both the mux
// registration and the OpenAPI test read.
type route struct {
	method string
	path   string // a ServeMux path pattern; also the OpenAPI path
	access access
	handle func(*api, http.ResponseWriter, *http.Request) error
	quiet  bool // log at debug level (probes and scrapes)
}

func (rt route) pattern() string { return rt.method + " " + rt.path }

// Metrics route labels of requests no route matched, and of CORS preflights.
const (
	unmatched = "unmatched"
	preflight = "preflight"
)

var routes = []route{
	{method: "GET", path: "/api/conversations", access: user, handle: (*api).listConversations},
	{method: "GET", path: "/api/conversations/{id}/messages", access: user, handle: (*api).listMessages},
	{method: "POST", path: "/api/conversations/{id}/messages", access: user, handle: (*api).sendMessage},
	{method: "PATCH", path: "/api/conversations/{id}/messages/{message_id}", access: user, handle: (*api).editMessage},
	{method: "DELETE", path: "/api/conversations/{id}/messages/{message_id}", access: user, handle: (*api).deleteMessage},
	{method: "PUT", path: "/api/conversations/{id}/messages/{message_id}/reactions/{emoji}", access: user, handle: (*api).addReaction},
	{method: "DELETE", path: "/api/conversations/{id}/messages/{message_id}/reactions/{emoji}", access: user, handle: (*api).removeReaction},
	{method: "GET", path: "/api/presence", access: user, handle: (*api).getPresence},
	{method: "GET", path: "/api/session", access: user, handle: (*api).getSession},

	{method: "POST", path: "/api/admin/conversations", access: admin, handle: (*api).createConversation},
	{method: "POST", path: "/api/admin/conversations/{id}/members", access: admin, handle: (*api).addMember},
	{method: "DELETE", path: "/api/admin/conversations/{id}/members/{user_id}", access: admin, handle: (*api).removeMember},
	{method: "PUT", path: "/api/admin/profiles/{user_id}", access: admin, handle: (*api).setProfile},
	{method: "POST", path: "/api/admin/conversations/{id}/messages", access: admin, handle: (*api).postSystem},
	{method: "PATCH", path: "/api/admin/conversations/{id}/messages/{message_id}", access: admin, handle: (*api).editMessage},
	{method: "DELETE", path: "/api/admin/conversations/{id}/messages/{message_id}", access: admin, handle: (*api).deleteMessage},
	{method: "POST", path: "/api/admin/conversations/{id}/messages/{message_id}/erase", access: admin, handle: (*api).eraseMessage},
	{method: "POST", path: "/api/admin/users/{user_id}/erase", access: admin, handle: (*api).eraseUser},
	{method: "POST", path: "/api/admin/jobs", access: admin, handle: (*api).createJob},
	{method: "POST", path: "/api/admin/jobs/{id}/status", access: admin, handle: (*api).postJobStatus},
	{method: "GET", path: "/api/admin/status", access: admin, handle: (*api).getStatus},
	{method: "POST", path: "/api/admin/users/{user_id}/disconnect", access: admin, handle: (*api).disconnect},

	{method: "GET", path: "/api/dev/users", handle: (*api).devUsers},
	{method: "POST", path: "/api/dev/token", handle: (*api).devToken},

	{method: "GET", path: "/healthz", handle: (*api).healthz, quiet: true},
	{method: "GET", path: "/readyz", handle: (*api).readyz, quiet: true},
	{method: "GET", path: "/metrics", handle: (*api).metrics, quiet: true},
	{method: "GET", path: "/api/openapi.json", handle: (*api).openapi},
}

type ctxKey int

const (
	claimsKey ctxKey = iota
	noteKey
)

// note collects the log attributes a handler learns while serving (user,
// conversation, seq); the access log line carries them.
type note struct {
	attrs []any
	// refusal names why the request was refused before its handler ran
	// (a credential, the rate limit, no route): the line is sampled, since
	// a client can send such requests as fast as it likes.
	refusal string
}

// annotate adds key-value pairs to the request's access log line.
func annotate(r *http.Request, args ...any) {
	if n, ok := r.Context().Value(noteKey).(*note); ok {
		n.attrs = append(n.attrs, args...)
	}
}

// claims returns the authenticated user of a user route.
func claims(r *http.Request) auth.Claims {
	c, _ := r.Context().Value(claimsKey).(auth.Claims)
	return c
}

// statusWriter records the status code written.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// wrap authenticates, runs the handler, writes its error, counts and logs.
func (a *api) wrap(label string, rt route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		n := &note{}
		ctx := context.WithValue(r.Context(), noteKey, n)
		sw := &statusWriter{ResponseWriter: w}
		var err error
		served, quiet := label, rt.quiet
		if a.allowCORS(sw, r) {
			served, quiet = preflight, true
		} else if err = a.serve(rt, sw, r.WithContext(ctx)); err != nil {
			a.writeError(sw, err)
		}
		status := sw.status
		if status == 0 {
			status = http.StatusOK
		}
		a.m.HTTPRequests.WithLabelValues(served, statusLabel(status)).Inc()
		level := slog.LevelInfo
		switch {
		case status >= 500:
			level = slog.LevelError
		case quiet && err == nil:
			level = slog.LevelDebug
		}
		attrs := append([]any{"method", r.Method, "route", served, "path", r.URL.Path, "status", status,
			"duration", time.Since(start)}, n.attrs...)
		if err != nil {
			attrs = append(attrs, "err", errorText(err))
		}
		if label == unmatched && n.refusal == "" {
			n.refusal = "http_no_route"
		}
		if n.refusal != "" && level == slog.LevelInfo {
			a.refusals.Log(ctx, level, n.refusal, "http request", attrs...)
			return
		}
		a.log.Log(ctx, level, "http request", attrs...)
	})
}

// serve authenticates the caller as the route requires, then runs the
// handler; a user route finds the caller's claims in the context.
func (a *api) serve(rt route, w http.ResponseWriter, r *http.Request) error {
	switch rt.access {
	case user:
		c, err := a.users.Authenticate(r)
		if err != nil {
			return a.refuse(r, err, "user")
		}
		annotate(r, "user_id", c.UserID)
		if !a.limit.allow(c.UserID, time.Now()) {
			refused(r, "http_rate_limited")
			return chat.Errorf(chat.CodeRateLimited, "more than %g requests per second from user %s; retry later", a.cfg.UserRate, c.UserID)
		}
		r = r.WithContext(context.WithValue(r.Context(), claimsKey, c))
	case admin:
		if err := a.admin.Check(r); err != nil {
			return a.refuse(r, err, "admin")
		}
	}
	return rt.handle(a, w, r)
}

// refused marks r as refused for reason, for the access log.
func refused(r *http.Request, reason string) {
	if n, ok := r.Context().Value(noteKey).(*note); ok {
		n.refusal = reason
	}
}

// refuse turns an authentication error into a coded one and counts it.
func (a *api) refuse(r *http.Request, err error, who string) error {
	reason := who + "_invalid"
	code := CodeUnauthorized
	switch {
	case errors.Is(err, auth.ErrForbidden):
		reason, code = who+"_wrong", chat.CodeForbidden
	case errors.Is(err, auth.ErrNoToken):
		reason = who + "_missing"
	case errors.Is(err, auth.ErrTokenExpired):
		reason = who + "_expired"
	case !errors.Is(err, auth.ErrUnauthorized):
		return err // not an authentication failure: internal
	}
	a.m.AuthFailures.WithLabelValues("http_" + reason).Inc()
	refused(r, "http_"+reason)
	return &chat.Error{Code: code, Msg: err.Error(), Err: err}
}

func statusLabel(code int) string {
	const digits = "0123456789"
	if code < 100 || code > 999 {
		return "other"
	}
	return string([]byte{digits[code/100], digits[code/10%10], digits[code%10]})
}
