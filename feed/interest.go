package feed

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"inbox/chat"
	"inbox/eventstore"
)

// Interest mode. The feed does not read the whole stream: it receives the
// streams' live copies (eventstore.Live) of the firehose every node needs
// (conversations' creations and membership changes, profiles, jobs,
// retention markers) and of the conversations it watches: those with a
// member holding an inbox socket here, or a legacy chat socket of their
// own. So its work follows its own sockets' traffic, not the cluster's.
//
// Order. One server publishes each partition's copies, in stream order, so
// they arrive in that order on the Live's one channel whichever
// subscription they match; the feed keeps pos, per partition, the last
// sequence it processed (applied and dispatched, or skipped as no concern
// of its), drops a copy at or below it (a member event comes once per
// subscription it matches) and so hands the sink each partition's events of
// interest in stream order, as the whole-stream tail did.
//
// Gaps. A copy names the previous event on its subject (LiveEvent.Last):
// if that is past pos, and past where the feed's interest in the
// conversation started, a copy was lost; the feed reads the partition from
// pos to the stream's end before going on (fill). A Live that breaks (its
// connection closed, or it dropped a copy) is replaced: the feed discards
// what it holds, subscribes again and fills every partition from pos. A new
// stream leader may not have published the copies of the last events the
// old one stored; its advisory comes in order with the copies, and the
// feed fills that partition. The fill reads what the feed has interest in
// (a filtered read; an unfiltered one, or sorted chunks, with many
// conversations), then moves pos to where the stream ended.
//
// Interest starts in two ways.
//   - A socket attaches (Attach): between two events, the feed subscribes
//     to the conversations it did not watch, syncs, and fills their
//     partitions (as for a gap) up to the last sequence their leader gives
//     after that, so the subscriptions were in place before it: every later
//     event of theirs comes live. It registers the socket with the cut pos,
//     the sequences it dispatched up to, as the whole-stream tail does: the
//     directory is current there, events after it reach the socket, events
//     at or before it are the catch-up's (a resuming socket reads them from
//     the stream) or history's business. A socket whose conversations are
//     all watched already costs no read.
//   - A member event adds a local user with an inbox socket (or a
//     conversation is created with one): it is dispatched
//     (CONVERSATION_JOINED), then the feed subscribes, syncs and fills the
//     partition from the event, so the conversation's next events follow in
//     order.
//
// Interest ends when a conversation's last reason goes: the last inbox
// socket of its last local member closes, a local member leaves, its last
// legacy chat socket closes. Copies still in flight are skipped.

// LiveSource is what interest mode reads: the streams' live copies and
// bounded reads of what they missed. *eventstore.Store is one.
type LiveSource interface {
	Partitions() int
	OpenLive(nc *nats.Conn, buffer int) (*eventstore.Live, error)
	PartitionLast(ctx context.Context, k int) (uint64, error)
	Read(ctx context.Context, k int, from, to uint64, filters []string, fn func(eventstore.Stored) error, opts ...eventstore.ReadOption) error
}

var _ LiveSource = (*eventstore.Store)(nil)

// Fills: a read filtered by subject takes at most fillConvs conversations;
// with more, an unfiltered read of at most fillScan events, else filtered
// reads of fillConvs at a time, merged in memory.
const (
	fillConvs = 64
	fillScan  = 100_000
	// fillTimeout bounds one fill, and syncTimeout one sync or leader
	// question: past them the Live is replaced.
	fillTimeout = time.Minute
	syncTimeout = 10 * time.Second
)

// Stats count what the live feed did, for tests, metrics and the operator.
type Stats struct {
	Copies     uint64 // live copies received (interest mode)
	Filled     uint64 // events read from the stream to fill gaps and starts (interest mode)
	Dispatched uint64 // events handed to the sink
	Gaps       uint64 // fills because a copy was lost or a stream elected a leader
	Reopens    uint64 // Lives replaced after breaking
	Watched    int    // conversations subscribed to now
}

type stats struct {
	copies, filled, dispatched, gaps, reopens atomic.Uint64
	watched                                   atomic.Int64
}

// Stats are the feed's counters so far.
func (f *Feed) Stats() Stats {
	return Stats{
		Copies: f.stats.copies.Load(), Filled: f.stats.filled.Load(), Dispatched: f.stats.dispatched.Load(),
		Gaps: f.stats.gaps.Load(), Reopens: f.stats.reopens.Load(), Watched: int(f.stats.watched.Load()),
	}
}

