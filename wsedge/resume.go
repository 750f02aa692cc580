package wsedge

import (
	"cmp"
	"context"
	"errors"
	"maps"
	"slices"
	"time"

	"github.com/gobwas/ws"

	"inbox/chat"
	"inbox/eventstore"
)

// Catch-up. Positions are cursors: a stream sequence per partition. A
// resuming socket is switched to syncing at liveFrom, the last dispatched
// sequences, under the routing lock (at registration for ?since, in resume
// for a RESUME frame): every event after liveFrom reaches it live (held in
// syncBuf meanwhile), every event in (since, liveFrom] is read from the
// stream here, partition after partition. Then the held frames follow, then
// SYNCED, then live frames: no gap and no duplicate. Frames of one
// conversation keep their order (a conversation is in one partition);
// those of different partitions come partition by partition.
//
// One page at a time: a catch-up reads at most ResumePageEvents events per
// read and sends at most about ResumePageBytes. A longer one ends its page
// with SYNCED "more": true at the page's end (in the partition where it
// stopped, its last sequence; before it, liveFrom; after it, since) and the
// socket pauses: live event frames are dropped (the next page reads them
// from the stream), other frames flow. The client's next RESUME switches
// it to syncing again at the then-current liveFrom. So memory stays bounded
// by the page, and order holds.
//
// What a socket may replay is decided when each page starts, from membership
// then (docs/security.md): the messages and receipts of the conversations
// the user belongs to (a legacy chat socket: its conversation, if the user
// still belongs to it; a job socket: its job's statuses, if the user follows
// it), and the user's own joins and leaves of any conversation, each frame
// carrying the members as of its event. Typing events are skipped (stale by
// then). Reads are always filtered by subject; a user in many conversations
// is read in batches of MaxResumeFilters filters, merged by sequence.
//
// One catch-up at a time per socket; a RESUME meanwhile is refused with
// bad_request (admitResume). Each page draws what it cost from the socket's
// budget; a RESUME while the budget is spent is refused with rate_limited.

// admitResume decides, on the reading side, whether a RESUME frame may run.
func (c *conn) admitResume() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.catching {
		return chat.Errorf(chat.CodeBadRequest, "a catch-up is already under way on this socket: resume again after its SYNCED")
	}
	if wait := c.budgetWaitLocked(c.hub.cfg.now()); wait > 0 {
		e := chat.Errorf(chat.CodeRateLimited, "catch-up budget spent: resume again in %s", wait.Round(100*time.Millisecond))
		e.RetryAfter = wait
		return e
	}
	c.catching = true
	return nil
}

// budgetWaitLocked refills the socket's catch-up budget and reports how long
// until it is out of debt (0: a catch-up may start). c.mu must be held.
func (c *conn) budgetWaitLocked(now time.Time) time.Duration {
	cfg := &c.hub.cfg
	if c.budgetAt.IsZero() {
		c.budget = float64(cfg.ResumeBudgetBytes)
	} else {
		c.budget = min(float64(cfg.ResumeBudgetBytes), c.budget+cfg.ResumeBudgetRate*now.Sub(c.budgetAt).Seconds())
	}
	c.budgetAt = now
	if c.budget > 0 {
		return 0
	}
	return time.Duration((1 - c.budget) / cfg.ResumeBudgetRate * float64(time.Second))
}

// charge draws cost bytes from the socket's catch-up budget; it may go into debt.
func (c *conn) charge(cost int) {
	c.mu.Lock()
	c.budgetWaitLocked(c.hub.cfg.now())
	c.budget -= float64(cost)
	c.mu.Unlock()
}

// Costs a catch-up draws from the budget besides the bytes it sends.
const (
	costPerRead  = 1 << 10 // one filtered stream read
	costPerEvent = 64      // one event read, sent or not
)

// resume handles an admitted RESUME frame: it checks the request, switches
// the socket to syncing at the last dispatched sequence, takes the write
// side from the writer once the queue is written, then catches up from since
// like ?since. Frames the socket already got live after since may come again:
// the client asked for everything after since.
func (c *conn) resume(from string) {
	h := c.hub
	since, err := h.parseSince(from)
	if err == nil {
		err = c.mayResume(since)
	}
	if err != nil {
		c.mu.Lock()
		c.catching = false
		c.mu.Unlock()
		c.replyError(err, request{})
		return
	}
	h.mu.Lock()
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		h.mu.Unlock()
		return
	}
	prev := c.liveFrom // a registration's cut stays: events at or below it may never come live
	c.liveFrom = h.lastCursor()
	c.liveFrom.Max(prev)
	c.syncing, c.paused = true, false
	c.since = since
	handed := c.acquireLocked()
	c.mu.Unlock()
	h.mu.Unlock()
	if handed != nil {
		<-handed // the holder always hands over: its queue drains or a write fails
	}
	c.catchUp(since)
}

