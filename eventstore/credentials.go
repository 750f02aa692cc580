package eventstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"inbox/internal/private"
)

// Files, in the data folder, holding the embedded server's credentials: one
// nkey seed per user (mode 0600, the format `nats --nkey` reads), and a nats
// CLI context for the inspection user (`nats --context <file>`).
const (
	ServiceKeyFile     = "nats-service.nk"
	InspectKeyFile     = "nats-inspect.nk"
	InspectContextFile = "nats-inspect.json"
)

// ErrNoCredentials: the data folder holds no NATS credentials (inboxd has
// not run there).
var ErrNoCredentials = errors.New("no NATS credentials")

// Credentials are the two users the embedded server admits, each an nkey
// whose seed is a file in the data folder:
//
//   - the service (inboxd itself, `inbox replay` and `inbox verify`), with
//     every right;
//   - the read-only inspection user (InspectPermissions), for the nats CLI.
//
// An nkey proves itself by signing the server's nonce: the seed never
// crosses the connection.
type Credentials struct {
	Dir     string // the data folder
	service string // public keys ("U...")
	inspect string
}

// LoadOrCreateCredentials returns the credentials in dir, generating the
// seeds the first time (an existing seed file readable by others is
// tightened to 0600). Concurrent first calls agree on one set.
func LoadOrCreateCredentials(dir string) (Credentials, error) {
	if _, err := private.Dir(dir); err != nil {
		return Credentials{}, fmt.Errorf("NATS credentials: create data folder: %w", err)
	}
	c := Credentials{Dir: dir}
	for _, k := range []struct {
		file string
		pub  *string
	}{{ServiceKeyFile, &c.service}, {InspectKeyFile, &c.inspect}} {
		path := filepath.Join(dir, k.file)
		pub, err := publicKey(path)
		if errors.Is(err, ErrNoCredentials) {
			pub, err = createKey(path)
		}
		if err != nil {
			return Credentials{}, err
		}
		if _, err := private.File(path); err != nil {
			return Credentials{}, fmt.Errorf("NATS credentials: %w", err)
		}
		*k.pub = pub
	}
	return c, nil
}

// LoadCredentials reads the credentials inboxd generated into dir. If there
// are none the error wraps ErrNoCredentials.
func LoadCredentials(dir string) (Credentials, error) {
	c := Credentials{Dir: dir}
	var err error
	if c.service, err = publicKey(c.ServiceKey()); err != nil {
		return Credentials{}, err
	}
	if c.inspect, err = publicKey(c.InspectKey()); err != nil {
		return Credentials{}, err
	}
	return c, nil
}

// ServiceKey is the path of the service's nkey seed.
func (c Credentials) ServiceKey() string { return filepath.Join(c.Dir, ServiceKeyFile) }

// InspectKey is the path of the inspection user's nkey seed.
func (c Credentials) InspectKey() string { return filepath.Join(c.Dir, InspectKeyFile) }

// InspectContext is the path of the inspection user's nats CLI context.
func (c Credentials) InspectContext() string { return filepath.Join(c.Dir, InspectContextFile) }

// users are the server's nkey users.
func (c Credentials) users() []*server.NkeyUser {
	return []*server.NkeyUser{
		{Nkey: c.service},
		{Nkey: c.inspect, Permissions: InspectPermissions()},
	}
}

// WriteInspectContext writes the inspection user's nats CLI context (mode
// 0600): the server's client URL and the absolute path of the seed, so that
// `nats --context <data>/nats-inspect.json stream info INBOX` works from any
// folder. An unspecified listen host (0.0.0.0, ::) is written as loopback.
func (c Credentials) WriteInspectContext(clientURL string) error {
	seed, err := filepath.Abs(c.InspectKey())
	if err != nil {
		return fmt.Errorf("write nats CLI context: %w", err)
	}
	ctx := struct {
		Description string `json:"description"`
		URL         string `json:"url"`
		NKey        string `json:"nkey"`
	}{
		Description: "inboxd's embedded NATS as the read-only inspection user (rewritten at each start)",
		URL:         loopbackURL(clientURL),
		NKey:        seed,
	}
	data, err := json.MarshalIndent(ctx, "", "  ")
	if err != nil {
		return fmt.Errorf("write nats CLI context: %w", err)
	}
	if err := private.Replace(c.InspectContext(), append(data, '\n')); err != nil {
		return fmt.Errorf("write nats CLI context: %w", err)
	}
	return nil
}

// RemoveInspectContext removes the context of a previous run (this one has
// no NATS port).
func (c Credentials) RemoveInspectContext() error {
	if err := os.Remove(c.InspectContext()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove stale nats CLI context: %w", err)
	}
	return nil
}

// ErrNoNATSPort: the inboxd that last started on a data folder listens on
// no NATS port (no inspection context).
var ErrNoNATSPort = errors.New("no NATS port")

