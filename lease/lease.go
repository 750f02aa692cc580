// Package lease shares the partitions of the event stream among projectors:
// each partition has at most one owner at a time, the projector holding its
// lease, a key with a TTL in the JetStream key-value bucket inbox_leases.
// The owner renews it well within the TTL; when the owner dies (kill -9, a
// lost network) the key expires and another projector that keeps the
// partition's read model takes it over.
//
// Keys of the bucket (history 1, per-key TTLs):
//
//	partition.<k>  the owner of partition k: its node id. Created by the
//	               taker (only if absent), renewed by the owner expecting its
//	               own last revision, deleted by an owner that lets go.
//	projector.<id> a live projector: the partitions it keeps and which of
//	               them are caught up (JSON), renewed like a lease.
//
// Every projector watches the whole bucket (a few keys per partition and
// projector), so it sees a lease expire or be released as it happens, and
// decides from that view alone:
//   - it renews what it owns; a renewal refused for its revision means the
//     lease was lost (it expired and another took it): it stops serving it;
//   - it takes a partition nobody owns if it keeps that partition, is caught
//     up on it, and owns fewer than its fair share (the partitions divided
//     among the live projectors, rounded up); whatever the shares, it takes
//     one whose lease expired (its owner died: the next steps even the
//     shares out) or that has been without an owner for two renewals;
//   - it lets go of one partition per renewal while it owns more than its
//     share and a live projector that is caught up on it owns fewer.
//
// Two owners at once are harmless by design: a lease decides only who
// answers queries and publishes unread counts, and every projector that
// keeps a partition applies the stream to its own SQLite file. So a stalled
// owner that lost its lease without knowing answers from a read model as
// good as the new owner's, until its next renewal fails.
package lease

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"inbox/eventstore"
)

// Bucket is the key-value bucket of the leases.
const Bucket = "inbox_leases"

// Defaults for zero Config fields.
const (
	// DefaultTTL is how long a lease outlives its owner's last renewal: the
	// longest a dead projector's partitions go unanswered, before the
	// taker's catch-up.
	DefaultTTL = 5 * time.Second
	// markerTTL is how long the bucket keeps the marker of an expired key,
	// so watchers see the expiry.
	markerTTL = time.Minute
	// apiTimeout bounds one NATS call.
	apiTimeout = 2 * time.Second
)

// ErrBadConfig is returned by Start for an unusable Config.
var ErrBadConfig = errors.New("lease: bad config")

var nodeIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Config configures a Leases.
type Config struct {
	// NodeID names this projector; unique among live projectors.
	NodeID string
	// Partitions is how many partitions the stream has.
	Partitions int
	// Keep are the partitions this projector keeps a read model of: the
	// only ones it may own.
	Keep []int
	// TTL is a lease's time to live without renewal (default DefaultTTL).
	// JetStream counts per-key TTLs in whole seconds: it is rounded up.
	TTL time.Duration
	// Renew is how often leases are renewed and ownership reconsidered
	// (default TTL/5).
	Renew time.Duration
	// Replicas of the bucket (1 for a single server, 3 on a cluster).
	Replicas int
}

// Deps are what a Leases is built on. JetStream is required.
type Deps struct {
	JetStream jetstream.JetStream
	// Ready returns the kept partitions whose read model is caught up with
	// the stream: only those are taken. It is called on the leases'
	// goroutine at each renewal. nil: all of them.
	Ready func(ctx context.Context) []int
	// OnChange is told the partitions this projector owns, in order, after
	// each change (and an empty list when Close lets go of them), on the
	// leases' goroutine. nil: nobody is told.
	OnChange func(owned []int)
	Logger   *slog.Logger // nil: discard
}

