package wsedge

import "time"

// ACKs follow their message. A sender's ACK is queued only once the live
// feed has dispatched the message it acknowledges, right after that
// message's echo to the sender: a client never sees an ACK before its
// message, and under load the two leave in one write. The sender's worker
// usually has its ACK before the feed has the message; it is held here until
// then, or for maxAckHold at most: the message is stored, and a feed that
// stalls (a NATS server lost under it) must not leave its sender without an
// answer; the message itself follows when the feed moves on or on resume.

// heldAck is an ACK waiting for the event it acknowledges.
type heldAck struct {
	id uint64 // the event
	c  *conn
	f  frame
	at time.Time // when it was held
}

// maxHeldAcks bounds the ACKs held; past it they are queued at once (a feed
// far behind).
const maxHeldAcks = 1 << 16

// maxAckHold is the longest an ACK waits for its message to be dispatched.
const maxAckHold = 2 * time.Second

// ackAfter queues f, c's ACK of event id, once the feed has dispatched id.
func (h *Hub) ackAfter(c *conn, id uint64, f frame) {
	h.ackMu.Lock()
	// Counted before the check: the feed marks an event dispatched, then
	// looks at nacks, so one of the two sees the other (releaseAcks).
	h.nacks.Add(1)
	if h.dispatched(id) || len(h.acks) >= maxHeldAcks {
		h.nacks.Add(-1)
		h.ackMu.Unlock()
		c.enqueue(f)
		return
	}
	h.acks = append(h.acks, heldAck{id: id, c: c, f: f, at: time.Now()})
	h.ackMu.Unlock()
}

// releaseAcks queues the held ACKs whose event has been dispatched. The
// feed calls it from Dispatch, with mu read-held, after marking the event.
func (h *Hub) releaseAcks() { h.releaseAcksHeldBefore(time.Time{}) }

// releaseAcksHeldBefore queues the held ACKs whose event has been dispatched
// and those held since before cutoff (zero: none). The pinger calls it with
// now - maxAckHold.
func (h *Hub) releaseAcksHeldBefore(cutoff time.Time) {
	if h.nacks.Load() == 0 {
		return
	}
	h.ackMu.Lock()
	defer h.ackMu.Unlock()
	kept := h.acks[:0]
	for _, a := range h.acks {
		if h.dispatched(a.id) || a.at.Before(cutoff) {
			a.c.enqueue(a.f)
			h.nacks.Add(-1)
		} else {
			kept = append(kept, a)
		}
	}
	clear(h.acks[len(kept):])
	h.acks = kept
}
