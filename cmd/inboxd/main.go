// Command inboxd is the inbox server: embedded (or external) NATS JetStream,
// the SQLite read model, the WebSocket edge and the HTTP API.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"inbox/admission"
	"inbox/auth"
	"inbox/chat"
	"inbox/eventstore"
	"inbox/httpapi"
	"inbox/internal/cli"
	"inbox/lease"
	"inbox/node"
	"inbox/wsedge"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "inboxd: %v\n", err)
		os.Exit(1)
	}
}

const description = `
inboxd is the inbox server, a real-time messaging backend. Every message, typing
event, read receipt and membership change is appended to the NATS JetStream
stream INBOX (on an embedded nats-server in the data folder, unless --nats-url
names one); SQLite read models of it in the data folder serve history,
conversation lists and unread counts. Each user holds one WebSocket
(/ws/inbox/); the HTTP API is under /api/ (described at /api/openapi.json).
Without --jwt-secret or --jwt-public-key it generates development secrets into
the data folder and says so. The embedded NATS port (--nats-listen) admits only
the credentials inboxd keeps in the data folder; nats-inspect.json there is a
read-only nats CLI context (nats --context data/nats-inspect.json stream info
INBOX). SIGINT or SIGTERM stops it cleanly.`

var examples = []string{
	"inboxd --demo            # demo users and conversations, and a wscat command per user",
	"inboxd --data /var/lib/inbox --jwt-secret \"$SECRET\" --admin-token \"$ADMIN\"",
	"INBOX_HTTP_ADDR=127.0.0.1:8001 inboxd --log-format json",
	"inboxd --nats-url nats://a:4222,nats://b:4222,nats://c:4222 --replicas 3 --node n1",
	"inboxd --role projector --nats-url nats://a:4222 --replicas 3 --partitions 3 --node p1   # read models, answering the edges",
	"inboxd --role edge --nats-url nats://a:4222 --replicas 3 --partitions 3 --node e1        # sockets and the API, no SQLite",
}

// options is what inboxd's command line says: the node's configuration and
// what inboxd itself does around it.
type options struct {
	cfg   node.Config
	demo  bool
	grace time.Duration // how long shutdown waits
}

// run runs inboxd until a signal or a failure. Help (-h, --help) goes to
// stdout and is not an error.
func run(args []string, stdout io.Writer) error {
	o, err := parse(args, stdout)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	} else if err != nil {
		return err
	}
	cfg, demo, grace := o.cfg, o.demo, o.grace
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	n, err := node.Start(ctx, cfg)
	if err != nil {
		return err
	}
	if demo {
		d, err := n.SeedDemo(ctx)
		if err != nil {
			n.Shutdown(context.Background())
			return fmt.Errorf("demo: %w", err)
		}
		printDemo(stdout, n, d)
	}
	var failure error
	select {
	case <-ctx.Done():
		cfg.Logger.Info("shutting down", "grace", grace)
	case failure = <-n.Failed():
	}
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := n.Shutdown(sctx); err != nil {
		cfg.Logger.Warn("shutdown", "err", err)
	}
	return failure
}

