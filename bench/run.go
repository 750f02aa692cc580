// Package bench is inbox's load generator: it seeds conversations through the
// service API, opens many authenticated sockets from loopback source
// addresses, and measures either the server's memory per idle socket or
// fan-out throughput, latency, loss, duplicates and order. It only ever
// talks to loopback addresses.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"

	"inbox/auth"
	"inbox/node"
)

// Modes.
const (
	ModeIdle     = "idle"
	ModeFanout   = "fanout"
	ModeOverload = "overload"
)

// fdReserve is how many descriptors beyond the sockets the process keeps for
// itself (HTTP client, files, the runtime).
const fdReserve = 64

// Defaults for zero Config fields (see setDefaults, the one place they are
// set). DefaultConvsPerUser and DefaultWarmup, where zero means none, are
// inbox bench's flag defaults only.
const (
	DefaultURL                = "http://127.0.0.1:8000"
	DefaultUsers              = 10000
	DefaultConvSize           = 2
	DefaultConvsPerUser       = 10
	DefaultRate               = 1000
	DefaultRampP99            = 50 * time.Millisecond
	DefaultDuration           = 10 * time.Second
	DefaultWarmup             = 2 * time.Second
	DefaultDrain              = 10 * time.Second
	DefaultSettle             = 3 * time.Second
	DefaultConnectConcurrency = 64
	DefaultSeedConcurrency    = 32
	DefaultDialTimeout        = 10 * time.Second
	DefaultRecoverAfter       = 5 * time.Second
	DefaultRecoverFor         = 10 * time.Second
	DefaultOverloadP99        = time.Second
	DefaultFeedLagBound       = 2 * time.Second
)

// DefaultRamp is the rate ladder --ramp auto climbs, in messages per second.
var DefaultRamp = []float64{2000, 5000, 7500, 10000, 12500, 15000, 20000, 25000, 30000}

// Config says what to drive and how. Zero fields take the defaults in
// (*Config).setDefaults.
type Config struct {
	URL  string // http://127.0.0.1:8000; loopback only
	Mode string // idle, fanout or overload

	Users         int // idle: sockets; fanout: users (one socket each)
	ConvsPerUser  int // idle: conversations each user belongs to (0: none)
	ConvSize      int // members per seeded conversation (2..8)
	Conversations int // fanout: conversations (default Users/2)
	IDBase        int64
	UserPrefix    string
	Profiles      bool

	Rate     float64   // fanout: messages per second, all senders together
	Ramp     []float64 // fanout: rates to try in turn (replaces Rate)
	RampP99  time.Duration
	Duration time.Duration
	Warmup   time.Duration
	Drain    time.Duration

	// Overload: after Rate for Warmup plus Duration, RecoverRate (default a
	// quarter of Rate) at once, for RecoverAfter (not measured: the time the
	// server has to recover) plus RecoverFor (measured against RampP99).
	// The accepted messages' p99 must stay within OverloadP99 and the
	// server's feed lag within FeedLagBound.
	RecoverRate  float64
	RecoverAfter time.Duration
	RecoverFor   time.Duration
	OverloadP99  time.Duration
	FeedLagBound time.Duration

	// TypingSockets (fanout) of the users each send a TYPING start every
	// TypingEvery in one of their conversations while messages are sent and
	// measured: a typing storm. 0: none.
	TypingSockets int
	TypingEvery   time.Duration

	Settle time.Duration // idle: wait after connecting before measuring
	Hold   time.Duration // idle: keep the sockets open after measuring

	AdminToken  string
	JWTSecret   string
	JWTIssuer   string // iss of the minted user tokens, for a server that requires one
	JWTAudience string // aud of the minted user tokens, likewise
	DataDir     string

	SourceAddrs        []net.IP // nil: DefaultSourceAddrs
	ConnectConcurrency int
	SeedConcurrency    int
	DialTimeout        time.Duration
	ServerPID          int
	Seed               uint64 // random seed for sender choice; 0: time-based

	Log      io.Writer // human output: progress and the table (default io.Discard)
	Progress bool      // draw progress bars on Log

	// keepUp is the share of a step's target rate the bench must send for
	// the step to pass (default defaultKeepUp). Tests of the bench's
	// accounting, which a loaded machine must not fail, lower it.
	keepUp float64
}

