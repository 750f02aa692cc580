package eventstore

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"inbox/internal/private"
)

// EmbeddedConfig configures the nats-server that inboxd embeds by default.
type EmbeddedConfig struct {
	// Dir holds JetStream's file storage.
	Dir string
	// Listen is the client address ("127.0.0.1:4222"); empty means no listener
	// (in-process connections only). A listener requires Credentials.
	Listen string
	// Credentials, if set, are the only users the server admits; connect
	// with ConnectEmbedded(ns, name, creds.ServiceOption()). Without them the
	// server takes no client but in-process ones.
	Credentials *Credentials
	// SyncAlways fsyncs every write before acknowledging it (safe against an
	// OS crash, much slower). Default: JetStream's periodic sync.
	SyncAlways bool
	// ServerName names the server in logs and `nats server ls`.
	ServerName string
	Logger     *slog.Logger
}

// RunEmbedded starts a nats-server with JetStream and waits until it is ready.
func RunEmbedded(cfg EmbeddedConfig) (*server.Server, error) {
	if _, err := private.Dir(cfg.Dir); err != nil { // the stream is readable by the owner only
		return nil, fmt.Errorf("create NATS data folder: %w", err)
	}
	if err := checkWritable(cfg.Dir); err != nil {
		return nil, err
	}
	opts := &server.Options{
		ServerName: cfg.ServerName,
		JetStream:  true,
		StoreDir:   cfg.Dir,
		NoSigs:     true,
		NoLog:      cfg.Logger == nil,
		SyncAlways: cfg.SyncAlways,
		// A whole-message TTL'd typing storm or a big replay burst must not be
		// refused by the default 1 MiB pending limit of slow in-process clients.
		MaxPending: 64 << 20,
	}
	if cfg.Credentials != nil {
		opts.Nkeys = cfg.Credentials.users()
	}
	switch {
	case cfg.Listen == "":
		opts.DontListen = true
	case cfg.Credentials == nil:
		// The rule the finding of issue 15 (item 2) asks for, kept even if
		// credentials ever become optional: a port without authentication
		// lets any process that reaches it forge events or delete the stream.
		return nil, fmt.Errorf("NATS listen address %s: refused without credentials (any local process could write the stream)", cfg.Listen)
	default:
		host, port, err := net.SplitHostPort(cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("NATS listen address %q: %w", cfg.Listen, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil || p < 0 || p > 65535 {
			return nil, fmt.Errorf("NATS listen address %q: bad port", cfg.Listen)
		}
		opts.Host, opts.Port = host, p
		if p == 0 {
			opts.Port = server.RANDOM_PORT
		}
		// Fail with a clear line instead of nats-server's own exit on a busy port.
		ln, err := net.Listen("tcp", cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("NATS listen address %s: %w", cfg.Listen, err)
		}
		ln.Close()
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("configure embedded NATS: %w", err)
	}
	if cfg.Logger != nil {
		ns.SetLoggerV2(slogAdapter{cfg.Logger.With("component", "nats-server")}, false, false, false)
	}
	go ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		return nil, errors.New("embedded NATS did not become ready within 30s (is its data folder locked by another inboxd?)")
	}
	return ns, nil
}

// ConnectEmbedded connects to ns in-process (no TCP); opts add the
// credentials of a server that requires them.
func ConnectEmbedded(ns *server.Server, name string, opts ...nats.Option) (*nats.Conn, error) {
	opts = append([]nats.Option{nats.InProcessServer(ns), nats.Name(name), nats.MaxReconnects(-1)}, opts...)
	nc, err := nats.Connect("", opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to embedded NATS: %w", err)
	}
	return nc, nil
}

// Auth is how a connection to an external NATS server authenticates beside
// what its URL carries (nats://user:password@host, nats://token@host): a
// user credentials file (a JWT and its nkey seed, as nsc writes them) or an
// nkey seed file; at most one of the two.
type Auth struct {
	CredsFile string
	NkeyFile  string
}

func (a Auth) options() ([]nats.Option, error) {
	switch {
	case a.CredsFile != "" && a.NkeyFile != "":
		return nil, errors.New("NATS credentials: give a credentials file or an nkey seed file, not both")
	case a.CredsFile != "":
		if _, err := os.Stat(a.CredsFile); err != nil {
			return nil, fmt.Errorf("NATS credentials file: %w", err)
		}
		return []nats.Option{nats.UserCredentials(a.CredsFile)}, nil
	case a.NkeyFile != "":
		opt, err := nats.NkeyOptionFromSeed(a.NkeyFile)
		if err != nil {
			return nil, fmt.Errorf("NATS nkey seed file %s: %w", a.NkeyFile, err)
		}
		return []nats.Option{opt}, nil
	}
	return nil, nil
}

// Connect connects to an external NATS server or cluster (comma-separated
// URLs) with auth, failing fast with one clear error when none answers.
// Errors and logs show the URLs without their passwords or tokens. opts come
// after inbox's own (nats.NoReconnect for a Live).
func Connect(urls, name string, auth Auth, log *slog.Logger, opts ...nats.Option) (*nats.Conn, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	authOpts, err := auth.options()
	if err != nil {
		return nil, err
	}
	all := append(authOpts,
		nats.Name(name),
		nats.Timeout(5*time.Second),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		nats.ReconnectBufSize(-1), // never buffer publishes: a send during an outage must fail, not linger
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn("NATS disconnected", "err", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("NATS reconnected", "url", nc.ConnectedUrlRedacted())
		}),
	)
	nc, err := nats.Connect(urls, append(all, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w", RedactURLs(urls), err)
	}
	return nc, nil
}

// RedactURLs is a comma-separated list of NATS URLs with every password, or
// token, replaced by "xxxxx".
func RedactURLs(urls string) string {
	list := strings.Split(urls, ",")
	for i, s := range list {
		u, err := url.Parse(strings.TrimSpace(s))
		if err != nil || u.User == nil {
			continue
		}
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		} else {
			u.User = url.User("xxxxx") // a token
		}
		list[i] = u.String()
	}
	return strings.Join(list, ",")
}

func checkWritable(dir string) error {
	f, err := os.CreateTemp(dir, ".write-check-*")
	if err != nil {
		return fmt.Errorf("NATS data folder %s is not writable: %w", dir, err)
	}
	name := f.Name()
	f.Close()
	return os.Remove(filepath.Clean(name))
}

// slogAdapter is nats-server's Logger on top of slog.
type slogAdapter struct{ l *slog.Logger }

// Noticef is nats-server's chatter (banner, listen addresses): debug level here,
// since inboxd logs what matters itself.
func (a slogAdapter) Noticef(format string, v ...any) { a.l.Debug(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Warnf(format string, v ...any)   { a.l.Warn(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Fatalf(format string, v ...any)  { a.l.Error(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Errorf(format string, v ...any)  { a.l.Error(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Debugf(format string, v ...any)  { a.l.Debug(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Tracef(format string, v ...any)  { a.l.Debug(fmt.Sprintf(format, v...)) }
