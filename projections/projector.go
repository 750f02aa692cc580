package projections

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"inbox/eventstore"
)

// MaxBatch is the most events the projector applies in one transaction.
const MaxBatch = 1000

// Batches are sized by load. A batch waits for more events before it is
// applied, for a time that grows with the rate events arrive at: 1 ms per
// lingerRate events a second, from Linger (idle: an event waits at most
// that) up to MaxLinger (under load: hundreds of events per commit; 2,000
// events/s make batches of about 200). Most of a commit's cost is per page
// written, and pages are shared by the events of a batch: in
// BenchmarkApplyBatch an event cost 2-3x more CPU in a batch of 5 than in
// one of 500. The read model, and UNREAD counts, trail the stream by up to
// MaxLinger more under load; an event someone waits for (WaitFor: a
// conversation created through the HTTP API, a read after a write) ends its
// batch's linger, so read-your-writes never waits for it.
const (
	Linger     = 2 * time.Millisecond
	MaxLinger  = 100 * time.Millisecond
	lingerRate = 20
)

// batchSizer tracks the rate events arrive at and says how long the next
// batch lingers.
type batchSizer struct {
	rate float64   // events per second, a moving average over batches
	n    int       // events in the last batch
	at   time.Time // when the last batch began
}

// linger is how long a batch whose first event came at now waits for more.
func (b *batchSizer) linger(now time.Time) time.Duration {
	if !b.at.IsZero() {
		if dt := now.Sub(b.at).Seconds(); dt > 0 {
			b.rate = 0.7*b.rate + 0.3*float64(b.n)/dt
		}
	}
	b.at = now
	return min(MaxLinger, max(Linger, time.Duration(b.rate/lingerRate*float64(time.Millisecond))))
}

// applied records how many events the batch held.
func (b *batchSizer) applied(n int) { b.n = n }

// ProjectorConfig configures a Projector.
type ProjectorConfig struct {
	// Name names the durable consumers, inbox-proj-<Name> on each
	// partition's stream: unique per projection database (e.g. the node
	// id) and a valid consumer name token. Required.
	Name string
	// KeyWindow is how long idempotency records are kept: older ones are
	// pruned now and then (every KeyWindow/8, at most hourly). Zero keeps
	// them.
	KeyWindow time.Duration
	// Partitions, if set, are the only partitions this projector applies
	// (a projector of the projector role keeps one database per partition);
	// nil: every partition of the store.
	Partitions []int
}

// ProjectorDeps are the parts a Projector is built on. DB and Store are
// required.
type ProjectorDeps struct {
	DB    *DB
	Store *eventstore.Store
	// OnApplied, if set, is called after each committed batch with the id
	// of its last event and the members whose unread count changed. It
	// runs on the goroutine of the batch's partition (several at once with
	// more than one partition): it must not block for long.
	OnApplied func(id uint64, changes []UnreadChange)
	Logger    *slog.Logger // nil: discard
}

// Projector keeps a DB up to date with the stream through durable
// JetStream pull consumers named inbox-proj-<name>, one on each partition's
// stream per projection database. Each partition is consumed and applied
// on its own goroutine, each batch in its own transaction.
type Projector struct {
	onApplied func(id uint64, changes []UnreadChange) // nil: nobody is told
	keyWindow time.Duration

	db      *DB
	store   *eventstore.Store
	durable string
	log     *slog.Logger
	apl     []*applier // per partition; nil for one this projector does not apply
	parts   []int      // the partitions it applies
	bindErr error      // the database holds another partition count
	running atomic.Bool

	mu       sync.Mutex
	advanced chan struct{} // closed and replaced whenever applied moves

	// A batch stops lingering once it holds an event someone waits for
	// (WaitFor: read-your-writes), so a waiter never pays for the linger.
	wanted []atomic.Uint64 // per partition: the highest sequence a WaitFor waited for
	hurry  []chan struct{} // per partition: a WaitFor began to wait (buffered 1)
	linger time.Duration   // tests: every batch lingers this long (0: sized by load)

	appliedAt  []atomic.Int64 // per partition, unix nanos: stream time of the last applied event
	caughtUpAt atomic.Int64   // unix nanos: when the database last held everything the stream had
	checkMu    sync.Mutex     // one caught-up check at a time (Covers)
	checkedAt  time.Time      // when the last check began; checkMu held
	pruneMu    sync.Mutex     // one prune at a time
	prunedAt   time.Time      // last prune; pruneMu held
}

