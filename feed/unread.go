package feed

import (
	"slices"
	"strings"

	"inbox/chat"
	"inbox/eventstore"
)

// Unread counts ahead of the projector. The projector commits in batches
// that linger by load (up to 100 ms), so its count of a message reaches the
// feed after the message went out, and a socket got two writes: the message,
// then its UNREAD. A feed that follows the whole stream sees every event the
// count depends on, in order, so it can tell the count itself: the
// projector's last count plus the messages others sent since. It hands that
// to the sink with the message (chat.Change.Unread), which queues both
// together, one write. The projector stays the truth: its count, when it
// comes, replaces the guess, and goes out only if it differs from what the
// socket was told.
//
// A guess is made only when it must be right:
//   - a message counts 1 for every member but its sender (as the projector
//     counts it);
//   - any other event that may change a count stops the guesses of the
//     counts it may change (a receipt: its reader's; a join or leave, a
//     deletion or erasure: the conversation's; retention: all) until the
//     projector's count of an event at or after it comes, and that count
//     goes out whatever the sockets were told before (a client that sent a
//     receipt may have set its badge itself);
//   - a count starts being followed only if the feed dispatched every event
//     of its conversation since it (it started before it, and nothing that
//     changes counts happened in the conversation since).
//
// In interest mode the feed does not see every event of a conversation, and
// guesses nothing.

// guesses are the counts the feed follows, under Feed.mu.
type guesses struct {
	// start: every event after it was dispatched by this feed and followed
	// here (where the feed started, or where last was last cleared); seen:
	// the last event followed.
	start, seen eventstore.Cursor
	// last is, per conversation, the id of its latest dispatched event that
	// may change the count of a user with no guess here (a message, a join
	// or leave, a deletion; none since start: absent); global, per partition,
	// that of the latest such event of no single conversation (retention).
	// At maxLast conversations last is cleared and start moved to seen.
	last   map[int64]uint64
	global eventstore.Cursor
	convs  map[int64]map[string]*guess
	size   int // guesses held
	// sweepAt: at this size the guesses of users with no socket here
	// (connected) are dropped: the feed is not told when a user's last
	// socket closes.
	sweepAt int
	sockets sockets
}

// sockets is what the guesses ask the sink about a user's sockets.
type sockets interface {
	Connected(user string) bool
	Opened(user string) uint64
}

// minSweep is the size below which guesses are never swept.
const minSweep = 4096

// maxLast bounds the conversations guesses.last holds (about 40 bytes each).
const maxLast = 1 << 18

// guess is one user's count of one conversation.
type guess struct {
	base    int64    // the projector's count
	baseSeq uint64   // of the event that made it
	pending []uint64 // messages after baseSeq that count for the user
	// blind: the id of an event after which the count cannot be told until
	// the projector's count of it (or a later one) comes; 0: none.
	blind uint64
	sent  int64 // the count the user's sockets were last given (-1: none)
	// opened: the sink's Opened for the user when sent was given; a socket
	// opened since was not told it.
	opened uint64
}

func (g *guess) value() int64 { return g.base + int64(len(g.pending)) }

func newGuesses(start eventstore.Cursor, sink sockets) *guesses {
	return &guesses{
		start:   start.Clone(),
		seen:    start.Clone(),
		last:    make(map[int64]uint64),
		global:  eventstore.NewCursor(len(start)),
		convs:   make(map[int64]map[string]*guess),
		sweepAt: minSweep,
		sockets: sink,
	}
}