// defaultKeepUp: a step whose bench sent less than this share of the target
// rate did not offer the load it names, and fails.
const defaultKeepUp = 0.95

func (c *Config) setDefaults() {
	if c.URL == "" {
		c.URL = DefaultURL
	}
	if c.Mode == "" {
		c.Mode = ModeFanout
	}
	if c.ConvSize == 0 {
		c.ConvSize = DefaultConvSize
	}
	if c.Users == 0 {
		if c.Mode != ModeIdle && c.Conversations > 0 {
			c.Users = c.Conversations * c.ConvSize
		} else {
			c.Users = DefaultUsers
		}
	}
	if c.Mode != ModeIdle && c.Conversations == 0 {
		c.Conversations = max(1, c.Users/c.ConvSize)
	}
	if c.UserPrefix == "" {
		c.UserPrefix = "bench" + strconv.FormatInt(time.Now().Unix(), 36)
	}
	if c.Rate == 0 {
		c.Rate = DefaultRate
	}
	if c.RampP99 == 0 {
		c.RampP99 = DefaultRampP99
	}
	if c.Duration == 0 {
		c.Duration = DefaultDuration
	}
	if c.Drain == 0 {
		c.Drain = DefaultDrain
	}
	if c.RecoverRate == 0 {
		c.RecoverRate = c.Rate / 4
	}
	if c.RecoverAfter == 0 {
		c.RecoverAfter = DefaultRecoverAfter
	}
	if c.RecoverFor == 0 {
		c.RecoverFor = DefaultRecoverFor
	}
	if c.OverloadP99 == 0 {
		c.OverloadP99 = DefaultOverloadP99
	}
	if c.FeedLagBound == 0 {
		c.FeedLagBound = DefaultFeedLagBound
	}
	if c.TypingEvery == 0 {
		c.TypingEvery = DefaultTypingEvery
	}
	if c.Settle == 0 {
		c.Settle = DefaultSettle
	}
	if c.DataDir == "" {
		c.DataDir = node.DefaultDataDir
	}
	if c.ConnectConcurrency == 0 {
		c.ConnectConcurrency = DefaultConnectConcurrency
	}
	if c.SeedConcurrency == 0 {
		c.SeedConcurrency = DefaultSeedConcurrency
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.Seed == 0 {
		c.Seed = uint64(time.Now().UnixNano())
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
	if c.keepUp == 0 {
		c.keepUp = defaultKeepUp
	}
}

// limits on what one run may ask for: everything is bounded.
const (
	maxDuration = time.Hour
	maxRate     = 1_000_000
)

func (c *Config) validate() error {
	switch c.Mode {
	case ModeIdle, ModeFanout, ModeOverload:
	default:
		return fmt.Errorf("--mode %q: want idle, fanout or overload", c.Mode)
	}
	switch {
	case c.Users < 1:
		return fmt.Errorf("--users %d: want at least 1", c.Users)
	case c.ConvSize < 2 || c.ConvSize > maxMembers:
		return fmt.Errorf("--conv-size %d: want 2..%d", c.ConvSize, maxMembers)
	case c.ConvsPerUser < 0 || c.ConvsPerUser > 1000:
		return fmt.Errorf("--convs-per-user %d: want 0..1000", c.ConvsPerUser)
	case c.Mode != ModeIdle && c.Conversations < 1:
		return fmt.Errorf("--conversations %d: want at least 1", c.Conversations)
	case c.Mode != ModeIdle && c.Users < c.ConvSize:
		return fmt.Errorf("--users %d: fan-out needs at least %d users", c.Users, c.ConvSize)
	case c.Rate <= 0 || c.Rate > maxRate:
		return fmt.Errorf("--msg-rate %v: want 0 < rate <= %d", c.Rate, maxRate)
	case c.Duration <= 0 || c.Duration > maxDuration, c.Warmup < 0 || c.Warmup > maxDuration,
		c.Drain <= 0 || c.Drain > maxDuration, c.Settle < 0 || c.Settle > maxDuration, c.Hold < 0 || c.Hold > maxDuration:
		return fmt.Errorf("durations must be positive and at most %v", maxDuration)
	case c.TypingSockets < 0 || c.TypingSockets > c.Users:
		return fmt.Errorf("--typing-sockets %d: want 0..%d (the users)", c.TypingSockets, c.Users)
	case c.TypingSockets > 0 && c.Mode == ModeIdle:
		return errors.New("--typing-sockets needs --mode fanout or overload")
	case c.Mode == ModeOverload && (c.RecoverRate <= 0 || c.RecoverRate > maxRate):
		return fmt.Errorf("--recover-rate %v: want 0 < rate <= %d", c.RecoverRate, maxRate)
	case c.Mode == ModeOverload && (c.RecoverAfter < 0 || c.RecoverAfter > maxDuration || c.RecoverFor <= 0 || c.RecoverFor > maxDuration ||
		c.OverloadP99 <= 0 || c.FeedLagBound <= 0):
		return errors.New("--recover-after, --recover-for, --overload-p99 and --feed-lag-bound must be positive (--recover-after may be 0) and at most an hour")
	case c.TypingEvery < time.Millisecond || c.TypingEvery > time.Minute:
		return fmt.Errorf("--typing-every %v: want 1ms..1m", c.TypingEvery)
	case c.IDBase < 0:
		return fmt.Errorf("--id-base %d: want 0 (server assigns ids) or a positive id", c.IDBase)
	case c.ConnectConcurrency < 1 || c.SeedConcurrency < 1:
		return errors.New("concurrency must be at least 1")
	}
	for _, r := range c.Ramp {
		if r <= 0 || r > maxRate {
			return fmt.Errorf("--ramp rate %v: want 0 < rate <= %d", r, maxRate)
		}
	}
	if err := validUserPrefix(c.UserPrefix); err != nil {
		return err
	}
	return nil
}

func validUserPrefix(p string) error {
	if len(p) == 0 || len(p) > 40 {
		return fmt.Errorf("--user-prefix %q: want 1..40 characters", p)
	}
	for _, r := range p {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return fmt.Errorf("--user-prefix %q: want [A-Za-z0-9_-]", p)
		}
	}
	return nil
}

// ParseRamp parses "auto" or a comma-separated list of rates ("2k,5000,7.5k").
func ParseRamp(s string) ([]float64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	if s == "auto" {
		return append([]float64(nil), DefaultRamp...), nil
	}
	var rates []float64
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(strings.ToLower(f))
		mult := 1.0
		if t, ok := strings.CutSuffix(f, "k"); ok {
			f, mult = t, 1000
		}
		v, err := strconv.ParseFloat(f, 64)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("--ramp: %q is not a positive rate", f)
		}
		rates = append(rates, v*mult)
	}
	return rates, nil
}

