// Package presence tracks which users are online across inboxd nodes in one
// NATS JetStream key-value bucket that every node writes and watches.
//
// Keys of the bucket inbox_presence (history 1):
//
//	node.<node>         the node's liveness: re-published every Heartbeat with a
//	                    per-key TTL of NodeTTL; it expires when the node dies.
//	                    Its value names the run (start time), so a restarted
//	                    node is told from the run before it
//	user.<user>.<node>  present while the user has a socket on that node
//
// Cost is per node, not per user: one heartbeat per node, one write per
// user transition. Every node watches the whole bucket and keeps, in memory,
// which live nodes each user is on. A user is online while at least one live
// node holds a key for it. When a node key expires (crash, kill -9, partition)
// or is deleted (graceful Close), every node drops that node's users at once
// and purges its user keys from the bucket.
package presence

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"inbox/eventstore"
)

// Bucket is the key-value bucket every node shares.
const Bucket = "inbox_presence"

// Defaults for zero Config fields.
const (
	DefaultHeartbeat = 5 * time.Second
	// DefaultMarkerTTL is how long expiry and purge markers stay in the bucket.
	DefaultMarkerTTL = time.Minute
	// writeTimeout bounds one NATS call of the writer and of Close.
	writeTimeout = 5 * time.Second
	// writeBatch is how many user writes are in flight at once.
	writeBatch = 512
)

// ErrBadConfig is returned by Start for an unusable Config.
var ErrBadConfig = errors.New("presence: bad config")

var nodeIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Config configures a Tracker.
type Config struct {
	// NodeID names this inboxd node; unique among live nodes and stable
	// across restarts if possible ([A-Za-z0-9_-]{1,64}).
	NodeID string
	// Replicas of the bucket (1 for a single server, 3 on a cluster).
	Replicas int
	// Heartbeat is how often the node key is re-published. Default 5s.
	Heartbeat time.Duration
	// NodeTTL is how long a node key lives without a heartbeat: the longest a
	// dead node's users stay online. JetStream counts per-key TTLs in whole
	// seconds, so it is rounded up to one. Default 3 × Heartbeat.
	NodeTTL time.Duration
}

// Deps are the parts a Tracker is built on. JetStream is required.
type Deps struct {
	JetStream jetstream.JetStream
	// Notify is called for each transition after Start returns (not for the
	// state loaded at start: ask Status), on the tracker's goroutine, one at
	// a time; it must not block. nil: nobody is told.
	Notify func(Change)
	Logger *slog.Logger // nil: discard
}

func (c Config) withDefaults() (Config, error) {
	if !nodeIDPattern.MatchString(c.NodeID) {
		return c, fmt.Errorf("%w: node id %q (want [A-Za-z0-9_-]{1,64})", ErrBadConfig, c.NodeID)
	}
	if c.Replicas <= 0 {
		c.Replicas = eventstore.DefaultReplicas
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = DefaultHeartbeat
	}
	if c.NodeTTL <= 0 {
		c.NodeTTL = 3 * c.Heartbeat
	}
	if r := c.NodeTTL % time.Second; r != 0 {
		c.NodeTTL += time.Second - r
	}
	if c.NodeTTL <= c.Heartbeat {
		return c, fmt.Errorf("%w: node TTL %v must exceed the heartbeat %v", ErrBadConfig, c.NodeTTL, c.Heartbeat)
	}
	return c, nil
}

// BucketConfig is the presence bucket's configuration.
func BucketConfig(replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:         Bucket,
		Description:    "inbox presence: node liveness and the users each node holds",
		History:        1,
		Replicas:       replicas,
		Storage:        jetstream.FileStorage,
		LimitMarkerTTL: DefaultMarkerTTL, // per-key TTLs, and expiries seen by watchers
	}
}

// Change is a user's transition, as seen by every node.
type Change struct {
	UserID string
	Online bool
	// LastSeen is set when Online is false: when the user's last socket
	// closed, or, if its node died, when that node was last known alive.
	LastSeen time.Time
}

// Tracker publishes this node's users and follows every node's.
type Tracker struct {
	cfg    Config
	log    *slog.Logger
	js     jetstream.JetStream
	kv     jetstream.KeyValue
	stream jetstream.Stream
	notify func(Change)
	w      jetstream.KeyWatcher

	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	stopOnce  sync.Once
	closeOnce sync.Once
	closeErr  error

	nodeKey string
	run     []byte // the node key's value: this run of the node id
	rev     uint64 // last revision of nodeKey; owned by the heartbeat goroutine

	// Watched state: written by the watch goroutine, read by Status.
	mu      sync.RWMutex
	nodes   map[string]*nodeState // live nodes
	users   map[string]*userState
	initial map[string]map[string]uint64 // during the initial snapshot: node → user → revision of keys of nodes not (yet) seen alive

	// Outgoing writes, filled by Online/Offline and the watch goroutine,
	// drained by the writer goroutine.
	wmu     sync.Mutex
	local   map[string]struct{} // users with a socket on this node
	dirty   []string            // users whose key must be (re)written, oldest first
	isDirty map[string]struct{}
	purges  map[string]uint64 // node → purge its user keys below this revision
	wake    chan struct{}
}