// parse reads the command line and the INBOX_* environment. Every flag's
// default is its package's (node, chat, wsedge, httpapi, eventstore).
func parse(args []string, stdout io.Writer) (options, error) {
	var (
		cfg       node.Config
		origins   string
		logFormat string
		logLevel  slog.Level
		demo      bool
		grace     time.Duration
	)
	fs := flag.NewFlagSet("inboxd", flag.ContinueOnError)
	fs.SetOutput(stdout)
	cli.Describe(fs, "inboxd [flags]", description, examples...)
	fs.StringVar(&cfg.DataDir, "data", node.DefaultDataDir, "data folder: read model, embedded NATS storage, development secrets")
	fs.StringVar(&cfg.HTTPAddr, "http-addr", node.DefaultHTTPAddr, "HTTP API and WebSocket address")
	fs.StringVar(&cfg.NATSListen, "nats-listen", node.DefaultNATSListen, "embedded NATS client address, for the nats CLI (empty: in-process only); it admits only the credentials kept in the data folder")
	fs.StringVar(&cfg.NATSURL, "nats-url", "", "use this NATS server or cluster (comma-separated URLs; nats://user:password@host for a password) instead of embedding one")
	fs.StringVar(&cfg.NATSAuth.CredsFile, "nats-creds", "", "with --nats-url: NATS user credentials file (JWT and nkey seed, as nsc writes it)")
	fs.StringVar(&cfg.NATSAuth.NkeyFile, "nats-nkey", "", "with --nats-url: NATS nkey seed file")
	fs.IntVar(&cfg.Replicas, "replicas", eventstore.DefaultReplicas, "stream replicas (3 on a three-node cluster)")
	fs.IntVar(&cfg.Partitions, "partitions", eventstore.DefaultPartitions, "streams conversations are spread over by a hash of their id (1: the stream INBOX; N: INBOX-0 … INBOX-<N-1>); fixed once events exist")
	fs.StringVar(&cfg.Role, "role", node.RoleAll,
		"what this node does: all (everything in one process), edge (sockets and the API; no SQLite: it asks the projectors) or projector (the read models of its partitions, answering the edges for those whose lease it holds); edge and projector need --nats-url")
	fs.Var((*partitionList)(&cfg.Keep), "keep-partitions",
		"with --role projector: the partitions it keeps a read model of and may answer for, e.g. 0,2,4-7 (default: all); give each partition two projectors for takeover")
	fs.DurationVar(&cfg.LeaseTTL, "lease-ttl", lease.DefaultTTL,
		"with --role projector: how long a partition's lease outlives its owner's last renewal (renewed every fifth of it): the longest a dead projector's partitions go unanswered")
	fs.StringVar(&cfg.LiveFeed, "live-feed", node.LiveFeedAuto,
		"what the live feed follows: stream (every event), interest (only the conversations of this node's sockets, from the streams' live copies), or auto (stream with the embedded NATS, interest with --nats-url)")
	fs.StringVar(&cfg.NodeID, "node", node.DefaultNodeID, "node id: names this node's durable projection consumer; unique per node sharing a stream")
	fs.BoolVar(&cfg.SyncAlways, "sync-always", false, "embedded NATS fsyncs every write before acknowledging (survives an OS crash; slower)")
	fs.StringVar(&cfg.JWTSecret, "jwt-secret", "", "HS256 secret for user tokens (default: a development secret generated into the data folder)")
	fs.StringVar(&cfg.JWTPublicKey, "jwt-public-key", "", "PEM public key file for RS256 or EdDSA user tokens")
	fs.StringVar(&cfg.JWTIssuer, "jwt-issuer", "", "if set, user tokens must carry this iss")
	fs.StringVar(&cfg.JWTAudience, "jwt-audience", "", "if set, user tokens must name this audience in aud")
	fs.StringVar(&cfg.AdminToken, "admin-token", "", "bearer token of the service API (default: generated into the data folder)")
	fs.StringVar(&origins, "allowed-origins", "", "comma-separated origins allowed to authenticate with the inbox_token cookie")
	fs.IntVar(&cfg.Limits.MaxText, "max-text", chat.DefaultMaxText, "longest message text, in characters")
	fs.DurationVar(&cfg.Limits.EditWindow, "edit-window", chat.DefaultEditWindow,
		"how long after sending a message its sender may edit or delete it (the service API may at any time)")
	fs.DurationVar(&cfg.MessageMaxAge, "message-max-age", 0,
		"expire messages (with their edits and reactions) older than this from the stream and the read models; 0 keeps them")
	fs.DurationVar(&cfg.Limits.IdempotencyWindow, "idempotency-window", chat.DefaultIdempotencyWindow,
		"how long a client_msg_id or Idempotency-Key is remembered per user and conversation: a retry within it is answered, not stored again")
	fs.IntVar(&cfg.Edge.MaxSocketsPerUser, "max-sockets-per-user", wsedge.DefaultMaxSocketsPerUser, "open sockets one user may hold on this node")
	fs.IntVar(&cfg.Edge.QueueFrames, "socket-queue", wsedge.DefaultQueueFrames, "frames queued for one socket before it is closed as too slow (4013)")
	fs.Float64Var(&cfg.Edge.RatePerSecond, "rate", wsedge.DefaultRatePerSecond, "frames per second one socket may send (burst: twice that)")
	fs.Float64Var(&cfg.API.UserRate, "api-rate", httpapi.DefaultUserRate, "HTTP API requests per second one user may make (burst: twice that)")
	fs.DurationVar(&cfg.Admission.MaxFeedLag, "max-feed-lag", admission.DefaultMaxFeedLag,
		"shed load past this: messages and read receipts are refused (ERROR unavailable, HTTP 503, with a retry hint) while the live feed dispatches events this late; typing and presence at half of it")
	fs.DurationVar(&cfg.Admission.MaxAppendLatency, "max-append-latency", admission.DefaultMaxAppendLatency,
		"shed load past this: likewise while sends take this long to be stored")
	fs.IntVar(&cfg.Admission.MaxQueuedFrames, "max-queued-frames", admission.DefaultMaxQueuedFrames,
		"shed load past this: likewise while this many frames wait in the node's socket write queues")
	fs.DurationVar(&cfg.Edge.PingInterval, "ping-interval", wsedge.DefaultPingInterval, "WebSocket ping interval; a socket silent for two intervals is closed")
	fs.DurationVar(&cfg.Edge.TokenGrace, "token-grace", wsedge.DefaultTokenGrace,
		"how long a socket outlives its token: warned (TOKEN_EXPIRING) that long before exp, closed with 4001 that long after unless it sent REFRESH")
	fs.DurationVar(&cfg.HTTP.ReadHeaderTimeout, "http-read-header-timeout", node.DefaultHTTPReadHeaderTimeout, "longest an HTTP request's headers may take to arrive")
	fs.DurationVar(&cfg.HTTP.ReadTimeout, "http-read-timeout", node.DefaultHTTPReadTimeout, "longest an HTTP request, headers and body, may take to arrive (not applied to WebSockets once upgraded)")
	fs.DurationVar(&cfg.HTTP.WriteTimeout, "http-write-timeout", node.DefaultHTTPWriteTimeout, "longest from an HTTP request's headers to the end of its response (not applied to WebSockets once upgraded)")
	fs.DurationVar(&cfg.HTTP.IdleTimeout, "http-idle-timeout", node.DefaultHTTPIdleTimeout, "how long an idle keep-alive HTTP connection is kept")
	fs.IntVar(&cfg.HTTP.MaxIdlePerIP, "http-max-idle-per-ip", node.DefaultHTTPMaxIdlePerIP, "idle keep-alive HTTP connections one client address (IPv6: its /64) may hold; past it one is closed after its response")
	fs.StringVar(&cfg.DebugAddr, "debug-addr", "", "serve net/http/pprof on this address (e.g. 127.0.0.1:6060; empty: off)")
	fs.StringVar(&logFormat, "log-format", "text", "log format: text or json")
	fs.TextVar(&logLevel, "log-level", slog.LevelInfo, "log level: debug, info, warn, error")
	fs.BoolVar(&demo, "demo", false, "create demo users and conversations and print ready-to-paste wscat commands")
	fs.DurationVar(&grace, "shutdown-timeout", node.DefaultShutdownTimeout, "how long shutdown waits for sockets and the projector")
	if err := cli.Parse(fs, args); err != nil {
		return options{}, err
	}
	if fs.NArg() > 0 {
		return options{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	switch {
	case !slices.Contains(node.Roles, cfg.Role):
		return options{}, fmt.Errorf("--role %q: want %s", cfg.Role, strings.Join(node.Roles, ", "))
	case len(cfg.Keep) > 0 && cfg.Role != node.RoleProjector:
		return options{}, fmt.Errorf("--keep-partitions goes with --role projector (this is --role %s)", cfg.Role)
	case cfg.Role != node.RoleAll && cfg.NATSURL == "":
		return options{}, fmt.Errorf("--role %s needs --nats-url: edges and projectors share the NATS they talk over", cfg.Role)
	case cfg.LeaseTTL < 2*time.Second:
		return options{}, fmt.Errorf("--lease-ttl %s: must be at least 2s", cfg.LeaseTTL)
	case demo && cfg.Role == node.RoleProjector:
		return options{}, errors.New("--demo needs a node that serves users: --role all or edge")
	case cfg.Replicas < 1 || cfg.Replicas > 5:
		return options{}, fmt.Errorf("--replicas %d: must be 1 to 5", cfg.Replicas)
	case cfg.Partitions < 1 || cfg.Partitions > eventstore.MaxPartitions:
		return options{}, fmt.Errorf("--partitions %d: must be 1 to %d", cfg.Partitions, eventstore.MaxPartitions)
	case len(cfg.Keep) > 0 && slices.Max(cfg.Keep) >= cfg.Partitions:
		return options{}, fmt.Errorf("--keep-partitions: partition %d, but there are %d (0 to %d)", slices.Max(cfg.Keep), cfg.Partitions, cfg.Partitions-1)
	case cfg.LiveFeed != node.LiveFeedAuto && cfg.LiveFeed != node.LiveFeedStream && cfg.LiveFeed != node.LiveFeedInterest:
		return options{}, fmt.Errorf("--live-feed %q: must be %s, %s or %s", cfg.LiveFeed, node.LiveFeedAuto, node.LiveFeedStream, node.LiveFeedInterest)
	case cfg.Limits.MaxText < 1:
		return options{}, fmt.Errorf("--max-text %d: must be positive", cfg.Limits.MaxText)
	case cfg.Limits.EditWindow <= 0:
		return options{}, fmt.Errorf("--edit-window %s: must be positive", cfg.Limits.EditWindow)
	case cfg.MessageMaxAge < 0:
		return options{}, fmt.Errorf("--message-max-age %s: must be positive, or 0 to keep messages", cfg.MessageMaxAge)
	case cfg.Limits.IdempotencyWindow <= 0:
		return options{}, fmt.Errorf("--idempotency-window %s: must be positive", cfg.Limits.IdempotencyWindow)
	case cfg.Edge.MaxSocketsPerUser < 1:
		return options{}, fmt.Errorf("--max-sockets-per-user %d: must be positive", cfg.Edge.MaxSocketsPerUser)
	case cfg.Edge.QueueFrames < 1:
		return options{}, fmt.Errorf("--socket-queue %d: must be positive", cfg.Edge.QueueFrames)
	case cfg.Edge.RatePerSecond <= 0:
		return options{}, fmt.Errorf("--rate %g: must be positive", cfg.Edge.RatePerSecond)
	case cfg.API.UserRate <= 0:
		return options{}, fmt.Errorf("--api-rate %g: must be positive", cfg.API.UserRate)
	case cfg.Admission.MaxFeedLag <= 0:
		return options{}, fmt.Errorf("--max-feed-lag %s: must be positive", cfg.Admission.MaxFeedLag)
	case cfg.Admission.MaxAppendLatency <= 0:
		return options{}, fmt.Errorf("--max-append-latency %s: must be positive", cfg.Admission.MaxAppendLatency)
	case cfg.Admission.MaxQueuedFrames < 1:
		return options{}, fmt.Errorf("--max-queued-frames %d: must be positive", cfg.Admission.MaxQueuedFrames)
	case cfg.Edge.PingInterval < time.Second:
		return options{}, fmt.Errorf("--ping-interval %s: must be at least 1s", cfg.Edge.PingInterval)
	case cfg.Edge.TokenGrace <= 0:
		return options{}, fmt.Errorf("--token-grace %s: must be positive", cfg.Edge.TokenGrace)
	case cfg.HTTP.ReadHeaderTimeout <= 0:
		return options{}, fmt.Errorf("--http-read-header-timeout %s: must be positive", cfg.HTTP.ReadHeaderTimeout)
	case cfg.HTTP.ReadTimeout <= 0:
		return options{}, fmt.Errorf("--http-read-timeout %s: must be positive", cfg.HTTP.ReadTimeout)
	case cfg.HTTP.WriteTimeout <= 0:
		return options{}, fmt.Errorf("--http-write-timeout %s: must be positive", cfg.HTTP.WriteTimeout)
	case cfg.HTTP.IdleTimeout <= 0:
		return options{}, fmt.Errorf("--http-idle-timeout %s: must be positive", cfg.HTTP.IdleTimeout)
	case cfg.HTTP.MaxIdlePerIP < 1:
		return options{}, fmt.Errorf("--http-max-idle-per-ip %d: must be positive", cfg.HTTP.MaxIdlePerIP)
	}
	cfg.AllowedOrigins = auth.SplitOrigins(origins)

	opts := &slog.HandlerOptions{Level: logLevel}
	switch logFormat {
	case "text":
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, opts))
	case "json":
		cfg.Logger = slog.New(slog.NewJSONHandler(os.Stderr, opts))
	default:
		return options{}, fmt.Errorf("--log-format %q: want text or json", logFormat)
	}
	if demo && cfg.JWTPublicKey != "" && cfg.JWTSecret == "" {
		return options{}, errors.New("--demo mints tokens and needs an HS256 secret; unset --jwt-public-key or set --jwt-secret")
	}
	return options{cfg: cfg, demo: demo, grace: grace}, nil
}

