package wsedge

import (
	"context"
	"errors"
	"slices"
	"strconv"

	"github.com/gobwas/ws"

	"inbox/eventstore"
)

// Catch-up. A resuming socket was registered in the syncing state at liveFrom,
// the last dispatched sequence, atomically with its registration: every event
// after liveFrom reaches it live (held in syncBuf meanwhile), every event up to
// liveFrom is read from the stream here. Then the held frames follow, then
// SYNCED, then live frames: no gap and no duplicate.
//
// Catch-up covers the conversations the user belongs to when it starts (a
// conversation left in the meantime is announced by CONVERSATION_LEFT but its
// earlier messages are not replayed), skips typing events (stale by then), and
// uses subject filters unless there would be more than MaxResumeFilters.

// resume handles a RESUME frame on a live socket: it takes the write side
// from the writer once the queue is written, then catches up like ?since.
// Events after liveFrom were already routed live, so only (since, liveFrom]
// is read.
func (c *conn) resume(since uint64) {
	if err := c.hub.checkSince(c.hub.ctx, since); err != nil {
		c.replyError(err, request{})
		return
	}
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return
	}
	c.syncing = true
	c.minSeq = max(c.minSeq, since)
	var wait chan struct{}
	if c.writing {
		wait = make(chan struct{})
		c.handoff = wait
	} else {
		c.writing = true
	}
	c.mu.Unlock()
	if wait != nil {
		<-wait // the writer always ends: the queue drains or a write fails
	}
	c.catchUp(since)
}

var errClosing = errors.New("socket closing")

// catchUp writes the events in (since, liveFrom] for this socket, then the
// held live frames and SYNCED, and gives the write side back. The caller
// owns the write side and the socket is syncing.
func (c *conn) catchUp(since uint64) {
	h := c.hub
	if err := c.replay(since, c.liveFrom); err != nil && !errors.Is(err, errClosing) {
		h.log.Warn("resume failed", "user_id", c.user, "since", since, "seq", c.liveFrom, "err", err)
		c.closeWith(ws.StatusInternalServerError, "resume failed; reconnect with since")
	}
	// Switch to live under the routing lock: no Dispatch is half done, so
	// SYNCED's seq covers every event routed so far.
	h.mu.Lock()
	synced := max(h.lastSeq.Load(), c.minSeq)
	c.mu.Lock()
	c.syncing = false
	if !c.closing {
		c.pending = append(c.pending, c.syncBuf...)
		c.pending = append(c.pending, encodeSynced(synced))
	}
	c.syncBuf = nil
	if len(c.pending) > 0 {
		c.hub.wg.Add(1)
		go c.writeLoop() // takes over the write side
	} else {
		c.releaseLocked()
	}
	c.mu.Unlock()
	h.mu.Unlock()
}

// replayBatch is how many frames one catch-up write carries.
const replayBatch = 64

// replay reads (since, upTo] and writes this socket's frames directly.
func (c *conn) replay(since, upTo uint64) error {
	if since >= upTo {
		return nil
	}
	h := c.hub
	var convs []int64
	switch c.ep {
	case epInbox:
		convs = h.dir.Conversations(c.user)
	case epChat:
		convs = []int64{c.id}
	}
	ctx, cancel := context.WithTimeout(h.ctx, h.cfg.ResumeTimeout)
	defer cancel()
	batch := make([]frame, 0, replayBatch)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := c.write(batch)
		batch = batch[:0]
		return err
	}
	n := 0
	err := h.reader.Read(ctx, since+1, upTo, c.filters(convs), func(st eventstore.Stored) error {
		f, ok := c.replayFrame(st, convs)
		if !ok {
			return nil
		}
		if c.isClosing() {
			return errClosing
		}
		n++
		batch = append(batch, f)
		if len(batch) == replayBatch {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	h.log.Debug("caught up", "user_id", c.user, "since", since, "seq", upTo, "frames", n, "err", err)
	return err
}

// filters narrows a catch-up read to the socket's subjects.
func (c *conn) filters(convs []int64) []string {
	switch c.ep {
	case epChat:
		return []string{"inbox.conv." + strconv.FormatInt(c.id, 10) + ".>"}
	case epJob:
		return []string{"inbox.job." + strconv.FormatInt(c.id, 10) + ".status"}
	}
	if 2*len(convs)+2 > c.hub.cfg.MaxResumeFilters {
		return nil // read everything and filter in replayFrame
	}
	fs := make([]string, 0, 2*len(convs)+2)
	for _, id := range convs {
		fs = append(fs, eventstore.ConvSubject(id, eventstore.KindMessage), eventstore.ConvSubject(id, eventstore.KindRead))
	}
	// Membership events of every conversation: the user may have joined or left one.
	return append(fs, "inbox.conv.*."+string(eventstore.KindCreated), "inbox.conv.*."+string(eventstore.KindMember))
}

// replayFrame is the frame this socket gets for a stored event, if any.
// convs is sorted.
func (c *conn) replayFrame(st eventstore.Stored, convs []int64) (frame, bool) {
	in := func(conv int64) bool {
		_, ok := slices.BinarySearch(convs, conv)
		return ok
	}
	switch e := st.Event.(type) {
	case *eventstore.Message:
		if in(e.ConversationID) {
			return encodeMessage(st.Seq, e), true
		}
	case *eventstore.Read:
		if in(e.ConversationID) {
			return encodeRead(st.Seq, e), true
		}
	case *eventstore.Created:
		if !c.carries(e.ConversationID, 0) {
			break
		}
		members := make([]string, 0, len(e.Members))
		mine := false
		for _, m := range e.Members {
			members = append(members, m.UserID)
			mine = mine || m.UserID == c.user
		}
		if mine {
			slices.Sort(members)
			return encodeJoined(st.Seq, e.ConversationID, members), true
		}
	case *eventstore.MemberChanged:
		if e.UserID != c.user || !c.carries(e.ConversationID, 0) {
			break
		}
		if e.Op == eventstore.OpRemove {
			return encodeLeft(st.Seq, e.ConversationID), true
		}
		return encodeJoined(st.Seq, e.ConversationID, c.hub.dir.Members(e.ConversationID)), true
	case *eventstore.JobStatus:
		if c.carries(0, e.JobID) {
			return encodeJobStatus(st.Seq, e), true
		}
	}
	return frame{}, false
}