// runner holds the state of one run.
type runner struct {
	cfg    Config
	base   string // http://host:port
	admin  *admin
	http   *http.Client
	minter *auth.Minter
	dialer *dialer
}

// Run seeds, connects, measures, closes every socket and returns the report.
// Every phase is bounded in time; ctx cancellation stops it early (sockets
// are still closed).
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg.setDefaults()
	u, err := CheckLoopbackURL(cfg.URL)
	if err != nil {
		return nil, err
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	host := u.Hostname()
	if strings.EqualFold(strings.TrimSuffix(host, "."), "localhost") {
		host = "127.0.0.1" // never resolve: stay on the loopback we checked
	}
	hostport := net.JoinHostPort(host, u.Port())
	if u.Port() == "" {
		hostport = net.JoinHostPort(host, map[string]string{"http": "80", "https": "443"}[u.Scheme])
	}
	if u.Scheme != "http" {
		return nil, fmt.Errorf("--url %q: only http (ws://) is supported by the load generator", cfg.URL)
	}
	if cfg.SourceAddrs == nil {
		cfg.SourceAddrs = DefaultSourceAddrs(host)
	}
	if len(cfg.SourceAddrs) > 0 {
		for _, ip := range cfg.SourceAddrs {
			if !ip.IsLoopback() {
				return nil, fmt.Errorf("--source-addrs: %s is %w", ip, ErrNotLoopback)
			}
		}
	}

	limit, err := RaiseFileLimit()
	if err != nil {
		return nil, err
	}
	if need := uint64(cfg.Users) + fdReserve; need > limit {
		return nil, fmt.Errorf("--users %d needs %d open files but the limit is %d (the server needs as many: at most %d sockets)", cfg.Users, need, limit, limit-fdReserve)
	}

	adminToken, secret, err := secrets(cfg)
	if err != nil {
		return nil, err
	}
	minter, err := auth.NewMinter(auth.MinterConfig{Secret: secret, Issuer: cfg.JWTIssuer, Audience: cfg.JWTAudience})
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConnsPerHost: cfg.SeedConcurrency,
		IdleConnTimeout:     30 * time.Second,
	}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	r := &runner{
		cfg:    cfg,
		base:   "http://" + hostport,
		http:   hc,
		admin:  &admin{base: "http://" + hostport, token: adminToken, http: hc},
		minter: minter,
		dialer: &dialer{wsURL: "ws://" + hostport + "/ws/inbox/", sources: cfg.SourceAddrs, timeout: cfg.DialTimeout},
	}

	// Fail fast, with one clear line, when nothing listens there.
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	_, err = scrape(pctx, hc, r.base+"/metrics")
	cancel()
	if err != nil {
		return nil, fmt.Errorf("server at %s is not reachable: %w", r.base, err)
	}

	rep := &Report{
		Mode: cfg.Mode, URL: r.base, Users: cfg.Users, Cores: runtime.NumCPU(),
		SourceAddrs: len(cfg.SourceAddrs), FileLimit: limit, UserPrefix: cfg.UserPrefix,
	}
	switch cfg.Mode {
	case ModeIdle:
		err = r.idle(ctx, rep)
	case ModeOverload:
		err = r.overload(ctx, rep)
	default:
		err = r.fanout(ctx, rep)
	}
	if err != nil {
		return nil, err
	}
	return rep, nil
}

