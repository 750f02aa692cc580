// Package node assembles one inboxd: NATS (embedded or external), the event
// store, the SQLite projection, the in-memory directory fed by the stream, the
// WebSocket edge and the HTTP API, and stops them in reverse order.
package node

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"inbox/admission"
	"inbox/auth"
	"inbox/chat"
	"inbox/console"
	"inbox/erasure"
	"inbox/eventstore"
	"inbox/feed"
	"inbox/httpapi"
	"inbox/internal/logring"
	"inbox/internal/private"
	"inbox/lease"
	"inbox/metrics"
	"inbox/presence"
	"inbox/projections"
	"inbox/readmodel"
	"inbox/retention"
	"inbox/wsedge"
)

// Defaults of Config. Zero HTTPAddr, NodeID and ReadyMaxLag get theirs in
// defaults, the one place they are set; DataDir and NATSListen are inboxd's
// flag defaults only (a node needs a data folder named, and an empty
// NATSListen means in-process only).
const (
	DefaultDataDir         = "./data"
	DefaultHTTPAddr        = "127.0.0.1:8000"
	DefaultNATSListen      = "127.0.0.1:4222"
	DefaultNodeID          = "inboxd"
	DefaultReadyMaxLag     = 1000
	DefaultShutdownTimeout = 10 * time.Second // inboxd's grace for Shutdown
)

// What the live feed follows (Config.LiveFeed): the whole stream, or the
// streams' live copies of what this node's sockets need (feed's interest
// mode); auto picks the whole stream with an embedded NATS server (one
// node: it needs everything anyway) and interest on an external one (a
// cluster of nodes, each with its own users). docs/scaling.md says why.
const (
	LiveFeedAuto     = "auto"
	LiveFeedStream   = "stream"
	LiveFeedInterest = "interest"
)

// Config is everything inboxd is configured with.
type Config struct {
	// Role is what the node does: RoleAll (the default: everything in one
	// process), RoleEdge or RoleProjector.
	Role string
	// Keep are the partitions a projector keeps a read model of (nil:
	// all); it answers for those whose lease it holds.
	Keep []int
	// LeaseTTL is how long a projector's lease outlives its last renewal
	// (zero: lease.DefaultTTL): the longest its partitions go unanswered
	// after it dies.
	LeaseTTL       time.Duration
	DataDir        string // read model, embedded NATS storage, development secrets
	HTTPAddr       string // HTTP API and WebSockets
	NATSListen     string // embedded server's client port ("" = in-process only)
	NATSURL        string // external NATS server or cluster; empty = embed one
	Replicas       int    // stream replicas on an external cluster
	Partitions     int    // streams conversations are spread over (0: one); fixed once there are events
	LiveFeed       string // what the live feed follows: LiveFeedAuto (""), LiveFeedStream or LiveFeedInterest
	NodeID         string // names this node's durable projection consumer
	SyncAlways     bool   // embedded NATS fsyncs every write before acknowledging
	NATSAuth       eventstore.Auth
	JWTSecret      string
	JWTPublicKey   string // PEM file (RS256 or EdDSA)
	JWTIssuer      string // required iss of user tokens (empty: not checked)
	JWTAudience    string // required among aud of user tokens (empty: not checked)
	AdminToken     string
	AllowedOrigins []string
	DebugAddr      string // net/http/pprof listener (empty: none); keep it on loopback
	ReadyMaxLag    uint64 // /readyz fails when the projection is further behind
	Limits         chat.Limits
	Admission      admission.Config // when to shed load at the door
	Edge           wsedge.Config
	API            httpapi.Config
	HTTP           HTTPLimits // the HTTP server's timeouts and idle connection cap
	// PresenceHeartbeat and PresenceNodeTTL tune cross-node presence (zero:
	// presence's defaults, 5s and 3 heartbeats): a node that dies takes its
	// users offline on every other node within about PresenceNodeTTL.
	PresenceHeartbeat time.Duration
	PresenceNodeTTL   time.Duration
	// DuplicateWindow is the stream's Nats-Msg-Id window (zero:
	// eventstore.DefaultDuplicateWindow). Idempotency keys outlive it through
	// the read model (Limits.IdempotencyWindow).
	DuplicateWindow time.Duration
	// MessageMaxAge, if set, expires messages older than it from the stream
	// and the read models (retention); zero keeps them.
	MessageMaxAge time.Duration
	Logger        *slog.Logger
}