// NewProjector returns a projector that applies the stream to d.DB under
// the durable consumers inbox-proj-<cfg.Name>. It panics if a required part
// is missing: that is a wiring mistake, not a runtime condition. A new
// database is bound to the store's partitions here (DB.Bind); one bound to
// another count makes Run fail.
func NewProjector(cfg ProjectorConfig, d ProjectorDeps) *Projector {
	switch {
	case cfg.Name == "":
		panic("projections: projector without a name")
	case d.DB == nil:
		panic("projections: projector without a database")
	case d.Store == nil:
		panic("projections: projector without a store")
	}
	logger := d.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	durable := "inbox-proj-" + cfg.Name
	logger = logger.With("component", "projector", "consumer", durable)
	n := d.Store.Partitions()
	parts := cfg.Partitions
	if parts == nil {
		parts = make([]int, n)
		for k := range n {
			parts[k] = k
		}
	}
	if len(parts) == 0 {
		panic("projections: projector of no partition")
	}
	for _, k := range parts {
		if k < 0 || k >= n {
			panic(fmt.Sprintf("projections: projector of partition %d of a stream of %d", k, n))
		}
	}
	p := &Projector{
		onApplied: d.OnApplied,
		keyWindow: cfg.KeyWindow,
		db:        d.DB,
		store:     d.Store,
		durable:   durable,
		log:       logger,
		apl:       make([]*applier, n),
		parts:     slices.Clone(parts),
		appliedAt: make([]atomic.Int64, n),
		advanced:  make(chan struct{}),
		wanted:    make([]atomic.Uint64, n),
		hurry:     make([]chan struct{}, n),
	}
	for k := range p.hurry {
		p.hurry[k] = make(chan struct{}, 1)
	}
	if p.bindErr = d.DB.Bind(n); p.bindErr == nil {
		for _, k := range parts {
			p.apl[k] = newApplier(d.DB, k, logger)
		}
	}
	return p
}

// Applied is the last stream sequence applied to the database from each
// partition (0 in those this projector does not apply).
func (p *Projector) Applied() eventstore.Cursor { return p.db.Applied() }

// Partitions are the partitions this projector applies, in order.
func (p *Projector) Partitions() []int { return slices.Clone(p.parts) }

// Skipped is how many undecodable events the database has skipped.
func (p *Projector) Skipped() uint64 { return p.db.skipped.Load() }

// WaitFor blocks until the projection has applied the event with id
// (read-your-writes: only its partition is waited for) or ctx ends.
func (p *Projector) WaitFor(ctx context.Context, id uint64) error {
	k, seq := eventstore.Split(p.db.n, id)
	if k >= p.db.n {
		return fmt.Errorf("wait for event %d: no partition %d", id, k)
	}
	for waiting := false; ; waiting = true {
		p.mu.Lock()
		ch := p.advanced
		p.mu.Unlock()
		if p.db.applied[k].Load() >= seq {
			return nil
		}
		if !waiting {
			p.want(k, seq)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("wait for event %d (partition %d applied to %d, wanted %d): %w", id, k, p.db.applied[k].Load(), seq, ctx.Err())
		}
	}
}

// want tells partition k's batch that seq is waited for.
func (p *Projector) want(k int, seq uint64) {
	for {
		old := p.wanted[k].Load()
		if seq <= old || p.wanted[k].CompareAndSwap(old, seq) {
			break
		}
	}
	select {
	case p.hurry[k] <- struct{}{}:
	default:
	}
}

// waitedFor reports whether partition k's batch, up to last, holds an event
// a WaitFor waits for.
func (p *Projector) waitedFor(k int, last uint64) bool {
	w := p.wanted[k].Load()
	_, seq := eventstore.Split(p.db.n, last)
	return w > p.db.applied[k].Load() && seq >= w
}

