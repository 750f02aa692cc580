package eventstore

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
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
	// (in-process connections only).
	Listen string
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
	if cfg.Listen == "" {
		opts.DontListen = true
	} else {
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

// ConnectEmbedded connects to ns in-process (no TCP).
func ConnectEmbedded(ns *server.Server, name string) (*nats.Conn, error) {
	nc, err := nats.Connect("", nats.InProcessServer(ns), nats.Name(name), nats.MaxReconnects(-1))
	if err != nil {
		return nil, fmt.Errorf("connect to embedded NATS: %w", err)
	}
	return nc, nil
}

// Connect connects to an external NATS server or cluster (comma-separated URLs),
// failing fast with one clear error when none answers.
func Connect(url, name string, log *slog.Logger) (*nats.Conn, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	nc, err := nats.Connect(url,
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
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w", url, err)
	}
	return nc, nil
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