type nodeState struct {
	run      string // the run of the node id whose users these are
	lastBeat time.Time
	users    map[string]time.Time // user → when its key was put
}

type userState struct {
	nodes    map[string]struct{} // live nodes holding a key for the user
	lastSeen time.Time
}

// Start creates or updates the bucket, clears what a previous run of this
// node id left behind, registers the node, loads every node's users and starts
// following changes, telling d.Notify of each transition.
//
// Cancelling ctx stops the tracker the way a crash would (its keys stay until
// they expire); Close stops it and removes them.
func Start(ctx context.Context, cfg Config, d Deps) (*Tracker, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if d.JetStream == nil {
		return nil, fmt.Errorf("%w: no JetStream", ErrBadConfig)
	}
	notify := d.Notify
	if notify == nil {
		notify = func(Change) {}
	}
	logger := d.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	t := &Tracker{
		cfg:     cfg,
		log:     logger.With("component", "presence", "node", cfg.NodeID),
		js:      d.JetStream,
		notify:  notify,
		nodeKey: "node." + cfg.NodeID,
		run:     []byte(strconv.FormatInt(time.Now().UnixNano(), 10)),
		nodes:   make(map[string]*nodeState),
		users:   make(map[string]*userState),
		initial: make(map[string]map[string]uint64),
		local:   make(map[string]struct{}),
		isDirty: make(map[string]struct{}),
		purges:  make(map[string]uint64),
		wake:    make(chan struct{}, 1),
	}
	t.ctx, t.cancel = context.WithCancel(ctx)
	if err := t.start(); err != nil {
		t.cancel()
		if t.w != nil {
			t.w.Stop()
		}
		return nil, err
	}
	t.wg.Add(3)
	go func() { defer t.wg.Done(); t.watchLoop() }()
	go func() { defer t.wg.Done(); t.heartbeatLoop() }()
	go func() { defer t.wg.Done(); t.writeLoop() }()
	t.log.Info("presence started", "heartbeat", cfg.Heartbeat, "node_ttl", cfg.NodeTTL, "users_online", t.onlineCount())
	return t, nil
}

func (t *Tracker) start() error {
	ctx := t.ctx
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
	}
	var kv jetstream.KeyValue
	err := eventstore.RetryAPI(ctx, t.log, "create or update bucket "+Bucket, func(ctx context.Context) (err error) {
		kv, err = t.js.CreateOrUpdateKeyValue(ctx, BucketConfig(t.cfg.Replicas))
		return err
	})
	if err != nil {
		return fmt.Errorf("create or update bucket %s: %w", Bucket, err)
	}
	t.kv = kv
	// On a new cluster the bucket's stream may have no leader yet for a
	// moment: these first requests are retried like the bucket's creation.
	err = eventstore.RetryAPI(ctx, t.log, "open stream of bucket "+Bucket, func(ctx context.Context) (err error) {
		t.stream, err = t.js.Stream(ctx, "KV_"+Bucket)
		return err
	})
	if err != nil {
		return fmt.Errorf("open stream of bucket %s: %w", Bucket, err)
	}

	// A previous run of this node id that crashed may still look alive and
	// hold user keys: end it the way Close would have.
	stale := false
	err = eventstore.RetryAPI(ctx, t.log, "get "+t.nodeKey, func(ctx context.Context) error {
		_, err := kv.Get(ctx, t.nodeKey)
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			return nil
		}
		stale = err == nil
		return err
	})
	if err != nil {
		return fmt.Errorf("get %s: %w", t.nodeKey, err)
	}
	if stale {
		t.log.Warn("presence: this node id was still registered (restart after a crash?); removing its users")
		if err := kv.Delete(ctx, t.nodeKey); err != nil {
			return fmt.Errorf("delete stale key %s: %w", t.nodeKey, err)
		}
	}
	if err := t.purgeUsersOf(ctx, t.cfg.NodeID, 0); err != nil {
		return err
	}
	if t.rev, err = t.publishNodeKey(ctx, false); err != nil {
		return fmt.Errorf("register node: %w", err)
	}

	// The watcher lives as long as the tracker (t.ctx); ctx only bounds the
	// initial snapshot.
	if t.w, err = kv.WatchAll(t.ctx); err != nil {
		return fmt.Errorf("watch bucket %s: %w", Bucket, err)
	}
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("load bucket %s: %w", Bucket, ctx.Err())
		case e, ok := <-t.w.Updates():
			if !ok {
				return fmt.Errorf("load bucket %s: watcher closed", Bucket)
			}
			if e == nil {
				t.endInitial()
				return nil
			}
			t.apply(e, nil)
		}
	}
}

