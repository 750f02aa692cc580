package wsedge

import (
	"sync"
	"time"

	"inbox/admission"
)

// Presence changes are the first thing a busy node sheds, with typing
// (docs/overload.md): while the gate refuses them, each user's latest change
// is held, and the pinger's next turn after the node is below its bounds
// again sends them all. A user who flaps while the node is busy costs one
// frame per contact, not one per flap, and every contact ends with the
// user's current state.

// presenceHeld is the presence changes held back, and the lock that orders
// every presence delivery, held or not (so a held change never overtakes a
// newer one).
type presenceHeld struct {
	mu      sync.Mutex
	changes map[string]presenceChange // by user: the latest
}

type presenceChange struct {
	online   bool
	lastSeen time.Time
}

// maxHeldPresence bounds the users whose change is held; past it changes go
// out at once.
const maxHeldPresence = 1 << 16

// PushPresence tells the users who share a conversation with user that it
// came online or went offline (lastSeen: when, if known), now, or once the
// node is no longer shedding presence (deliverPresence). The presence
// tracker calls it, through the live feed, on its own goroutine; it does
// not block on a socket.
func (h *Hub) PushPresence(user string, online bool, lastSeen time.Time) {
	p := &h.presHeld
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.changes) > 0 || (h.gate != nil && h.gate.Admit(admission.Presence) != nil) {
		if _, held := p.changes[user]; held || len(p.changes) < maxHeldPresence {
			if p.changes == nil {
				p.changes = make(map[string]presenceChange)
			}
			p.changes[user] = presenceChange{online: online, lastSeen: lastSeen}
			return
		}
	}
	h.deliverPresence(user, online, lastSeen)
}

// releasePresence sends the held changes once the node takes presence
// changes again. The pinger calls it every turn.
func (h *Hub) releasePresence() {
	p := &h.presHeld
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.changes) == 0 || (h.gate != nil && h.gate.Busy(admission.Presence)) {
		return
	}
	for user, ch := range p.changes {
		h.deliverPresence(user, ch.online, ch.lastSeen)
	}
	p.changes = nil
}