func (c Config) withDefaults() (Config, error) {
	switch {
	case !nodeIDPattern.MatchString(c.NodeID):
		return c, fmt.Errorf("%w: node id %q (want [A-Za-z0-9_-]{1,64})", ErrBadConfig, c.NodeID)
	case c.Partitions < 1 || c.Partitions > eventstore.MaxPartitions:
		return c, fmt.Errorf("%w: %d partitions", ErrBadConfig, c.Partitions)
	case len(c.Keep) == 0:
		return c, fmt.Errorf("%w: no partition to keep", ErrBadConfig)
	}
	for _, k := range c.Keep {
		if k < 0 || k >= c.Partitions {
			return c, fmt.Errorf("%w: partition %d of %d", ErrBadConfig, k, c.Partitions)
		}
	}
	c.Keep = slices.Compact(slices.Sorted(slices.Values(c.Keep)))
	if c.TTL <= 0 {
		c.TTL = DefaultTTL
	}
	if r := c.TTL % time.Second; r != 0 {
		c.TTL += time.Second - r
	}
	if c.Renew <= 0 {
		c.Renew = c.TTL / 5
	}
	if c.Renew >= c.TTL/2 {
		return c, fmt.Errorf("%w: renewal every %v is not well within the TTL %v", ErrBadConfig, c.Renew, c.TTL)
	}
	if c.Replicas <= 0 {
		c.Replicas = eventstore.DefaultReplicas
	}
	return c, nil
}

// BucketConfig is the leases bucket's configuration.
func BucketConfig(replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:         Bucket,
		Description:    "inbox projector leases: which projector answers for each partition",
		History:        1,
		Replicas:       replicas,
		Storage:        jetstream.FileStorage,
		LimitMarkerTTL: markerTTL, // per-key TTLs, and expiries seen by watchers
	}
}

// projectorInfo is a projector key's value.
type projectorInfo struct {
	Keep  []int `json:"keep"`
	Ready []int `json:"ready"`
}

// Leases takes, keeps and lets go of this projector's partitions.
type Leases struct {
	cfg      Config
	log      *slog.Logger
	js       jetstream.JetStream
	kv       jetstream.KeyValue
	ready    func(ctx context.Context) []int
	onChange func([]int)
	w        jetstream.KeyWatcher

	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	haltOnce sync.Once

	// Owned by the goroutine (loop), and by Close after it stopped.
	owners     map[int]string           // watched: partition → owner
	since      map[int]time.Time        // watched: partition → when it was last seen without an owner
	expired    map[int]bool             // watched: partition → its lease expired (not let go)
	suspect    map[string]bool          // watched: projectors whose lease expired, until they announce themselves again
	projectors map[string]projectorInfo // watched: live projectors
	owned      map[int]uint64           // partition → revision of our lease
	renewed    map[int]time.Time        // partition → our last successful renewal
	readyNow   []int                    // partitions caught up at the last step

	mu        sync.Mutex
	ownedList []int // what OnChange was last told

	closeOnce sync.Once
	closeErr  error
}

// Start creates or updates the bucket, loads it and starts taking and
// renewing leases. Cancelling ctx stops it as a crash would (its leases
// expire); Close lets go of them at once.
func Start(ctx context.Context, cfg Config, d Deps) (*Leases, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if d.JetStream == nil {
		return nil, fmt.Errorf("%w: no JetStream", ErrBadConfig)
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.Ready == nil {
		d.Ready = func(context.Context) []int { return cfg.Keep }
	}
	if d.OnChange == nil {
		d.OnChange = func([]int) {}
	}
	l := &Leases{
		cfg: cfg, log: d.Logger.With("component", "leases", "node", cfg.NodeID), js: d.JetStream,
		ready: d.Ready, onChange: d.OnChange,
		owners: make(map[int]string), since: make(map[int]time.Time), expired: make(map[int]bool), suspect: make(map[string]bool), projectors: make(map[string]projectorInfo),
		owned: make(map[int]uint64), renewed: make(map[int]time.Time),
	}
	l.ctx, l.cancel = context.WithCancel(ctx)
	if err := l.start(); err != nil {
		l.cancel()
		if l.w != nil {
			l.w.Stop()
		}
		return nil, err
	}
	l.wg.Go(l.loop)
	l.log.Info("leases started", "keep", cfg.Keep, "ttl", cfg.TTL, "renew", cfg.Renew)
	return l, nil
}

func (l *Leases) start() error {
	ctx, cancel := context.WithTimeout(l.ctx, 30*time.Second)
	defer cancel()
	err := eventstore.RetryAPI(ctx, l.log, "create or update bucket "+Bucket, func(ctx context.Context) (err error) {
		l.kv, err = l.js.CreateOrUpdateKeyValue(ctx, BucketConfig(l.cfg.Replicas))
		return err
	})
	if err != nil {
		return fmt.Errorf("create or update bucket %s: %w", Bucket, err)
	}
	// The watcher lives as long as the leases (l.ctx); ctx bounds the
	// initial load.
	if l.w, err = l.kv.WatchAll(l.ctx); err != nil {
		return fmt.Errorf("watch bucket %s: %w", Bucket, err)
	}
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("load bucket %s: %w", Bucket, ctx.Err())
		case e, ok := <-l.w.Updates():
			if !ok {
				return fmt.Errorf("load bucket %s: watcher closed", Bucket)
			}
			if e == nil {
				return nil
			}
			l.apply(e)
		}
	}
}