// secrets picks the admin token and JWT secret: flags (or their environment
// variables), else the data folder's development secrets.
func secrets(cfg Config) (admin, jwt string, err error) {
	admin, jwt = cfg.AdminToken, cfg.JWTSecret
	if admin != "" && jwt != "" {
		return admin, jwt, nil
	}
	s, err := auth.LoadDevSecrets(cfg.DataDir)
	if err != nil {
		return "", "", fmt.Errorf("%w (pass --admin-token and --jwt-secret, or --data where inboxd ran)", err)
	}
	if admin == "" {
		admin = s.AdminToken
	}
	if jwt == "" {
		jwt = s.JWTSecret
	}
	return admin, jwt, nil
}

// bar returns a progress bar on the log, or a silent one.
func (r *runner) bar(n int, what string) *progressbar.ProgressBar {
	if !r.cfg.Progress {
		return progressbar.NewOptions(n, progressbar.OptionSetVisibility(false), progressbar.OptionSetWriter(io.Discard))
	}
	return progressbar.NewOptions(n,
		progressbar.OptionSetWriter(r.cfg.Log),
		progressbar.OptionSetDescription(what),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString(strings.TrimSuffix(what, "s")),
		progressbar.OptionThrottle(200*time.Millisecond),
		progressbar.OptionSetWidth(30),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(r.cfg.Log) }),
	)
}

// logf writes one line of human output.
func (r *runner) logf(format string, args ...any) {
	fmt.Fprintf(r.cfg.Log, format+"\n", args...)
}
