package presence

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"inbox/eventstore"
)

// watchLoop applies the bucket's changes to the watched state and calls
// notify for each transition.
func (t *Tracker) watchLoop() {
	defer t.stopWatcher()
	var changes []Change
	for {
		select {
		case <-t.ctx.Done():
			return
		case e, ok := <-t.w.Updates():
			if !ok {
				t.log.Error("presence watcher closed; presence is no longer followed")
				return
			}
			if e == nil {
				continue
			}
			changes = t.apply(e, changes[:0])
			for _, c := range changes {
				t.notify(c)
			}
		}
	}
}

// stopWatcher unsubscribes and drains the updates channel, so that a delivery
// blocked on a full channel returns and the channel gets closed.
func (t *Tracker) stopWatcher() {
	if err := t.w.Stop(); err != nil {
		t.log.Debug("presence: stop watcher", "err", err)
	}
	timeout := time.NewTimer(2 * time.Second)
	defer timeout.Stop()
	for {
		select {
		case _, ok := <-t.w.Updates():
			if !ok {
				return
			}
		case <-timeout.C:
			return
		}
	}
}

// apply applies one bucket entry to the watched state and appends the
// transitions it causes to changes (none while loading the initial snapshot).
func (t *Tracker) apply(e jetstream.KeyValueEntry, changes []Change) []Change {
	t.mu.Lock()
	defer t.mu.Unlock()
	key, at, op := e.Key(), e.Created(), e.Operation()
	if node, ok := strings.CutPrefix(key, "node."); ok {
		if op == jetstream.KeyValuePut {
			n := t.nodes[node]
			if run := string(e.Value()); n != nil && n.run != run {
				// A new run of that node id (a restart after a crash): the
				// old run's users are gone. Its delete marker may never have
				// reached this watcher: the bucket keeps one entry per key,
				// and the new run's key can replace the marker first.
				changes = t.nodeGoneLocked(node, e, changes)
				n = nil
			}
			if n == nil {
				n = &nodeState{run: string(e.Value()), users: make(map[string]time.Time)}
				t.nodes[node] = n
				if t.initial == nil {
					t.log.Info("presence: node joined", "peer", node)
				}
			}
			n.lastBeat = at
			return changes
		}
		return t.nodeGoneLocked(node, e, changes)
	}
	rest, ok := strings.CutPrefix(key, "user.")
	if !ok {
		return changes
	}
	user, node, ok := splitUserKey(rest)
	if !ok {
		t.log.Warn("presence: ignored malformed key", "key", key)
		return changes
	}
	n := t.nodes[node]
	if op == jetstream.KeyValuePut {
		if n == nil {
			if t.initial != nil {
				// Its node key may come later in the snapshot.
				if t.initial[node] == nil {
					t.initial[node] = make(map[string]uint64)
				}
				t.initial[node][user] = e.Revision()
			} else {
				// A late write of a node declared dead: it re-publishes its
				// users after re-registering.
				t.log.Debug("presence: ignored key of a node that is not alive", "key", key)
			}
			return changes
		}
		if _, had := n.users[user]; !had {
			n.users[user] = at
			us := t.userLocked(user)
			wasOnline := len(us.nodes) > 0
			us.nodes[node] = struct{}{}
			if !wasOnline && t.initial == nil {
				changes = append(changes, Change{UserID: user, Online: true})
			}
		}
		return changes
	}
	// Deleted: the user's last socket on node closed.
	if t.initial != nil {
		delete(t.initial[node], user)
	}
	us := t.userLocked(user)
	if n != nil {
		if _, had := n.users[user]; had {
			delete(n.users, user)
			delete(us.nodes, node)
			if len(us.nodes) == 0 {
				us.lastSeen = at
				if t.initial == nil {
					changes = append(changes, Change{UserID: user, LastSeen: at})
				}
			}
			return changes
		}
	}
	if len(us.nodes) == 0 && at.After(us.lastSeen) {
		us.lastSeen = at // remembered for Status
	}
	return changes
}

// nodeGoneLocked drops a node whose key expired or was deleted: its users
// that are on no other live node go offline. Lock should be held.
func (t *Tracker) nodeGoneLocked(node string, e jetstream.KeyValueEntry, changes []Change) []Change {
	n := t.nodes[node]
	if n == nil {
		return changes
	}
	delete(t.nodes, node)
	// A deleted key is a graceful Close: users were there until then. An
	// expired key (a purge marker), or a new run's key, means the node was
	// last known alive at its last heartbeat.
	expired := e.Operation() != jetstream.KeyValueDelete
	for user, since := range n.users {
		us := t.users[user]
		delete(us.nodes, node)
		if len(us.nodes) > 0 {
			continue
		}
		seen := e.Created()
		if expired {
			seen = n.lastBeat
			if since.After(seen) {
				seen = since
			}
		}
		us.lastSeen = seen
		if t.initial == nil {
			changes = append(changes, Change{UserID: user, LastSeen: seen})
		}
	}
	if t.initial == nil {
		t.log.Info("presence: node gone", "peer", node, "expired", expired, "users", len(n.users), "last_beat", n.lastBeat)
	}
	// Every node purges; purging below the marker's revision is idempotent
	// and spares the keys of a later run of that node id.
	t.requestPurge(node, e.Revision())
	return changes
}