// loop renews, takes and lets go every Renew, and as soon as the watch
// shows a lease gone.
func (l *Leases) loop() {
	defer l.stopWatcher()
	tick := time.NewTicker(l.cfg.Renew)
	defer tick.Stop()
	l.step()
	for {
		select {
		case <-l.ctx.Done():
			return
		case e, ok := <-l.w.Updates():
			if !ok {
				l.log.Error("lease watcher closed; leases are no longer followed")
				return
			}
			if e != nil && l.apply(e) {
				l.step()
			}
		case <-tick.C:
			l.step()
		}
	}
}

// apply applies one bucket entry to the watched state; it reports whether a
// partition lost its owner (a step should look at it now).
func (l *Leases) apply(e jetstream.KeyValueEntry) (freed bool) {
	put := e.Operation() == jetstream.KeyValuePut
	if rest, ok := strings.CutPrefix(e.Key(), "partition."); ok {
		k, err := strconv.Atoi(rest)
		if err != nil {
			return false
		}
		if put {
			l.owners[k] = string(e.Value())
			delete(l.since, k)
			delete(l.expired, k)
			return false
		}
		// An expired lease leaves a purge marker (its owner died, most
		// likely: it counts for nothing until it announces itself again);
		// one let go, a delete.
		l.expired[k] = e.Operation() == jetstream.KeyValuePurge
		if owner, ok := l.owners[k]; ok && l.expired[k] && owner != l.cfg.NodeID {
			l.suspect[owner] = true
		}
		delete(l.owners, k)
		l.since[k] = time.Now()
		return true
	}
	if id, ok := strings.CutPrefix(e.Key(), "projector."); ok {
		if !put {
			delete(l.projectors, id)
			delete(l.suspect, id)
			return false
		}
		delete(l.suspect, id) // it announces itself after its lease expired: alive
		var info projectorInfo
		if err := json.Unmarshal(e.Value(), &info); err != nil {
			l.log.Warn("ignored malformed projector key", "key", e.Key(), "err", err)
			return false
		}
		l.projectors[id] = info
	}
	return false
}