// WaitForAll is WaitFor of the position in c of every partition this
// projector applies.
func (p *Projector) WaitForAll(ctx context.Context, c eventstore.Cursor) error {
	for _, k := range p.parts {
		if k >= len(c) || c[k] == 0 {
			continue
		}
		if err := p.WaitFor(ctx, c.ID(k)); err != nil {
			return err
		}
	}
	return nil
}

// broadcast wakes every WaitFor.
func (p *Projector) broadcast() {
	p.mu.Lock()
	close(p.advanced)
	p.advanced = make(chan struct{})
	p.mu.Unlock()
}

// Run applies every partition until ctx ends, then finishes the batches in
// hand and returns nil. When a partition's consumer fails (deleted by an
// operator, lost with a NATS server, unreachable) Run creates it again from
// the partition's applied sequence, backing off up to 5 s, for as long as
// ctx lasts; only a database that keeps failing ends it with an error (and
// stops every partition). One Run at a time.
func (p *Projector) Run(ctx context.Context) error {
	if !p.running.CompareAndSwap(false, true) {
		return errors.New("projector is already running")
	}
	defer p.running.Store(false)
	if p.bindErr != nil {
		return p.bindErr
	}
	if len(p.parts) == 1 {
		return p.run(ctx, p.parts[0])
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	for _, k := range p.parts {
		wg.Go(func() {
			if err := p.run(ctx, k); err != nil {
				cancel(err)
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// run is Run of partition k.
func (p *Projector) run(ctx context.Context, k int) error {
	log := p.apl[k].log
	wait := minRetryWait
	for {
		started := time.Now()
		err := p.consume(ctx, k)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errApply) {
			return err
		}
		if time.Since(started) > time.Minute {
			wait = minRetryWait // it ran well for a while: a new failure
		}
		log.Warn("projection consumer failed; recreating it", "applied", p.db.applied[k].Load(), "retry_in", wait, "err", err)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return nil
		}
		wait = min(2*wait, maxRetryWait)
	}
}

// Backoff between attempts to recreate a failed consumer.
const (
	minRetryWait = 100 * time.Millisecond
	maxRetryWait = 5 * time.Second
)

// errDeliveryGap: the consumer skipped or repeated a delivery.
var errDeliveryGap = errors.New("delivery out of order")

// errApply marks a batch the database would not take: Run gives up on it.
var errApply = errors.New("apply to the read model")

// consume runs partition k's consumer until ctx ends (nil) or it fails.
func (p *Projector) consume(ctx context.Context, k int) error {
	cons, err := p.consumer(ctx, k)
	if err != nil {
		return err
	}
	// Missing heartbeats are reported (the consumer is gone) and end this
	// consumer; Run creates it again.
	it, err := cons.Messages(jetstream.PullMaxMessages(2*MaxBatch), jetstream.WithMessagesErrOnMissingHeartbeat(true))
	if err != nil {
		return fmt.Errorf("consume %s: %w", p.durable, err)
	}
	msgs := make(chan jetstream.Msg, MaxBatch)
	done := make(chan struct{})
	var wg sync.WaitGroup
	var readErr error
	// A durable pull consumer does not promise order across a leader change:
	// deliveries in flight can be lost and come back later as redeliveries,
	// after newer events were applied (and acknowledged with AckAll). So every
	// delivery must be the consumer's next one; on a gap the events before it
	// are applied and the consumer is created again from the applied sequence.
	nextDelivery := cons.CachedInfo().Delivered.Consumer + 1
	wg.Go(func() {
		defer close(msgs)
		for {
			msg, err := it.Next()
			if err != nil {
				readErr = fmt.Errorf("consume %s: %w", p.durable, err)
				return
			}
			if meta, err := msg.Metadata(); err == nil {
				if meta.Sequence.Consumer != nextDelivery {
					readErr = fmt.Errorf("consume %s: delivery %d (stream seq %d, delivered %d times) where %d was next: %w",
						p.durable, meta.Sequence.Consumer, meta.Sequence.Stream, meta.NumDelivered, nextDelivery, errDeliveryGap)
					return
				}
				nextDelivery++
			}
			select {
			case msgs <- msg:
			case <-done:
				return
			}
		}
	})
	defer func() {
		close(done)
		it.Stop()
		wg.Wait()
	}()

	batch := make([]eventstore.Stored, 0, MaxBatch)
	linger := time.NewTimer(Linger)
	linger.Stop()
	var sizer batchSizer
	for {
		var msg jetstream.Msg
		var ok bool
		select {
		case msg, ok = <-msgs:
		case <-ctx.Done():
			return nil
		}
		if !ok {
			return readErr
		}
		batch = batch[:0]
		last := msg
		batch = append(batch, p.store.DecodeMsg(k, msg))
		d := sizer.linger(time.Now())
		if p.linger > 0 {
			d = p.linger
		}
		linger.Reset(d)
	drain:
		for len(batch) < MaxBatch && !p.waitedFor(k, batch[len(batch)-1].Seq) {
			select {
			case m, ok := <-msgs:
				if !ok {
					break drain
				}
				last = m
				batch = append(batch, p.store.DecodeMsg(k, m))
			case <-p.hurry[k]: // check the batch again
			case <-linger.C:
				break drain
			case <-ctx.Done():
				break drain
			}
		}
		linger.Stop()
		sizer.applied(len(batch))
		if err := p.applyBatch(ctx, k, batch); err != nil {
			return fmt.Errorf("%w: %w", errApply, err)
		}
		if err := last.Ack(); err != nil {
			p.apl[k].log.Warn("acknowledge batch", "seq", batch[len(batch)-1].Seq, "err", err)
		}
	}
}

// applyBatch applies one batch of partition k, retrying a failing database
// a few times before giving up, and notifies waiters and OnApplied.
func (p *Projector) applyBatch(ctx context.Context, k int, batch []eventstore.Stored) error {
	var changes []UnreadChange
	var err error
	apl := p.apl[k]
	for attempt := range 5 {
		if changes, err = apl.apply(ctx, batch); err == nil {
			break
		}
		apl.log.Error("apply batch", "first_seq", batch[0].Seq, "events", len(batch), "attempt", attempt+1, "err", err)
		select {
		case <-time.After(time.Duration(attempt+1) * 200 * time.Millisecond):
		case <-ctx.Done():
			return nil
		}
	}
	if err != nil {
		return err
	}
	if t := batch[len(batch)-1].Time.UnixNano(); t > p.appliedAt[k].Load() {
		p.appliedAt[k].Store(t)
	}
	p.broadcast()
	p.prune(ctx)
	if p.onApplied != nil {
		p.onApplied(batch[len(batch)-1].Seq, changes)
	}
	return nil
}

// consumer returns partition k's durable consumer positioned right after
// the partition's applied sequence, recreating it when its acknowledged
// position differs (the database was rebuilt, restored or deleted).
func (p *Projector) consumer(ctx context.Context, k int) (jetstream.Consumer, error) {
	js := p.store.JetStream()
	log, stream := p.apl[k].log, p.store.StreamName(k)
	applied := p.db.applied[k].Load()
	cons, err := js.Consumer(ctx, stream, p.durable)
	switch {
	case err == nil:
		info := cons.CachedInfo()
		if info.AckFloor.Stream == applied && info.Delivered.Stream == applied {
			log.Info("resume projection", "applied", applied)
			return cons, nil
		}
		log.Info("reposition projection consumer", "applied", applied,
			"ack_floor", info.AckFloor.Stream, "delivered", info.Delivered.Stream)
		if err := js.DeleteConsumer(ctx, stream, p.durable); err != nil {
			return nil, fmt.Errorf("delete consumer %s on %s: %w", p.durable, stream, err)
		}
	case !errors.Is(err, jetstream.ErrConsumerNotFound):
		return nil, fmt.Errorf("look up consumer %s on %s: %w", p.durable, stream, err)
	}
	cfg := jetstream.ConsumerConfig{
		Durable:       p.durable,
		Description:   "inbox SQLite projection",
		AckPolicy:     jetstream.AckAllPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		MaxAckPending: 4 * MaxBatch,
		AckWait:       time.Minute,
	}
	if applied > 0 {
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = applied + 1
	}
	cons, err = js.CreateOrUpdateConsumer(ctx, stream, cfg)
	if err != nil {
		return nil, fmt.Errorf("create consumer %s on %s from %d: %w", p.durable, stream, applied+1, err)
	}
	return cons, nil
}