func printDemo(w io.Writer, n *node.Node, d node.Demo) {
	host := n.HTTPAddr()
	var b strings.Builder
	fmt.Fprintf(&b, "\nDemo ready. Open the console in a browser:\n  http://%s/\n", host)
	if n.DevSignIn() {
		fmt.Fprintf(&b, "and sign in as any user with one click; a second browser window is a second user.\n")
	} else {
		fmt.Fprintf(&b, "and sign in with a token printed below.\n")
	}
	fmt.Fprintf(&b, "\nUsers and conversations:\n")
	for _, c := range d.Conversations {
		fmt.Fprintf(&b, "  conversation %d: %s\n", c.ID, strings.Join(c.Members, ", "))
	}
	fmt.Fprintf(&b, "\nOr chat at the protocol level, in one terminal per user (npm install -g wscat):\n")
	for _, u := range d.Users {
		fmt.Fprintf(&b, "  # %s\n  wscat -c \"ws://%s/ws/inbox/\" -H \"Authorization: Bearer %s\"\n", u.ID, host, u.Token)
	}
	if len(d.Conversations) > 0 {
		fmt.Fprintf(&b, "\nThen type, for example:\n  {\"conversation_id\": %d, \"message\": \"Hello\", \"type\": \"TEXT\", \"client_msg_id\": \"c-1\"}\n", d.Conversations[0].ID)
	}
	if ctx := n.InspectContext(); ctx != "" {
		if streams := n.Streams(); len(streams) == 1 {
			fmt.Fprintf(&b, "\nInspect the stream: nats --context %s stream info %s\n", ctx, streams[0])
		} else {
			fmt.Fprintf(&b, "\nInspect the streams (%s): nats --context %s stream ls\n", strings.Join(streams, ", "), ctx)
		}
	}
	b.WriteString("\n")
	io.WriteString(w, b.String())
}

// partitionList is a flag of partition numbers: "0,2,4-7"; "all" or empty
// is nil (every partition).
type partitionList []int

func (l *partitionList) String() string {
	if l == nil || len(*l) == 0 {
		return ""
	}
	parts := make([]string, len(*l))
	for i, k := range *l {
		parts[i] = strconv.Itoa(k)
	}
	return strings.Join(parts, ",")
}

func (l *partitionList) Set(s string) error {
	*l = nil
	if s = strings.TrimSpace(s); s == "" || s == "all" {
		return nil
	}
	var ks []int
	for tok := range strings.SplitSeq(s, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(tok), "-")
		a, err := strconv.Atoi(lo)
		b := a
		if err == nil && isRange {
			b, err = strconv.Atoi(hi)
		}
		if err != nil || a < 0 || b < a || b >= eventstore.MaxPartitions {
			return fmt.Errorf("%q is not a partition or a range of them (like 3 or 4-7, from 0 to %d)", tok, eventstore.MaxPartitions-1)
		}
		for k := a; k <= b; k++ {
			ks = append(ks, k)
		}
	}
	*l = slices.Compact(slices.Sorted(slices.Values(ks)))
	return nil
}