// mayResume refuses a RESUME from a socket whose user is no longer in its
// conversation or job, and a since beyond the stream.
func (c *conn) mayResume(since eventstore.Cursor) error {
	dir := c.hub.dir
	switch {
	case c.ep == epChat && !dir.IsMember(c.id, c.user):
		return chat.Errorf(chat.CodeForbidden, "not a member of conversation %d", c.id)
	case c.ep == epJob && !dir.IsJobMember(c.id, c.user):
		return chat.Errorf(chat.CodeForbidden, "not a member of job %d", c.id)
	}
	return c.hub.checkSince(c.hub.ctx, since)
}

var errClosing = errors.New("socket closing")

// catchUp writes one page of the events in (since, liveFrom] for this
// socket, then either the held live frames and SYNCED (the last page) or
// SYNCED with more (the socket pauses), and gives the write side back. The
// caller owns the write side and the socket is syncing.
func (c *conn) catchUp(since eventstore.Cursor) {
	h := c.hub
	upTo := c.liveFrom
	end, err := c.replay(since, upTo)
	if err != nil && !errors.Is(err, errClosing) {
		h.log.Warn("resume failed", "user_id", c.user, "since", since.String(), "seq", upTo.String(), "err", err)
		c.closeWith(ws.StatusInternalServerError, "resume failed; reconnect with since")
	}
	more := err == nil && !end.Reaches(upTo)
	// Switch to live under the routing lock: no Dispatch is half done, so
	// SYNCED's cursor covers every event routed so far.
	h.mu.Lock()
	synced := h.lastCursor()
	synced.Max(c.since)
	synced.Max(c.liveFrom) // caught up to it, whatever the feed dispatched so far
	c.mu.Lock()
	c.syncing, c.catching = false, false
	switch {
	case c.closing:
	case more:
		// Paused until the next RESUME: the held event frames are read
		// again then; the rest goes out.
		c.paused = true
		for _, f := range c.syncBuf {
			if f.seq == 0 {
				c.pushLocked(f)
			}
		}
		c.pushLocked(encodeSynced(end, true))
	default:
		for _, f := range c.syncBuf {
			c.pushLocked(f)
		}
		c.pushLocked(encodeSynced(synced, false))
	}
	c.syncBuf = nil
	c.releaseLocked() // the flusher writes what was queued
	c.mu.Unlock()
	h.mu.Unlock()
}

// replayBatch is how many frames one catch-up write carries.
const replayBatch = 64

// replayItem is one frame of a page: ready, or (a membership event naming
// the user, f.wire nil) decided once the conversation's membership at seq is
// known.
type replayItem struct {
	seq  uint64 // the event's id
	f    frame
	conv int64
}

// replayScope is what one page of a catch-up may read.
type replayScope struct {
	common []string // filters read in every partition (each reads only its own events)
	convs  []int64  // conversations whose messages and receipts are replayed, sorted
}

// replayScope reads membership now: see the comment at the top of this file.
func (c *conn) replayScope() replayScope {
	dir := c.hub.dir
	var s replayScope
	switch c.ep {
	case epInbox:
		// The user's own joins and leaves may be in any conversation,
		// including one it has left since.
		s.common = []string{eventstore.AllConvs(eventstore.KindCreated), eventstore.AllConvs(eventstore.KindMember)}
		s.convs = dir.Conversations(c.user)
	case epChat:
		s.common = []string{eventstore.ConvSubject(c.id, eventstore.KindCreated), eventstore.ConvSubject(c.id, eventstore.KindMember)}
		if dir.IsMember(c.id, c.user) {
			s.convs = []int64{c.id}
		}
	case epJob:
		if dir.IsJobMember(c.id, c.user) {
			s.common = []string{eventstore.JobSubject(c.id, eventstore.KindStatus)}
		}
	}
	return s
}