// Done is closed when Run returned; Err then says why.
func (f *Feed) Done() <-chan struct{} { return f.stopped }

// Err is what Run returned, once Done is closed.
func (f *Feed) Err() error {
	f.qmu.Lock()
	defer f.qmu.Unlock()
	return f.runErr
}

// Interest reports whether the feed runs in interest mode.
func (f *Feed) Interest() bool { return f.live != nil }

// Ready is closed once the sink was told where the feed starts and, in
// interest mode, the feed has caught up with the stream (the whole-stream
// tail says how far it got through the directory).
func (f *Feed) Ready() <-chan struct{} { return f.ready }

// watch is the feed's interest in one conversation.
type watch struct {
	refs  int    // inbox sockets' users who are members, and legacy chat sockets
	start uint64 // the sequence in its partition from which its events are owed
}

// request is a socket attaching or detaching.
type request struct {
	user     string
	conv     int64 // a legacy chat socket's conversation; 0: the user's inbox
	detach   bool
	register func(eventstore.Cursor)
	done     chan struct{}
	state    atomic.Int32
}

const (
	reqPending int32 = iota
	reqTaken
	reqDropped
)

// ErrStopped: the feed is not running any more.
var ErrStopped = errors.New("live feed stopped")

// Attach says that a socket of user opened: for a legacy chat socket, conv
// is its conversation; for an inbox socket 0, all of user's conversations.
// In interest mode it returns once the feed has called register, on its own
// goroutine between two events, with the cut: per partition, the sequence
// after which every event of the socket's conversations is dispatched (the
// socket's live frames at or below it must be dropped; nil: none). The
// socket must be registered inside register. Without interest mode
// register is called at once, with nil. An error means register was not
// called.
func (f *Feed) Attach(ctx context.Context, user string, conv int64, register func(eventstore.Cursor)) error {
	if f.live == nil {
		register(nil)
		return nil
	}
	r := &request{user: user, conv: conv, register: register, done: make(chan struct{})}
	if !f.enqueue(r) {
		return ErrStopped
	}
	select {
	case <-r.done:
		return nil
	case <-ctx.Done():
		if r.state.CompareAndSwap(reqPending, reqDropped) {
			return fmt.Errorf("attach socket of %s: %w", user, ctx.Err())
		}
	case <-f.stopped:
		if r.state.CompareAndSwap(reqPending, reqDropped) {
			return ErrStopped
		}
	}
	<-r.done // taken: the feed registers it without waiting on anything unbounded
	return nil
}

// Detach says that a socket Attach registered closed.
func (f *Feed) Detach(user string, conv int64) {
	if f.live != nil {
		f.enqueue(&request{user: user, conv: conv, detach: true})
	}
}

func (f *Feed) enqueue(r *request) bool {
	f.qmu.Lock()
	defer f.qmu.Unlock()
	select {
	case <-f.stopped:
		return false
	default:
	}
	f.queue = append(f.queue, r)
	select {
	case f.wake <- struct{}{}:
	default:
	}
	return true
}

// runLive is Run in interest mode: it follows a Live until it breaks, then
// another, until ctx ends.
func (f *Feed) runLive(ctx context.Context) error {
	f.convs = make(map[int64]*watch)
	f.users = make(map[string]int)
	f.chats = make(map[int64]int)
	var wait time.Duration
	for {
		began := time.Now()
		err := f.follow(ctx)
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, nats.ErrPermissionViolation):
			return err // a misconfigured account: trying again will not help
		}
		f.stats.reopens.Add(1)
		if time.Since(began) > 10*time.Second {
			wait = 0
		}
		wait = min(max(2*wait, 100*time.Millisecond), 5*time.Second)
		f.log.Warn("live feed interrupted: reading the stream from where it was", "err", err, "at", f.pos().String(), "retry_in", wait)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