// InspectURL is the client URL in the inspection context inboxd wrote into
// dir at its last start. Without one the error wraps ErrNoNATSPort.
func InspectURL(dir string) (string, error) {
	path := filepath.Join(dir, InspectContextFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("%w: %s does not exist", ErrNoNATSPort, path)
	}
	if err != nil {
		return "", fmt.Errorf("read nats CLI context: %w", err)
	}
	var ctx struct {
		URL string `json:"url"`
	}
	if err := json.Unmarshal(data, &ctx); err != nil || ctx.URL == "" {
		return "", fmt.Errorf("read nats CLI context: %s is damaged; restart inboxd to write it again", path)
	}
	return ctx.URL, nil
}

// loopbackURL replaces an unspecified host in a nats:// URL by loopback.
func loopbackURL(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return u
	}
	ip := net.ParseIP(p.Hostname())
	switch {
	case ip == nil || !ip.IsUnspecified():
		return u
	case ip.To4() != nil:
		p.Host = net.JoinHostPort("127.0.0.1", p.Port())
	default:
		p.Host = net.JoinHostPort("::1", p.Port())
	}
	return p.String()
}

// publicKey reads the nkey seed in path and returns its public key.
func publicKey(path string) (string, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("%w: %s does not exist", ErrNoCredentials, path)
	}
	if err != nil {
		return "", fmt.Errorf("read NATS credentials: %w", err)
	}
	kp, err := nkeys.ParseDecoratedNKey(data)
	if err != nil {
		return "", fmt.Errorf("read NATS credentials: %s is damaged (%v); delete it to generate a new one", path, err)
	}
	defer kp.Wipe()
	pub, err := kp.PublicKey()
	if err != nil || !nkeys.IsValidPublicUserKey(pub) {
		return "", fmt.Errorf("read NATS credentials: %s holds no user nkey; delete it to generate a new one", path)
	}
	return pub, nil
}

// createKey writes a new user nkey seed to path, or, if another process
// wrote one first, reads that one.
func createKey(path string) (string, error) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return "", fmt.Errorf("generate NATS credentials: %w", err)
	}
	defer kp.Wipe()
	seed, err := kp.Seed()
	if err != nil {
		return "", fmt.Errorf("generate NATS credentials: %w", err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return "", fmt.Errorf("generate NATS credentials: %w", err)
	}
	switch err := private.WriteNew(path, append(seed, '\n')); {
	case errors.Is(err, fs.ErrExist):
		return publicKey(path)
	case err != nil:
		return "", fmt.Errorf("write NATS credentials: %w", err)
	}
	return pub, nil
}

// InspectPermissions are the inspection user's rights: every read, no
// write. It may
//
//   - ask JetStream about the account, streams (KV buckets are streams) and
//     consumers: $JS.API.INFO, STREAM.NAMES, STREAM.LIST, STREAM.INFO.<stream>,
//     CONSUMER.NAMES.<stream>, CONSUMER.LIST.<stream>,
//     CONSUMER.INFO.<stream>.<consumer>;
//   - read stored messages by sequence or subject: STREAM.MSG.GET.<stream>
//     and DIRECT.GET.> (`nats stream get`, `nats kv get`, `nats sub --direct`);
//   - list and describe NATS services ($SRV.PING, INFO and STATS: `nats
//     micro ls|info|stats`), which answer read-only;
//   - subscribe to live events (inbox.>), KV updates ($KV.>) and the replies
//     to its own requests (_INBOX.>).
//
// Everything else is refused by the server, in particular publishing to
// inbox.> or $KV.> (forging an event or a presence entry), any STREAM.CREATE,
// UPDATE, DELETE, PURGE or MSG.DELETE, and any CONSUMER.CREATE or DELETE: a
// create naming an existing consumer updates it, so a user allowed to create
// consumers could narrow the projector's filter and make a node skip events.
// Paging through the stream is `nats sub 'inbox.>' --all --direct` rather
// than `nats stream view`, which creates a consumer.
func InspectPermissions() *server.Permissions {
	return &server.Permissions{
		Publish: &server.SubjectPermission{Allow: []string{
			"$JS.API.INFO",
			"$JS.API.STREAM.NAMES",
			"$JS.API.STREAM.LIST",
			"$JS.API.STREAM.INFO.*",
			"$JS.API.STREAM.MSG.GET.*",
			"$JS.API.DIRECT.GET.>",
			"$JS.API.CONSUMER.NAMES.*",
			"$JS.API.CONSUMER.LIST.*",
			"$JS.API.CONSUMER.INFO.*.*",
			// nats micro ls, info and stats: the read-model service
			// (inboxd --role projector) answers them, read-only.
			"$SRV.PING", "$SRV.PING.>", "$SRV.INFO", "$SRV.INFO.>", "$SRV.STATS", "$SRV.STATS.>",
		}},
		Subscribe: &server.SubjectPermission{Allow: []string{
			"inbox.>",
			"$KV.>",
			"_INBOX.>",
		}},
	}
}

// ServiceOption authenticates a connection as the service.
func (c Credentials) ServiceOption() (nats.Option, error) {
	opt, err := nats.NkeyOptionFromSeed(c.ServiceKey())
	if err != nil {
		return nil, fmt.Errorf("read NATS credentials %s: %w", c.ServiceKey(), err)
	}
	return opt, nil
}