// filters are the subjects the scope reads in partition k of n: the common
// ones, and the messages, receipts and lifecycle events of its
// conversations there.
func (s replayScope) filters(n, k int) []string {
	fs := slices.Clone(s.common)
	for _, id := range s.convs {
		if eventstore.Partition(id, n) == k {
			fs = append(fs, eventstore.ConvSubject(id, eventstore.KindMessage), eventstore.ConvSubject(id, eventstore.KindRead),
				eventstore.LifecyclesFilter(id))
		}
	}
	return fs
}

// replay writes this socket's frames for one page of (since, upTo] directly
// and returns the page's end: upTo, or less if there is more.
func (c *conn) replay(since, upTo eventstore.Cursor) (eventstore.Cursor, error) {
	if since.Reaches(upTo) {
		return upTo, nil
	}
	h := c.hub
	ctx, cancel := context.WithTimeout(h.ctx, h.cfg.ResumeTimeout)
	defer cancel()
	var cost int
	items, end, err := c.readPage(ctx, since, upTo, c.replayScope(), &cost)
	if err == nil {
		items, err = c.resolveMembership(ctx, items, &cost)
	}
	if err != nil {
		c.charge(cost)
		return nil, err
	}
	batch := make([]frame, 0, replayBatch)
	for i, it := range items {
		batch = append(batch, it.f)
		cost += len(it.f.wire)
		if len(batch) < replayBatch && i < len(items)-1 {
			continue
		}
		if c.isClosing() {
			err = errClosing
			break
		}
		if err = c.write(batch); err != nil {
			break
		}
		batch = batch[:0]
	}
	c.charge(cost)
	h.log.Debug("caught up", "user_id", c.user, "since", since.String(), "seq", end.String(), "more", !end.Reaches(upTo), "frames", len(items), "cost", cost, "err", err)
	return end, err
}

// errPageFull stops a read at the page bound.
var errPageFull = errors.New("page full")

// readPage reads the items of one page of (since, upTo], partition after
// partition. In a partition, each batch of filters is read until the page
// bound (less what earlier partitions took), and the partition's part ends
// at the lowest sequence where a batch stopped, so every item up to it is
// in; a partition that stopped short ends the page, and later partitions
// stay at since.
func (c *conn) readPage(ctx context.Context, since, upTo eventstore.Cursor, s replayScope, cost *int) ([]replayItem, eventstore.Cursor, error) {
	cfg := &c.hub.cfg
	n := len(upTo)
	end := upTo.Clone()
	var items []replayItem
	pageEvents, pageBytes := 0, 0
	for k := range n {
		if since[k] >= upTo[k] {
			end[k] = max(since[k], upTo[k])
			continue
		}
		if pageEvents >= cfg.ResumePageEvents || pageBytes >= cfg.ResumePageBytes {
			end[k] = since[k] // for the next page
			continue
		}
		first := len(items)
		partEnd, short := upTo[k], false
		maxEvents, maxBytes := 0, 0
		for fs := range slices.Chunk(s.filters(n, k), cfg.MaxResumeFilters) {
			events, bytes := pageEvents, pageBytes
			var last uint64
			err := c.hub.reader.Read(ctx, k, since[k]+1, partEnd, fs, func(st eventstore.Stored) error {
				events++
				_, last = eventstore.Split(n, st.Seq)
				if it, ok := c.replayItem(st, s.convs); ok {
					items = append(items, it)
					bytes += max(len(it.f.wire), 256)
				}
				if events >= cfg.ResumePageEvents || bytes >= cfg.ResumePageBytes {
					return errPageFull
				}
				return nil
			}, eventstore.ReadBatch(cfg.ResumePageEvents-pageEvents))
			*cost += costPerRead + costPerEvent*(events-pageEvents)
			maxEvents, maxBytes = max(maxEvents, events), max(maxBytes, bytes)
			switch {
			case errors.Is(err, errPageFull):
				partEnd, short = last, true // every later batch reads only up to here
			case err != nil:
				return nil, nil, err
			}
		}
		items = append(items[:first], slices.DeleteFunc(items[first:], func(it replayItem) bool {
			_, seq := eventstore.Split(n, it.seq)
			return seq > partEnd
		})...)
		end[k] = partEnd
		pageEvents, pageBytes = maxEvents, maxBytes
		if short {
			pageEvents = cfg.ResumePageEvents // the page ends here
		}
	}
	slices.SortFunc(items, func(a, b replayItem) int {
		ka, sa := eventstore.Split(n, a.seq)
		kb, sb := eventstore.Split(n, b.seq)
		return cmp.Or(cmp.Compare(ka, kb), cmp.Compare(sa, sb))
	})
	return items, end, nil
}