// follow opens a Live, subscribes to everything of interest, fills every
// partition from pos and then follows the copies, serving sockets between
// two events, until the Live breaks or ctx ends.
func (f *Feed) follow(ctx context.Context) error {
	nc, err := f.dial()
	if err != nil {
		return fmt.Errorf("connect the live feed: %w", err)
	}
	l, err := f.live.OpenLive(nc, f.cfg.LiveBuffer)
	if err != nil {
		nc.Close()
		return err
	}
	f.l = l
	defer func() {
		l.Close()
		f.l = nil
		f.stats.watched.Store(0)
	}()
	for c := range f.convs {
		if err := l.Watch(c); err != nil {
			return err
		}
	}
	f.added = f.added[:0]
	f.stats.watched.Store(int64(len(f.convs)))
	if err := f.sync(ctx); err != nil {
		return err
	}
	for k := range f.live.Partitions() {
		f.stale[k] = true
	}
	if err := f.settle(ctx); err != nil {
		return err
	}
	f.readyOnce.Do(func() { close(f.ready) })
	for {
		if err := f.serve(ctx); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-f.wake:
		case m := <-l.Events():
			if err := f.onCopy(ctx, l.Decode(m)); err != nil {
				return err
			}
		case <-l.Broken():
			// A copy may be lost: those held are read again from the stream.
			return l.Err()
		}
	}
}

func (f *Feed) sync(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, syncTimeout)
	defer cancel()
	return f.l.Sync(ctx)
}

// pos is where the feed is in each partition (the sink was handed every
// event of interest up to it).
func (f *Feed) pos() eventstore.Cursor {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.dispatched.Clone()
}

// onCopy handles one received copy.
func (f *Feed) onCopy(ctx context.Context, ev eventstore.LiveEvent) error {
	f.stats.copies.Add(1)
	if ev.Elected {
		f.stats.gaps.Add(1)
		f.stale[ev.Partition] = true
		return f.settle(ctx)
	}
	if ev.Seq == 0 {
		f.log.Warn("skip live copy without stream metadata", "subject", ev.Subject, "err", ev.Err)
		return nil
	}
	n := len(f.dispatched)
	k, seq := eventstore.Split(n, ev.Seq)
	if seq <= f.dispatched[k] {
		return nil // seen: a copy matching two subscriptions, or filled
	}
	w, ok := f.wants(ev.Subject)
	if !ok {
		return nil // a conversation no longer watched; in flight
	}
	if ev.Last != 0 {
		if _, last := eventstore.Split(n, ev.Last); last > f.dispatched[k] && (w == nil || last > w.start) {
			f.stats.gaps.Add(1)
			f.log.Info("live copy lost: reading the stream", "partition", k, "at", f.dispatched[k], "copy", seq, "previous_on_subject", last, "subject", ev.Subject)
			f.stale[k] = true
			return f.settle(ctx) // up to the stream's end: this copy among them
		}
	}
	f.process(ev.Stored)
	return f.settle(ctx)
}

// wants reports whether the feed processes events on subject (without its
// partition token): the firehose's, and those of watched conversations
// (w, for gap checks).
func (f *Feed) wants(subject string) (w *watch, ok bool) {
	if eventstore.Firehose(subject) {
		return nil, true
	}
	conv, ok := convOf(subject)
	if !ok {
		return nil, false
	}
	w = f.convs[conv]
	return w, w != nil
}

// convOf is the conversation of an inbox.conv.<id>. subject.
func convOf(subject string) (int64, bool) {
	rest, ok := strings.CutPrefix(subject, "inbox.conv.")
	if !ok {
		return 0, false
	}
	tok, _, _ := strings.Cut(rest, ".")
	id, err := strconv.ParseInt(tok, 10, 64)
	return id, err == nil
}

// process applies and dispatches one event of interest, and follows the
// membership changes it made.
func (f *Feed) process(st eventstore.Stored) {
	ch := f.handle(st)
	if len(ch.Joined) == 0 && len(ch.Left) == 0 {
		return
	}
	var conv int64
	switch e := st.Event.(type) {
	case *eventstore.Created:
		conv = e.ConversationID
	case *eventstore.MemberChanged:
		conv = e.ConversationID
	default:
		return
	}
	_, seq := eventstore.Split(len(f.dispatched), st.Seq)
	for _, u := range ch.Joined {
		if f.users[u] > 0 {
			f.ref(conv, 1, seq)
		}
	}
	for _, u := range ch.Left {
		if f.users[u] > 0 {
			f.ref(conv, -1, 0)
		}
	}
}