// dispatch follows event st and returns the counts it changed that the
// feed can tell, sorted by user: the sink queues each with the event.
func (gs *guesses) dispatch(st eventstore.Stored, ch chat.Change) []chat.UnreadCount {
	gs.seen.Advance(st.Seq)
	if len(gs.last) >= maxLast {
		gs.last = make(map[int64]uint64)
		gs.start = gs.seen.Clone() // counts from before now are not followed
	}
	switch e := st.Event.(type) {
	case nil, *eventstore.Typing, *eventstore.Profile, *eventstore.ProfileErased,
		*eventstore.Job, *eventstore.JobStatus, *eventstore.Edit, *eventstore.React:
		return nil // counts stay as they are
	case *eventstore.Message:
		gs.last[e.ConversationID] = st.Seq
		var out []chat.UnreadCount
		for user, g := range gs.convs[e.ConversationID] {
			if user == e.SenderID {
				continue
			}
			g.pending = append(g.pending, st.Seq)
			if g.blind == 0 {
				g.sent, g.opened = g.value(), gs.sockets.Opened(user)
				out = append(out, chat.UnreadCount{User: user, Unread: g.sent})
			}
		}
		slices.SortFunc(out, func(a, b chat.UnreadCount) int { return strings.Compare(a.User, b.User) })
		return out
	case *eventstore.Read:
		// A receipt changes its reader's count alone. A reader with no
		// count followed yet gets one, blind, so that a count of the
		// projector's from before the receipt is not followed.
		g := gs.convs[e.ConversationID][e.UserID]
		if g == nil {
			g = gs.add(e.ConversationID, e.UserID)
		}
		g.blind, g.sent = st.Seq, -1
		return nil
	}
	conv := eventstore.ConversationOf(st.Event)
	if conv == 0 { // retention: any conversation's counts
		gs.global.Advance(st.Seq)
		for _, us := range gs.convs {
			for _, g := range us {
				g.blind, g.sent = st.Seq, -1
			}
		}
		return nil
	}
	if _, ok := st.Event.(*eventstore.Created); !ok { // every count of a conversation is of its creation or later
		gs.last[conv] = st.Seq
	}
	for _, user := range ch.Left {
		gs.drop(conv, user)
	}
	for _, g := range gs.convs[conv] {
		g.blind, g.sent = st.Seq, -1
	}
	return nil
}

// counted takes the projector's count u and says whether and what to send:
// the count the user's sockets should now have, if they were not told it
// yet.
func (gs *guesses) counted(u heldUnread) (int64, bool) {
	g := gs.convs[u.conv][u.user]
	if g == nil {
		if !gs.followable(u) {
			return u.unread, true
		}
		g = gs.add(u.conv, u.user)
	} else if u.seq < g.baseSeq {
		return 0, false // older than the count already held
	}
	g.base, g.baseSeq = u.unread, u.seq
	i := 0
	for i < len(g.pending) && g.pending[i] <= u.seq {
		i++
	}
	g.pending = append(g.pending[:0], g.pending[i:]...)
	v := g.value()
	if g.blind != 0 {
		if u.seq < g.blind {
			// Sent as it is, as every count was before the guesses; the
			// first count at or after the blind spot goes out whatever it is.
			return u.unread, true
		}
		g.blind = 0
	}
	opened := gs.sockets.Opened(u.user)
	if v == g.sent && opened == g.opened {
		return 0, false
	}
	g.sent, g.opened = v, opened
	return v, true
}

// followable reports whether every event of u's conversation after u's
// event has been dispatched by this feed and seen by the guesses, none of
// which changed counts: a count of it can be followed from now on.
func (gs *guesses) followable(u heldUnread) bool {
	if gs.start.Covers(u.seq) {
		return false // the feed started after it
	}
	if k, seq := eventstore.Split(len(gs.global), u.seq); k >= len(gs.global) || gs.global[k] > seq {
		return false
	}
	return gs.last[u.conv] <= u.seq
}

// add follows user's count of conv from now on.
func (gs *guesses) add(conv int64, user string) *guess {
	gs.sweep()
	us := gs.convs[conv]
	if us == nil {
		us = make(map[string]*guess)
		gs.convs[conv] = us
	}
	g := &guess{sent: -1}
	us[user] = g
	gs.size++
	return g
}

// drop forgets user's count of conv.
func (gs *guesses) drop(conv int64, user string) {
	us := gs.convs[conv]
	if _, ok := us[user]; !ok {
		return
	}
	delete(us, user)
	gs.size--
	if len(us) == 0 {
		delete(gs.convs, conv)
	}
}

// sweep drops the counts of users with no socket here, once the guesses
// have doubled since the last sweep.
func (gs *guesses) sweep() {
	if gs.size < gs.sweepAt {
		return
	}
	for conv, us := range gs.convs {
		for user := range us {
			if !gs.sockets.Connected(user) {
				gs.drop(conv, user)
			}
		}
	}
	gs.sweepAt = max(minSweep, 2*gs.size)
}