// step renews what this projector owns, announces it, then takes or lets
// go of at most what the rules allow.
func (l *Leases) step() {
	ctx, cancel := context.WithTimeout(l.ctx, l.cfg.Renew)
	defer cancel()
	now := time.Now()
	for k, rev := range l.owned {
		next, err := l.put(ctx, partitionKey(k), []byte(l.cfg.NodeID), rev)
		switch {
		case err == nil:
			l.owned[k], l.renewed[k] = next, now
		case eventstore.IsWrongLastSeq(err):
			l.log.Warn("lease lost: another projector owns the partition now", "partition", k)
			l.drop(k)
		case now.Sub(l.renewed[k]) >= l.cfg.TTL:
			l.log.Warn("lease lost: not renewed within its TTL", "partition", k, "err", err)
			l.drop(k)
		default:
			l.log.Warn("renew lease", "partition", k, "err", err)
		}
	}
	l.readyNow = l.readyNow[:0]
	for _, k := range l.ready(ctx) {
		if slices.Contains(l.cfg.Keep, k) {
			l.readyNow = append(l.readyNow, k)
		}
	}
	info, _ := json.Marshal(projectorInfo{Keep: l.cfg.Keep, Ready: l.readyNow})
	if _, err := l.put(ctx, projectorKey(l.cfg.NodeID), info, 0); err != nil {
		l.log.Warn("announce projector", "err", err)
	}
	l.projectors[l.cfg.NodeID] = projectorInfo{Keep: l.cfg.Keep, Ready: slices.Clone(l.readyNow)}

	fair := l.fairShare()
	for _, k := range l.readyNow {
		if _, mine := l.owned[k]; mine {
			continue
		}
		owner, taken := l.owners[k]
		if taken && owner != l.cfg.NodeID {
			continue
		}
		// Unowned, or a lease left by an earlier run of this node id:
		// taken over when the rules allow.
		urgent := !taken && (l.expired[k] || now.Sub(l.sinceOf(k, now)) >= 2*l.cfg.Renew)
		if len(l.owned) >= fair && !urgent {
			continue
		}
		if l.take(ctx, k, taken) {
			l.renewed[k] = now
		}
	}
	if len(l.owned) > fair {
		l.letGo(ctx, fair)
	}
	l.publish()
}

// sinceOf is when partition k was first seen without an owner (now if it
// never had one in view).
func (l *Leases) sinceOf(k int, now time.Time) time.Time {
	if t, ok := l.since[k]; ok {
		return t
	}
	l.since[k] = now
	return now
}

// fairShare is this projector's share of the partitions: all of them
// divided among the live projectors (not suspected dead), rounded up.
func (l *Leases) fairShare() int {
	live := 0
	for id := range l.projectors {
		if !l.suspect[id] {
			live++
		}
	}
	live = max(1, live)
	return (l.cfg.Partitions + live - 1) / live
}

// take creates partition k's lease (or adopts one an earlier run of this
// node id left); it reports whether this projector owns k now.
func (l *Leases) take(ctx context.Context, k int, adopt bool) bool {
	key := partitionKey(k)
	var rev uint64
	var err error
	if adopt {
		var e jetstream.KeyValueEntry
		if e, err = l.kv.Get(ctx, key); err == nil {
			if string(e.Value()) != l.cfg.NodeID {
				return false // taken by another since the watch said
			}
			rev, err = l.put(ctx, key, []byte(l.cfg.NodeID), e.Revision())
		}
	} else {
		rev, err = l.kv.Create(ctx, key, []byte(l.cfg.NodeID), jetstream.KeyTTL(l.cfg.TTL))
	}
	if err != nil {
		if !errors.Is(err, jetstream.ErrKeyExists) && !eventstore.IsWrongLastSeq(err) {
			l.log.Warn("take lease", "partition", k, "err", err)
		}
		return false
	}
	l.owned[k] = rev
	l.log.Info("lease taken", "partition", k, "owned", len(l.owned))
	return true
}

// letGo releases one partition that a live projector caught up on it, and
// owning fewer than fair, can take.
func (l *Leases) letGo(ctx context.Context, fair int) {
	counts := make(map[string]int)
	for _, owner := range l.owners {
		counts[owner]++
	}
	for _, k := range slices.Backward(l.ownedSorted()) {
		for id, info := range l.projectors {
			if id == l.cfg.NodeID || l.suspect[id] || counts[id] >= fair || !slices.Contains(info.Ready, k) {
				continue
			}
			if err := l.kv.Delete(ctx, partitionKey(k), jetstream.LastRevision(l.owned[k])); err != nil {
				l.log.Warn("let go of lease", "partition", k, "err", err)
				return
			}
			l.log.Info("lease let go for balance", "partition", k, "to", id, "fair_share", fair)
			l.drop(k)
			return
		}
	}
}