// handle applies st to the directory, hands it to the sink and moves the
// feed past it, releasing the unread counts it was holding for it.
func (f *Feed) handle(st eventstore.Stored) chat.Change {
	ch := f.dir.Apply(st)
	if f.guess != nil {
		// Under f.mu: a projector's count that builds on this event's
		// guesses must not reach a socket before the event does.
		f.mu.Lock()
		ch.Unread = f.guess.dispatch(st, ch)
		f.sink.Dispatch(st, ch)
		f.dispatched.Advance(st.Seq)
		f.sendDueLocked()
		f.mu.Unlock()
	} else {
		f.sink.Dispatch(st, ch)
		f.advance(st.Seq)
	}
	f.stats.dispatched.Add(1)
	if f.obs != nil {
		f.obs.Dispatched(st.Seq, st.Time)
	}
	return ch
}

// advance moves the feed to the event with id and sends the unread counts
// that were waiting for it.
func (f *Feed) advance(id uint64) {
	f.mu.Lock()
	f.dispatched.Advance(id)
	f.sendDueLocked()
	f.mu.Unlock()
}

// ref adds d reasons to watch conv; a first one (start: where its events
// become owed) puts it in added, the last one gone unsubscribes.
func (f *Feed) ref(conv int64, d int, start uint64) {
	w := f.convs[conv]
	if d > 0 {
		if w == nil {
			w = &watch{start: start}
			f.convs[conv] = w
			f.added = append(f.added, conv)
		}
		w.refs += d
		return
	}
	if w == nil {
		return
	}
	if w.refs += d; w.refs <= 0 {
		delete(f.convs, conv)
		if f.l != nil {
			f.l.Unwatch(conv)
		}
		f.stats.watched.Store(int64(len(f.convs)))
	}
}

// watchAdded subscribes to the conversations added since and syncs; it
// returns their partitions.
func (f *Feed) watchAdded(ctx context.Context) (map[int]bool, error) {
	if len(f.added) == 0 {
		return nil, nil
	}
	n := len(f.dispatched)
	parts := make(map[int]bool)
	for _, c := range f.added {
		if f.convs[c] == nil {
			continue // gone again before it was watched
		}
		if err := f.l.Watch(c); err != nil {
			return nil, err
		}
		parts[eventstore.Partition(c, n)] = true
	}
	f.added = f.added[:0]
	f.stats.watched.Store(int64(len(f.convs)))
	if len(parts) == 0 {
		return nil, nil
	}
	return parts, f.sync(ctx)
}

// serve takes the sockets' requests: detaches, then attaches, registered
// at their cut (see the top of this file).
func (f *Feed) serve(ctx context.Context) error {
	f.qmu.Lock()
	reqs := f.queue
	f.queue = nil
	f.qmu.Unlock()
	if len(reqs) == 0 {
		return nil
	}
	var regs []*request
	for _, r := range reqs {
		switch {
		case r.detach:
			f.detachSocket(r.user, r.conv)
		case r.state.CompareAndSwap(reqPending, reqTaken):
			f.attachSocket(r.user, r.conv)
			regs = append(regs, r)
		}
	}
	// The conversations added are subscribed to and their partitions filled
	// up to their last sequence asked after that: pos is then the cut.
	err := f.settle(ctx)
	cut := f.pos()
	// On an error the Live is replaced and every partition filled from pos:
	// the cut is still right (what comes after it is dispatched then).
	for _, r := range regs {
		r.register(cut)
		close(r.done)
	}
	return err
}

func (f *Feed) attachSocket(user string, conv int64) {
	if conv != 0 {
		f.chats[conv]++
		f.ref(conv, 1, 0)
		return
	}
	if f.users[user]++; f.users[user] == 1 {
		for _, c := range f.dir.Conversations(user) {
			f.ref(c, 1, 0)
		}
	}
}

func (f *Feed) detachSocket(user string, conv int64) {
	if conv != 0 {
		if f.chats[conv]--; f.chats[conv] <= 0 {
			delete(f.chats, conv)
		}
		f.ref(conv, -1, 0)
		return
	}
	if f.users[user] == 0 {
		return
	}
	if f.users[user]--; f.users[user] > 0 {
		return
	}
	delete(f.users, user)
	for _, c := range f.dir.Conversations(user) {
		f.ref(c, -1, 0)
	}
}

// errRestart stops a fill whose filters no longer say all the feed wants.
var errRestart = errors.New("interest grew")