// replayItem is this socket's item for a stored event, if any. convs is sorted.
func (c *conn) replayItem(st eventstore.Stored, convs []int64) (replayItem, bool) {
	in := func(conv int64) bool {
		_, ok := slices.BinarySearch(convs, conv)
		return ok
	}
	it := replayItem{seq: st.Seq}
	switch e := st.Event.(type) {
	case *eventstore.Message:
		if in(e.ConversationID) {
			it.f = encodeMessage(st.Seq, e)
			return it, true
		}
	case *eventstore.Read:
		if in(e.ConversationID) {
			it.f = encodeRead(st.Seq, e)
			return it, true
		}
	case *eventstore.Edit:
		if in(e.ConversationID) {
			it.f = encodeEdited(st.Seq, e)
			return it, true
		}
	case *eventstore.Delete:
		if in(e.ConversationID) {
			it.f = encodeDeleted(st.Seq, e.ConversationID, e.MessageID)
			return it, true
		}
	case *eventstore.Erased:
		if in(e.ConversationID) {
			it.f = encodeDeleted(st.Seq, e.ConversationID, e.MessageID)
			return it, true
		}
	case *eventstore.React:
		if in(e.ConversationID) {
			it.f = encodeReaction(st.Seq, e)
			return it, true
		}
	case *eventstore.Created:
		if c.carries(e.ConversationID, 0) && slices.ContainsFunc(e.Members, func(m eventstore.Member) bool { return m.UserID == c.user }) {
			it.conv = e.ConversationID
			return it, true
		}
	case *eventstore.MemberChanged:
		if e.UserID == c.user && c.carries(e.ConversationID, 0) {
			it.conv = e.ConversationID
			return it, true
		}
	case *eventstore.JobStatus:
		if c.carries(0, e.JobID) {
			it.f = encodeJobStatus(st.Seq, e)
			return it, true
		}
	}
	return it, false
}

// resolveMembership turns the membership items of a page into the frames a
// socket connected at the time got: CONVERSATION_JOINED with the members as
// of that event, or CONVERSATION_LEFT, or nothing (a role change). It reads
// the membership events of those conversations (few) from the start of
// their partition and applies them to a scratch Directory, as the live feed
// did.
func (c *conn) resolveMembership(ctx context.Context, items []replayItem, cost *int) ([]replayItem, error) {
	upTo := map[int64]uint64{} // conversation -> its last membership item's id
	want := map[uint64]int64{} // membership item -> its conversation
	for _, it := range items {
		if it.f.wire == nil {
			upTo[it.conv] = max(upTo[it.conv], it.seq)
			want[it.seq] = it.conv
		}
	}
	if len(upTo) == 0 {
		return items, nil
	}
	n := c.hub.reader.Partitions()
	byPart := map[int][]int64{}
	for id := range upTo {
		k := eventstore.Partition(id, n)
		byPart[k] = append(byPart[k], id)
	}
	frames := make(map[uint64]frame, len(want))
	scratch := chat.NewDirectory()
	for _, k := range slices.Sorted(maps.Keys(byPart)) {
		slices.Sort(byPart[k])
		for batch := range slices.Chunk(byPart[k], max(1, c.hub.cfg.MaxResumeFilters/2)) {
			var to uint64
			fs := make([]string, 0, 2*len(batch))
			for _, id := range batch {
				_, seq := eventstore.Split(n, upTo[id])
				to = max(to, seq)
				fs = append(fs, eventstore.ConvSubject(id, eventstore.KindCreated), eventstore.ConvSubject(id, eventstore.KindMember))
			}
			events := 0
			err := c.hub.reader.Read(ctx, k, 1, to, fs, func(st eventstore.Stored) error {
				events++
				ch := scratch.Apply(st)
				conv, ok := want[st.Seq]
				switch {
				case !ok:
				case slices.Contains(ch.Joined, c.user):
					frames[st.Seq] = encodeJoined(st.Seq, conv, ch.Members)
				case slices.Contains(ch.Left, c.user):
					frames[st.Seq] = encodeLeft(st.Seq, conv)
				}
				return nil
			})
			*cost += costPerRead + costPerEvent*events
			if err != nil {
				return nil, err
			}
		}
	}
	out := items[:0]
	for _, it := range items {
		if it.f.wire == nil {
			f, ok := frames[it.seq]
			if !ok {
				continue // a role change: no frame live either
			}
			it.f = f
		}
		out = append(out, it)
	}
	return out, nil
}