// endInitial ends the initial snapshot: user keys of nodes that were seen
// alive count, those of dead nodes are purged.
func (t *Tracker) endInitial() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for node, users := range t.initial {
		n := t.nodes[node]
		var last uint64
		for user, rev := range users {
			last = max(last, rev)
			if n == nil {
				continue
			}
			n.users[user] = n.lastBeat
			t.userLocked(user).nodes[node] = struct{}{}
		}
		if n == nil && last > 0 {
			t.log.Info("presence: purging user keys of a dead node", "peer", node, "users", len(users))
			t.requestPurge(node, last+1)
		}
	}
	t.initial = nil
}

// Lock should be held.
func (t *Tracker) userLocked(user string) *userState {
	us := t.users[user]
	if us == nil {
		us = &userState{nodes: make(map[string]struct{}, 1)}
		t.users[user] = us
	}
	return us
}

// heartbeatLoop keeps the node key alive, and re-registers the node if its
// key expired while it was cut off.
func (t *Tracker) heartbeatLoop() {
	tick := time.NewTicker(t.cfg.Heartbeat)
	defer tick.Stop()
	for {
		select {
		case <-t.ctx.Done():
			return
		case <-tick.C:
			t.beat()
		}
	}
}

func (t *Tracker) beat() {
	ctx, cancel := context.WithTimeout(t.ctx, max(t.cfg.Heartbeat, time.Second))
	defer cancel()
	rev, err := t.publishNodeKey(ctx, true)
	if err == nil {
		t.rev = rev
		return
	}
	if !eventstore.IsWrongLastSeq(err) {
		if t.ctx.Err() == nil {
			t.log.Warn("presence heartbeat failed", "err", err)
		}
		return
	}
	e, gerr := t.kv.Get(ctx, t.nodeKey)
	switch {
	case gerr == nil:
		// Our last heartbeat was stored but its ack was lost (or another
		// process uses this node id).
		t.log.Warn("presence: node key changed under us; adopting it", "revision", e.Revision(), "expected", t.rev)
		t.rev = e.Revision()
		return
	case !errors.Is(gerr, jetstream.ErrKeyNotFound) && !errors.Is(gerr, jetstream.ErrKeyDeleted):
		t.log.Warn("presence heartbeat: get node key", "err", gerr)
		return
	}
	// The key expired: every node has dropped our users. Register again, drop
	// whatever we wrote meanwhile and re-publish every local user.
	rev, err = t.publishNodeKey(ctx, false)
	if err != nil {
		t.log.Warn("presence: re-register node", "err", err)
		return
	}
	t.rev = rev
	t.wmu.Lock()
	for user := range t.local {
		t.markDirtyLocked(user)
	}
	n := len(t.local)
	t.wmu.Unlock()
	t.requestPurge(t.cfg.NodeID, rev)
	t.log.Warn("presence: node key had expired; node re-registered", "users", n)
}

// writeLoop drains the queued user writes and purges, retrying with backoff.
func (t *Tracker) writeLoop() {
	var backoff time.Duration
	retry := time.NewTimer(0)
	<-retry.C
	defer retry.Stop()
	for {
		select {
		case <-t.ctx.Done():
			return
		case <-t.wake:
		case <-retry.C:
		}
		for t.ctx.Err() == nil {
			more, err := t.flush()
			if err != nil {
				backoff = min(max(2*backoff, 100*time.Millisecond), 5*time.Second)
				t.log.Warn("presence write failed; retrying", "err", err, "in", backoff)
				retry.Reset(backoff)
				break
			}
			backoff = 0
			if !more {
				break
			}
		}
	}
}

type write struct {
	user   string
	online bool
	ack    jetstream.PubAckFuture
	err    error
}

// flush performs the pending purges and up to writeBatch user writes, in
// flight together. Failed writes are queued again. It reports whether work
// remains.
func (t *Tracker) flush() (more bool, err error) {
	t.wmu.Lock()
	var purges map[string]uint64 // taken over, never shared: requestPurge writes t.purges once wmu is released
	if len(t.purges) > 0 {
		purges, t.purges = t.purges, make(map[string]uint64)
	}
	n := min(len(t.dirty), writeBatch)
	writes := make([]write, n)
	for i, user := range t.dirty[:n] {
		_, online := t.local[user]
		writes[i] = write{user: user, online: online}
		delete(t.isDirty, user)
	}
	t.dirty = append(t.dirty[:0], t.dirty[n:]...)
	t.wmu.Unlock()

	ctx, cancel := context.WithTimeout(t.ctx, writeTimeout)
	defer cancel()
	var errs []error
	for node, before := range purges {
		if perr := t.purgeUsersOf(ctx, node, before); perr != nil {
			errs = append(errs, perr)
			t.requestPurge(node, before)
		}
	}
	for i := range writes {
		w := &writes[i]
		m := nats.NewMsg(keySubject(userKey(w.user, t.cfg.NodeID)))
		if !w.online {
			m.Header.Set("KV-Operation", "DEL") // what KeyValue.Delete publishes
		}
		w.ack, w.err = t.js.PublishMsgAsync(m)
	}
	failed := 0
	for i := range writes {
		w := &writes[i]
		if w.err == nil {
			select {
			case <-w.ack.Ok():
			case w.err = <-w.ack.Err():
			case <-ctx.Done():
				w.err = ctx.Err()
			}
		}
		if w.err != nil {
			if failed == 0 {
				errs = append(errs, w.err)
			}
			failed++
		}
	}
	t.wmu.Lock()
	for _, w := range writes {
		if w.err != nil {
			t.markDirtyLocked(w.user)
		}
	}
	more = len(t.dirty) > 0 || len(t.purges) > 0
	t.wmu.Unlock()
	if failed > 0 {
		t.log.Debug("presence: user writes failed", "failed", failed, "of", len(writes))
	}
	return more, errors.Join(errs...)
}