// settle subscribes to what was added and fills the stale partitions, until
// nothing is left of either.
func (f *Feed) settle(ctx context.Context) error {
	for {
		parts, err := f.watchAdded(ctx)
		if err != nil {
			return err
		}
		for k := range parts {
			f.stale[k] = true
		}
		k := -1
		for p, stale := range f.stale {
			if stale {
				k = p
				break
			}
		}
		if k < 0 {
			return nil
		}
		switch err := f.fill(ctx, k); {
		case errors.Is(err, errRestart): // k stays stale: read on with the new filters
		case err != nil:
			return err
		default:
			f.stale[k] = false
		}
	}
}

// fill processes the events of interest in partition k after pos, up to
// the stream's last sequence now, and moves pos there. It stops with
// errRestart after an event that added interest.
func (f *Feed) fill(ctx context.Context, k int) error {
	ctx, cancel := context.WithTimeout(ctx, fillTimeout)
	defer cancel()
	last, err := f.live.PartitionLast(ctx, k)
	if err != nil {
		return err
	}
	n := len(f.dispatched)
	from := f.dispatched[k] + 1
	if last < from {
		return nil
	}
	var convs []int64
	for c := range f.convs {
		if eventstore.Partition(c, n) == k {
			convs = append(convs, c)
		}
	}
	slices.Sort(convs)
	each := func(st eventstore.Stored) error {
		f.stats.filled.Add(1)
		if _, seq := eventstore.Split(n, st.Seq); seq <= f.dispatched[k] {
			return nil
		}
		if _, ok := f.wants(st.Subject); !ok {
			return nil
		}
		f.process(st)
		if len(f.added) > 0 {
			return errRestart
		}
		return nil
	}
	switch {
	case len(convs) <= fillConvs:
		err = f.live.Read(ctx, k, from, last, filtersOf(convs, true), each)
	case last-from < fillScan:
		err = f.live.Read(ctx, k, from, last, nil, each)
	default:
		err = f.fillMerged(ctx, k, from, last, convs, each)
	}
	switch {
	case errors.Is(err, errRestart):
		return err
	case err != nil:
		return fmt.Errorf("fill partition %d from %d to %d: %w", k, from, last, err)
	}
	f.advance(eventstore.ID(n, k, last))
	f.sink.Passed(f.pos())
	return nil
}

// fillMerged reads many conversations' events in chunks of filters and
// processes them merged, in stream order.
func (f *Feed) fillMerged(ctx context.Context, k int, from, last uint64, convs []int64, each func(eventstore.Stored) error) error {
	var got []eventstore.Stored
	first := true
	for chunk := range slices.Chunk(convs, fillConvs) {
		err := f.live.Read(ctx, k, from, last, filtersOf(chunk, first), func(st eventstore.Stored) error {
			got = append(got, st)
			return nil
		})
		if err != nil {
			return err
		}
		first = false
	}
	slices.SortFunc(got, func(a, b eventstore.Stored) int { return cmp.Compare(a.Seq, b.Seq) })
	got = slices.CompactFunc(got, func(a, b eventstore.Stored) bool { return a.Seq == b.Seq })
	for _, st := range got {
		if err := each(st); err != nil {
			return err
		}
	}
	return nil
}

// filtersOf are the subjects of convs' events, and the firehose's if asked.
func filtersOf(convs []int64, firehose bool) []string {
	var fs []string
	if firehose {
		fs = eventstore.FirehoseFilters()
	}
	for _, c := range convs {
		fs = append(fs, eventstore.ConvFilters(c)...)
	}
	return fs
}

// liveState is the interest mode's part of a Feed, owned by Run's goroutine
// but for the request queue.
type liveState struct {
	live  LiveSource
	dial  func() (*nats.Conn, error)
	l     *eventstore.Live // the current one, or nil
	users map[string]int   // inbox sockets per local user
	chats map[int64]int    // legacy chat sockets per conversation
	convs map[int64]*watch // watched conversations
	added []int64          // conversations to subscribe to
	stale []bool           // partitions to fill

	ready     chan struct{}
	readyOnce sync.Once
	stopped   chan struct{} // closed when Run returns
	runErr    error         // what Run returned; under qmu

	qmu   sync.Mutex
	queue []*request
	wake  chan struct{}

	stats stats
}