// Node is a running inboxd.
type Node struct {
	cfg      Config
	log      *slog.Logger
	lock     *os.File
	ns       *server.Server // nil with an external NATS
	creds    eventstore.Credentials
	nc       *nats.Conn
	store    *eventstore.Store
	db       *projections.DB        // role all
	proj     *projections.Projector // role all
	remote   *readmodel.Client      // role edge
	reads    readModel              // proj or remote
	unread   *nats.Subscription     // role edge: the projectors' unread counts
	parts    []*projectorPart       // role projector: the kept partitions
	owns     []atomic.Bool          // role projector: per partition, whether it holds the lease
	rms      *readmodel.Server      // role projector
	leases   *lease.Leases          // role projector
	dir      *chat.Directory
	live     *feed.Feed
	svc      *chat.Service
	adm      *admission.Controller
	hub      *wsedge.Hub
	pres     *presence.Tracker
	presStop context.CancelFunc // halts the tracker as a crash would (keys stay)
	metrics  *metrics.Metrics
	http     *http.Server
	debug    *http.Server
	ln       net.Listener
	secrets  auth.DevSecrets
	loosened fs.FileMode   // the data folder's mode before openData tightened it (0: it did not)
	devJWT   bool          // tokens are verified with the development secret
	ring     *logring.Ring // the last warnings and errors, for /api/admin/status
	started  time.Time
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	stopOnce sync.Once
	stopErr  error
	failed   chan error // a background part that stopped on its own
}

func (c *Config) defaults() {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Role == "" {
		c.Role = RoleAll
	}
	if c.HTTPAddr == "" {
		c.HTTPAddr = DefaultHTTPAddr
	}
	if c.NodeID == "" {
		c.NodeID = DefaultNodeID
	}
	if c.ReadyMaxLag == 0 {
		c.ReadyMaxLag = DefaultReadyMaxLag
	}
	if c.LiveFeed == "" {
		c.LiveFeed = LiveFeedAuto
	}
}

// interest reports whether the live feed runs in interest mode.
func (c *Config) interest() (bool, error) {
	switch c.LiveFeed {
	case LiveFeedAuto:
		return c.NATSURL != "", nil
	case LiveFeedStream:
		return false, nil
	case LiveFeedInterest:
		return true, nil
	}
	return false, fmt.Errorf("live feed %q: want %s, %s or %s", c.LiveFeed, LiveFeedAuto, LiveFeedStream, LiveFeedInterest)
}