// put publishes key with the lease TTL, expecting revision rev (0: any).
func (l *Leases) put(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	opts := []jetstream.PublishOpt{jetstream.WithMsgTTL(l.cfg.TTL)}
	if rev != 0 {
		opts = append(opts, jetstream.WithExpectLastSequencePerSubject(rev))
	}
	ack, err := l.js.PublishMsg(ctx, &nats.Msg{Subject: "$KV." + Bucket + "." + key, Data: value}, opts...)
	if err != nil {
		return 0, err
	}
	return ack.Sequence, nil
}

func (l *Leases) drop(k int) {
	delete(l.owned, k)
	delete(l.renewed, k)
}

func (l *Leases) ownedSorted() []int {
	ks := make([]int, 0, len(l.owned))
	for k := range l.owned {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// publish tells OnChange when the owned set changed.
func (l *Leases) publish() {
	now := l.ownedSorted()
	l.mu.Lock()
	same := slices.Equal(now, l.ownedList)
	l.ownedList = now
	l.mu.Unlock()
	if !same {
		l.log.Info("owned partitions", "partitions", now)
		l.onChange(now)
	}
}

// Owned is the partitions this projector owns, in order.
func (l *Leases) Owned() []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.ownedList)
}

// Halt stops renewing as a crash would: the leases stay until they expire.
func (l *Leases) Halt() {
	l.haltOnce.Do(func() {
		l.cancel()
		l.wg.Wait()
	})
}

// Close stops the leases and lets go of them, so other projectors take the
// partitions over now rather than after the TTL. OnChange is told first
// (an empty list): stop serving before the lease goes. It is idempotent.
func (l *Leases) Close() error {
	l.closeOnce.Do(func() {
		l.Halt()
		ks := l.ownedSorted()
		l.mu.Lock()
		l.ownedList = nil
		l.mu.Unlock()
		if len(ks) > 0 {
			l.onChange(nil)
		}
		ctx, cancel := context.WithTimeout(context.WithoutCancel(l.ctx), apiTimeout)
		defer cancel()
		var errs []error
		for _, k := range ks {
			if err := l.release(ctx, k); err != nil {
				errs = append(errs, fmt.Errorf("let go of partition %d: %w", k, err))
			}
		}
		if err := l.kv.Delete(ctx, projectorKey(l.cfg.NodeID)); err != nil {
			errs = append(errs, fmt.Errorf("delete projector key: %w", err))
		}
		l.closeErr = errors.Join(errs...)
		l.log.Info("leases let go", "partitions", ks, "err", l.closeErr)
	})
	return l.closeErr
}

// release deletes partition k's lease if it is still this projector's. A
// renewal cut short by Halt may have been stored without its revision
// coming back: the key is read again then, and deleted if it still names
// this projector; one another projector took is left alone.
func (l *Leases) release(ctx context.Context, k int) error {
	key := partitionKey(k)
	err := l.kv.Delete(ctx, key, jetstream.LastRevision(l.owned[k]))
	if !eventstore.IsWrongLastSeq(err) && !errors.Is(err, jetstream.ErrKeyExists) {
		return err
	}
	e, err := l.kv.Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return nil // expired
	case err != nil:
		return err
	case string(e.Value()) != l.cfg.NodeID:
		return nil // taken over
	}
	return l.kv.Delete(ctx, key, jetstream.LastRevision(e.Revision()))
}

// stopWatcher unsubscribes and drains the updates channel.
func (l *Leases) stopWatcher() {
	if err := l.w.Stop(); err != nil {
		l.log.Debug("stop lease watcher", "err", err)
	}
	timeout := time.NewTimer(2 * time.Second)
	defer timeout.Stop()
	for {
		select {
		case _, ok := <-l.w.Updates():
			if !ok {
				return
			}
		case <-timeout.C:
			return
		}
	}
}

func partitionKey(k int) string     { return "partition." + strconv.Itoa(k) }
func projectorKey(id string) string { return "projector." + id }