// Online records that this node's first socket for user opened. It never
// waits on NATS: the write is queued.
func (t *Tracker) Online(user string) { t.set(user, true) }

// Offline records that this node's last socket for user closed. It never
// waits on NATS: the write is queued.
func (t *Tracker) Offline(user string) { t.set(user, false) }

func (t *Tracker) set(user string, online bool) {
	if !eventstore.ValidUserID(user) {
		t.log.Warn("presence: ignored invalid user id", "user", user)
		return
	}
	t.wmu.Lock()
	if online {
		t.local[user] = struct{}{}
	} else {
		delete(t.local, user)
	}
	t.markDirtyLocked(user)
	t.wmu.Unlock()
	t.signal()
}

// Status reports whether user is online on any node and, if not, when it was
// last seen (zero if unknown). It reads the watched state: no NATS round trip,
// so this node's own Online/Offline show up once their write has come back
// through the watch (milliseconds).
func (t *Tracker) Status(user string) (online bool, lastSeen time.Time) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	us := t.users[user]
	if us == nil {
		return false, time.Time{}
	}
	return len(us.nodes) > 0, us.lastSeen
}

// Close stops the tracker and removes this node's keys, so its users go
// offline on every node now rather than after NodeTTL. It is idempotent.
func (t *Tracker) Close() error {
	t.closeOnce.Do(func() {
		t.halt()
		ctx, cancel := context.WithTimeout(context.WithoutCancel(t.ctx), writeTimeout)
		defer cancel()
		var errs []error
		if err := t.kv.Delete(ctx, t.nodeKey); err != nil {
			errs = append(errs, fmt.Errorf("delete %s: %w", t.nodeKey, err))
		}
		if err := t.purgeUsersOf(ctx, t.cfg.NodeID, 0); err != nil {
			errs = append(errs, err)
		}
		t.closeErr = errors.Join(errs...)
		t.log.Info("presence stopped", "err", t.closeErr)
	})
	return t.closeErr
}

// halt stops every goroutine and leaves the keys in place, as a crash would.
func (t *Tracker) halt() {
	t.stopOnce.Do(func() {
		t.cancel()
		t.wg.Wait()
	})
}

// publishNodeKey (re)publishes the node key with its TTL; with expect, only
// if the last revision is still ours.
func (t *Tracker) publishNodeKey(ctx context.Context, expect bool) (uint64, error) {
	opts := []jetstream.PublishOpt{jetstream.WithMsgTTL(t.cfg.NodeTTL)}
	if expect {
		opts = append(opts, jetstream.WithExpectLastSequencePerSubject(t.rev))
	}
	ack, err := t.js.PublishMsg(ctx, &nats.Msg{Subject: keySubject(t.nodeKey), Data: t.run}, opts...)
	if err != nil {
		return 0, err
	}
	return ack.Sequence, nil
}

// purgeUsersOf removes the user keys of node stored below revision before
// (all of them if 0), leaving no markers.
func (t *Tracker) purgeUsersOf(ctx context.Context, node string, before uint64) error {
	opts := []jetstream.StreamPurgeOpt{jetstream.WithPurgeSubject(keySubject("user.*." + node))}
	if before > 0 {
		opts = append(opts, jetstream.WithPurgeSequence(before))
	}
	if err := t.stream.Purge(ctx, opts...); err != nil {
		return fmt.Errorf("purge user keys of node %s: %w", node, err)
	}
	return nil
}

func keySubject(key string) string { return "$KV." + Bucket + "." + key }

func userKey(user, node string) string { return "user." + user + "." + node }

func (t *Tracker) onlineCount() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	n := 0
	for _, us := range t.users {
		if len(us.nodes) > 0 {
			n++
		}
	}
	return n
}

func (t *Tracker) signal() {
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// Lock (wmu) should be held.
func (t *Tracker) markDirtyLocked(user string) {
	if _, ok := t.isDirty[user]; ok {
		return
	}
	t.isDirty[user] = struct{}{}
	t.dirty = append(t.dirty, user)
}

// requestPurge queues the purge of node's user keys below revision before.
func (t *Tracker) requestPurge(node string, before uint64) {
	t.wmu.Lock()
	t.purges[node] = max(t.purges[node], before)
	t.wmu.Unlock()
	t.signal()
}

// splitUserKey splits "user.<user>.<node>"; neither id contains a dot.
func splitUserKey(rest string) (user, node string, ok bool) {
	user, node, ok = strings.Cut(rest, ".")
	return user, node, ok && user != "" && node != "" && !strings.Contains(node, ".")
}