// Start brings a node up; on error everything started so far is stopped again.
func Start(ctx context.Context, cfg Config) (_ *Node, err error) {
	cfg.defaults()
	ring := logring.New(maxLogEntries)
	cfg.Logger = slog.New(ring.Handler(cfg.Logger.Handler()))
	n := &Node{cfg: cfg, log: cfg.Logger, failed: make(chan error, 4), ring: ring, started: time.Now()}
	defer func() {
		if err != nil {
			n.stop(context.Background())
		}
	}()
	if err := cfg.checkRole(); err != nil {
		return nil, err
	}
	interest, err := cfg.interest()
	if err != nil {
		return nil, err
	}
	if err := n.openData(); err != nil {
		return nil, err
	}
	// What a newcomer gets wrong fails first, before anything starts or logs:
	// a taken HTTP port, an unreadable key file.
	if n.ln, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
		return nil, fmt.Errorf("HTTP listen address %s: %w", cfg.HTTPAddr, err)
	}
	var verifier *auth.Verifier
	var admin *auth.AdminToken
	if cfg.Role != RoleProjector { // a projector serves no users
		if verifier, admin, err = n.authConfig(); err != nil {
			return nil, err
		}
	}
	if err := n.openNATS(ctx); err != nil {
		return nil, err
	}
	if n.store, err = eventstore.Open(ctx, eventstore.Config{
		Conn: n.nc, Replicas: cfg.Replicas, Partitions: cfg.Partitions, DuplicateWindow: cfg.DuplicateWindow, Republish: interest,
		Logger: n.log.With("component", "eventstore"),
	}); err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	if cfg.Role == RoleProjector {
		if err := n.startProjector(runCtx); err != nil {
			return nil, err
		}
		n.startRetention(runCtx)
		n.serveProbes()
		n.log.Info("inboxd ready", "role", cfg.Role, "http", n.HTTPAddr(), "nats", n.NATSURL(), "node", cfg.NodeID,
			"partitions", n.store.Partitions(), "keep", n.kept())
		return n, nil
	}
	var snap *projections.Snapshot
	if cfg.Role == RoleEdge {
		n.remote = readmodel.NewClient(n.nc, readmodel.ClientConfig{Partitions: n.store.Partitions()}, n.log)
		n.reads = n.remote
		start := time.Now()
		if snap, err = n.remote.Snapshot(ctx); err != nil {
			return nil, fmt.Errorf("load membership snapshot from the projectors: %w", err)
		}
		n.log.Info("membership loaded from the projectors", "conversations", len(snap.Conversations),
			"profiles", len(snap.Profiles), "jobs", len(snap.Jobs), "applied", snap.Applied.String(), "took", time.Since(start))
	} else {
		if n.db, err = projections.Open(filepath.Join(cfg.DataDir, "inbox.db")); err != nil {
			return nil, err
		}
		if v := n.db.RebuiltFrom(); v != 0 {
			n.log.Warn("the read model had an older schema: rebuilding it from the stream", "file", n.db.Path(), "schema", v)
		}
		if err := n.db.Bind(n.store.Partitions()); err != nil {
			return nil, err
		}
		if snap, err = n.db.Snapshot(ctx); err != nil {
			return nil, fmt.Errorf("load membership snapshot: %w", err)
		}
	}
	n.dir = chat.NewDirectory()
	n.dir.Seed(snap.Applied, convMembers(snap), profiles(snap), snap.Jobs)
	n.metrics = metrics.New(metrics.Sources{
		Skipped: func() float64 {
			if n.proj == nil {
				return 0 // the projectors count theirs
			}
			return float64(n.proj.Skipped())
		},
		Lag:     func() float64 { return float64(n.lag(context.Background())) },
		FeedLag: func() float64 { return n.adm.FeedLag().Seconds() },
	})
	adm := cfg.Admission
	adm.Shed, adm.Partitions, adm.Sparse = n.metrics.Shed, n.store.Partitions(), interest
	n.adm = admission.New(adm)
	// The live feed comes first: the projector's unread counts and presence
	// changes push into it, and it hands them, with the stream, to the hub
	// (its sink, given to Run below). Nothing is wired after construction.
	fdeps := feed.Deps{Source: n.store, Directory: n.dir, Observer: n.adm, Logger: n.log}
	if interest {
		fdeps.Live, fdeps.Dial = n.store, n.dialLive
	}
	live := feed.New(feed.Config{}, fdeps)
	n.live = live
	limits := cfg.Limits
	if limits.TypingTTL <= 0 {
		limits.TypingTTL = n.store.TypingTTL() // a typing start expires with its event
	}
	limits.DuplicateWindow = n.store.DuplicateWindow()
	limits = limits.WithDefaults()
	pushUnread := func(c projections.UnreadChange) { live.PushUnread(c.Seq, c.ConversationID, c.UserID, c.Unread) }
	if cfg.Role == RoleEdge {
		// The projectors' owners publish the counts their batches change.
		if n.unread, err = readmodel.FollowUnread(n.nc, n.log, pushUnread); err != nil {
			return nil, err
		}
	} else {
		n.proj = projections.NewProjector(projections.ProjectorConfig{Name: cfg.NodeID, KeyWindow: limits.IdempotencyWindow}, projections.ProjectorDeps{
			DB: n.db, Store: n.store, Logger: n.log,
			OnApplied: func(_ uint64, changes []projections.UnreadChange) { // on the batch's partition's goroutine
				for _, c := range changes {
					pushUnread(c)
				}
			},
		})
		n.reads = n.proj
	}
	n.svc = chat.New(limits, chat.Deps{
		Store: countingAppender{n.store, n.metrics}, Locator: n.store, Directory: n.dir,
		ReadModel: n.reads, // the durable idempotency record, and receipts checked in one query
		Gate:      n.adm,
		Logger:    n.log.With("component", "chat"),
	})
	if err := n.startPresence(ctx, live); err != nil {
		return nil, err
	}
	edeps := wsedge.Deps{
		Service: n.svc, Authenticator: verifier, Reader: n.store, Presence: n.pres,
		Metrics: n.metrics, Gate: n.adm, Logger: n.log,
	}
	if interest {
		edeps.Interest = live
	}
	n.hub = wsedge.New(cfg.Edge, edeps)

	if n.proj != nil {
		n.goRun("projector", func() error { return n.proj.Run(runCtx) })
	}
	n.startRetention(runCtx)
	n.goRun("stream feed", func() error { return live.Run(runCtx, n.hub) })
	if err := n.catchUp(ctx); err != nil {
		return nil, err
	}

	dev, err := n.devTokens()
	if err != nil {
		return nil, err
	}
	api := httpapi.New(cfg.API, httpapi.Deps{
		Service: n.svc, DB: n.reads, Projection: n.reads, Verifier: verifier, Admin: admin,
		Presence: n.pres, Metrics: n.metrics, Ready: n.ready, Logger: n.log.With("component", "httpapi"),
		Status: n.status, Sockets: n.hub, Dev: dev, Eraser: erasure.New(n.store, n.reads, n.log),
	})
	mux := http.NewServeMux()
	mux.Handle("/ws/", n.hub)
	pages := console.Handler()
	for _, p := range []string{"GET /{$}", "GET /ops", "GET /console/"} {
		mux.Handle(p, pages)
	}
	mux.Handle("/", api) // the API, and JSON 404s for everything else
	n.http = newHTTPServer(cfg.HTTP, mux, n.log.With("component", "http"))
	n.goRun("http server", func() error {
		if err := n.http.Serve(n.ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	if cfg.DebugAddr != "" {
		if err := n.serveDebug(cfg.DebugAddr); err != nil {
			return nil, err
		}
	}
	if n.loosened != 0 { // said once everything started, so a failed start stays one line
		n.log.Warn("the data folder was readable by others: made it readable by its owner only", "folder", cfg.DataDir, "was", n.loosened, "now", n.loosened&^0o077)
	}
	if n.secrets.Path != "" {
		n.log.Warn("DEVELOPMENT MODE: using generated secrets; set INBOX_JWT_SECRET (or INBOX_JWT_PUBLIC_KEY) and INBOX_ADMIN_TOKEN in production", "file", n.secrets.Path)
	}
	n.log.Info("inboxd ready", "role", cfg.Role, "http", n.HTTPAddr(), "nats", n.NATSURL(), "node", cfg.NodeID, "partitions", n.store.Partitions(),
		"live_feed", map[bool]string{false: LiveFeedStream, true: LiveFeedInterest}[interest], "applied_seq", n.applied(ctx).String())
	return n, nil
}

func convMembers(s *projections.Snapshot) map[int64][]eventstore.Member {
	out := make(map[int64][]eventstore.Member, len(s.Conversations))
	for id, ms := range s.Conversations {
		list := make([]eventstore.Member, len(ms))
		for i, m := range ms {
			list[i] = eventstore.Member{UserID: m.UserID, Role: m.Role}
		}
		out[id] = list
	}
	return out
}

func profiles(s *projections.Snapshot) map[string]chat.Profile {
	out := make(map[string]chat.Profile, len(s.Profiles))
	for id, p := range s.Profiles {
		out[id] = chat.Profile{Name: p.Name, Avatar: p.Avatar}
	}
	return out
}

// openData creates the data folder (0700, or tightens it to that) and locks
// it against a second inboxd.
func (n *Node) openData() error {
	if n.cfg.DataDir == "" {
		return errors.New("no data folder configured")
	}
	was, err := private.Dir(n.cfg.DataDir)
	if err != nil {
		return fmt.Errorf("data folder: %w", err)
	}
	n.loosened = was
	lock, err := lockFile(filepath.Join(n.cfg.DataDir, "inboxd.lock"))
	if err != nil {
		return fmt.Errorf("data folder %s: %w", n.cfg.DataDir, err)
	}
	n.lock = lock
	return nil
}

// openNATS connects to the external NATS, or starts the embedded server,
// which admits only the credentials kept in the data folder: the service's
// (this connection's) and the read-only inspection user's, whose nats CLI
// context it writes when it listens on a port.
func (n *Node) openNATS(ctx context.Context) error {
	name := "inboxd-" + n.cfg.NodeID
	var err error
	if n.cfg.NATSURL != "" {
		if err := (eventstore.Credentials{Dir: n.cfg.DataDir}).RemoveInspectContext(); err != nil {
			return err // an embedded run's: it names a port that is not this node's
		}
		n.nc, err = eventstore.Connect(n.cfg.NATSURL, name, n.cfg.NATSAuth, n.log.With("component", "nats"))
		return err
	}
	if n.cfg.NATSAuth != (eventstore.Auth{}) {
		return errors.New("a NATS credentials or nkey file goes with --nats-url: the embedded server makes its own credentials in the data folder")
	}
	if n.creds, err = eventstore.LoadOrCreateCredentials(n.cfg.DataDir); err != nil {
		return err
	}
	n.ns, err = eventstore.RunEmbedded(eventstore.EmbeddedConfig{
		Dir:         filepath.Join(n.cfg.DataDir, "nats"),
		Listen:      n.cfg.NATSListen,
		Credentials: &n.creds,
		SyncAlways:  n.cfg.SyncAlways,
		ServerName:  n.cfg.NodeID,
		Logger:      n.log,
	})
	if err != nil {
		return err
	}
	service, err := n.creds.ServiceOption()
	if err != nil {
		return err
	}
	if n.nc, err = eventstore.ConnectEmbedded(n.ns, name, service); err != nil {
		return err
	}
	if n.cfg.NATSListen == "" {
		return n.creds.RemoveInspectContext()
	}
	return n.creds.WriteInspectContext(n.ns.ClientURL())
}

// dialLive opens a connection for the live feed's interest mode: one that
// does not reconnect by itself, so that the feed knows from where it may
// have missed copies.
func (n *Node) dialLive() (*nats.Conn, error) {
	name := "inboxd-" + n.cfg.NodeID + "-live"
	if n.ns == nil {
		return eventstore.Connect(n.cfg.NATSURL, name, n.cfg.NATSAuth, n.log.With("component", "nats-live"), nats.NoReconnect())
	}
	service, err := n.creds.ServiceOption()
	if err != nil {
		return nil, err
	}
	return eventstore.ConnectEmbedded(n.ns, name, service, nats.NoReconnect())
}

// InspectContext is the nats CLI context file of the embedded server's
// read-only inspection user ("" without an embedded server's port).
func (n *Node) InspectContext() string {
	if n.ns == nil || n.cfg.NATSListen == "" {
		return ""
	}
	return n.creds.InspectContext()
}

// startPresence joins the cluster-wide presence bucket. Changes go to the
// live feed, whose sink (the hub) tells the users who share a conversation
// with the subject.
func (n *Node) startPresence(ctx context.Context, live *feed.Feed) error {
	pctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	t, err := presence.Start(pctx, presence.Config{
		NodeID: n.cfg.NodeID, Replicas: n.cfg.Replicas,
		Heartbeat: n.cfg.PresenceHeartbeat, NodeTTL: n.cfg.PresenceNodeTTL,
	}, presence.Deps{
		JetStream: n.store.JetStream(), Logger: n.log,
		Notify: func(c presence.Change) { live.PushPresence(c.UserID, c.Online, c.LastSeen) },
	})
	if err != nil {
		cancel()
		return fmt.Errorf("start presence: %w", err)
	}
	n.pres, n.presStop = t, cancel
	return nil
}

// authConfig builds the token verifier and admin token, generating development
// secrets into the data folder when none are configured.
func (n *Node) authConfig() (*auth.Verifier, *auth.AdminToken, error) {
	secret, adminToken := n.cfg.JWTSecret, n.cfg.AdminToken
	keyed := secret != "" || n.cfg.JWTPublicKey != ""
	var v *auth.Verifier
	var err error
	if keyed { // a configured key that cannot be used fails before any development secret is made
		if v, err = n.verifier(secret); err != nil {
			return nil, nil, err
		}
	}
	if !keyed || adminToken == "" {
		if n.secrets, err = auth.LoadOrCreateDevSecrets(n.cfg.DataDir); err != nil {
			return nil, nil, err
		}
		if !keyed {
			if v, err = n.verifier(n.secrets.JWTSecret); err != nil {
				return nil, nil, err
			}
			n.devJWT = true
		}
		if adminToken == "" {
			adminToken = n.secrets.AdminToken
		}
	}
	admin, err := auth.NewAdminToken(adminToken)
	if err != nil {
		return nil, nil, err
	}
	return v, admin, nil
}

func (n *Node) verifier(secret string) (*auth.Verifier, error) {
	return auth.NewVerifier(auth.Config{
		Secret: secret, PublicKeyFile: n.cfg.JWTPublicKey, AllowedOrigins: n.cfg.AllowedOrigins,
		Issuer: n.cfg.JWTIssuer, Audience: n.cfg.JWTAudience,
	})
}

// catchUp waits until the directory has applied everything stored before start,
// so the first socket sees current membership and no stale event goes live.
// The target is the newest event still stored, asked again while waiting: an
// event that expires meanwhile (typing) is never delivered and must not be waited for.
func (n *Node) catchUp(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	// The feed has told the hub where it starts (a socket registered
	// before that would take the seed's events for not dispatched yet) and,
	// in interest mode, read what it needs of the stream.
	select {
	case <-n.live.Ready():
	case <-n.live.Done():
		return fmt.Errorf("catch up with the stream: %w", n.live.Err())
	case <-ctx.Done():
		return fmt.Errorf("catch up with the stream: the live feed was not ready after 2m (applied %s)", n.dir.Seq())
	}
	if n.live.Interest() {
		return nil
	}
	for {
		last, err := n.store.LastStored(ctx)
		if err != nil {
			return fmt.Errorf("catch up with the stream: %w", err)
		}
		wctx, wcancel := context.WithTimeout(ctx, time.Second)
		for k := range last {
			if err = n.dir.WaitFor(wctx, last.ID(k)); err != nil {
				break
			}
		}
		wcancel()
		switch {
		case err == nil:
			return nil
		case ctx.Err() != nil:
			return fmt.Errorf("catch up with the stream to seq %s: applied %s after 2m", last, n.dir.Seq())
		}
	}
}

// lag is how many sequences the read model is behind the streams' last,
// over every partition it is judged on (kept).
func (n *Node) lag(ctx context.Context) uint64 {
	last, err := n.store.Last(ctx)
	if err != nil {
		return 0
	}
	return behind(n.applied(ctx), last, n.kept())
}

// behind is how many sequences applied is behind last in partitions ks.
func behind(applied, last eventstore.Cursor, ks []int) uint64 {
	var b uint64
	for _, k := range ks {
		b += last[k] - min(last[k], applied[k])
	}
	return b
}

// ready fails when the stream cannot be reached or the read model lags too
// far: the node's own (role all), its kept partitions' (role projector), or
// on an edge its directory, fed by the stream (a projector's takeover must
// not take every edge out of a load balancer at once: requests to a
// partition without an owner wait for one, answer 503 at worst).
func (n *Node) ready(ctx context.Context) error {
	last, err := n.store.Last(ctx)
	if err != nil {
		return fmt.Errorf("stream unreachable: %w", err)
	}
	what, applied := "projection", eventstore.Cursor(nil)
	if n.cfg.Role == RoleEdge {
		what, applied = "directory", n.dir.Seq()
	} else {
		applied = n.applied(ctx)
	}
	if b := behind(applied, last, n.kept()); b > n.cfg.ReadyMaxLag {
		return fmt.Errorf("%s %d events behind the stream (limit %d)", what, b, n.cfg.ReadyMaxLag)
	}
	return nil
}

// startRetention expires old messages, if configured (any role: it only
// appends markers to the stream and purges it).
func (n *Node) startRetention(runCtx context.Context) {
	if n.cfg.MessageMaxAge > 0 {
		ret := retention.New(retention.Config{MaxAge: n.cfg.MessageMaxAge, Logger: n.log}, n.store)
		n.goRun("retention", func() error { return ret.Run(runCtx) })
	}
}

// goRun runs f on a goroutine owned by the node; an error ends the node.
func (n *Node) goRun(name string, f func() error) {
	n.wg.Go(func() {
		if err := f(); err != nil && !errors.Is(err, context.Canceled) {
			n.log.Error("stopped", "part", name, "err", err)
			select {
			case n.failed <- fmt.Errorf("%s: %w", name, err):
			default:
			}
		}
	})
}

// Failed reports a background part that stopped by itself.
func (n *Node) Failed() <-chan error { return n.failed }

// HTTPAddr is the address the HTTP server listens on.
func (n *Node) HTTPAddr() string {
	if n.ln == nil {
		return ""
	}
	return n.ln.Addr().String()
}

// NATSURL is the client URL of the embedded server, or the external URLs
// without their passwords or tokens.
func (n *Node) NATSURL() string {
	if n.ns != nil {
		if n.cfg.NATSListen == "" {
			return "(in-process only)"
		}
		return n.ns.ClientURL()
	}
	return eventstore.RedactURLs(n.cfg.NATSURL)
}

// Streams are the names of the partitions' streams: INBOX, or INBOX-0 …
// INBOX-<N-1>.
func (n *Node) Streams() []string {
	names := make([]string, n.store.Partitions())
	for k := range names {
		names[k] = n.store.StreamName(k)
	}
	return names
}

// Service is the node's domain service (for seeding demos and tests).
func (n *Node) Service() *chat.Service { return n.svc }

// FeedStats are the live feed's counters: what it received, read and
// dispatched, and how many conversations it watches (interest mode).
func (n *Node) FeedStats() feed.Stats {
	if n.live == nil {
		return feed.Stats{} // a projector has no live feed
	}
	return n.live.Stats()
}

// Shutdown stops accepting, closes sockets with 1001, lets the projector finish
// its batch and closes NATS and SQLite, in that order.
func (n *Node) Shutdown(ctx context.Context) error {
	n.stop(ctx)
	return n.stopErr
}

func (n *Node) stop(ctx context.Context) {
	n.stopOnce.Do(func() {
		var errs []error
		if n.http != nil {
			errs = append(errs, n.http.Shutdown(ctx))
		} else if n.ln != nil {
			n.ln.Close()
		}
		if n.debug != nil {
			n.debug.Close()
		}
		if n.hub != nil {
			errs = append(errs, n.hub.Shutdown(ctx))
		}
		if n.svc != nil {
			n.svc.Close() // typing changes waiting for their gap are dropped, one appending is cancelled and waited for
		}
		if n.pres != nil {
			// After the sockets (their Offline calls are moot: Close removes
			// every key of this node), before NATS.
			errs = append(errs, n.pres.Close())
			n.presStop()
		}
		if n.leases != nil {
			// Stops answering first, then lets go of the leases: another
			// projector takes the partitions now, not after the TTL.
			errs = append(errs, n.leases.Close())
		}
		if n.rms != nil {
			errs = append(errs, n.rms.Close())
		}
		if n.unread != nil {
			n.unread.Unsubscribe()
		}
		if n.cancel != nil {
			n.cancel()
		}
		n.wg.Wait()
		if n.nc != nil {
			n.nc.Close()
		}
		if n.ns != nil {
			n.ns.Shutdown()
			n.ns.WaitForShutdown()
		}
		if n.db != nil {
			errs = append(errs, n.db.Close())
		}
		for _, p := range n.parts {
			errs = append(errs, p.db.Close())
		}
		if n.lock != nil {
			n.lock.Close()
		}
		n.stopErr = errors.Join(errs...)
	})
}
