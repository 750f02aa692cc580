package wsedge

import (
	"github.com/gobwas/ws"

	"inbox/eventstore"
)

// CloseDisconnected closes a socket an operator disconnected
// (Hub.Disconnect); the client may reconnect and resume with since.
const CloseDisconnected ws.StatusCode = 4010

// Disconnect closes every socket user holds on this node with
// CloseDisconnected and reports how many it closed. A client that reconnects
// with ?since= misses nothing.
func (h *Hub) Disconnect(user string) int {
	h.mu.RLock()
	var conns []*conn
	if us := h.users[user]; us != nil {
		conns = append(conns, us.conns...)
	}
	h.mu.RUnlock()
	for _, c := range conns {
		c.closeWith(CloseDisconnected, "disconnected by an operator; reconnect with since")
	}
	if len(conns) > 0 {
		h.log.Info("sockets disconnected by an operator", "user_id", user, "sockets", len(conns))
	}
	return len(conns)
}

// FeedSeq is, per partition, the stream sequence of the last event the feed
// routed to the sockets.
func (h *Hub) FeedSeq() eventstore.Cursor { return h.lastCursor() }
