package chat

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"

	"inbox/eventstore"
)

// Directory is the in-memory membership state every node keeps, built from a
// read-model snapshot at start and kept current by the live stream. Sends and
// deliveries ask it, never SQL. Apply runs on one goroutine (the stream feed);
// everything else may be called concurrently.
//
// Only membership, profile and job events take the write lock; the hot ones
// (messages, typing, receipts) read the conversation's member list, which is
// kept sorted and replaced (never changed in place) on every membership change.
type Directory struct {
	mu      sync.RWMutex
	convs   map[int64]map[string]string // conversation -> user -> role
	sorted  map[int64][]string          // conversation -> members, sorted; read-only slices
	users   map[string]map[int64]struct{}
	jobs    map[int64]map[string]struct{}
	profile map[string]Profile
	maxConv int64
	maxJob  int64

	applied []atomic.Uint64 // per partition: the last stream sequence applied
	wmu     sync.Mutex
	waiters map[uint64][]chan struct{} // by event id
}

// Profile is a user's display name and avatar.
type Profile struct {
	Name   string
	Avatar *string
}

// NewDirectory returns an empty directory at the start of one partition
// (Seed sets the partitions).
func NewDirectory() *Directory {
	return &Directory{
		applied: make([]atomic.Uint64, 1),
		convs:   make(map[int64]map[string]string),
		sorted:  make(map[int64][]string),
		users:   make(map[string]map[int64]struct{}),
		jobs:    make(map[int64]map[string]struct{}),
		profile: make(map[string]Profile),
		waiters: make(map[uint64][]chan struct{}),
	}
}

// Seed loads state from a snapshot taken at the applied sequences of each
// partition. Call before the feed starts.
func (d *Directory) Seed(applied eventstore.Cursor, convs map[int64][]eventstore.Member, profiles map[string]Profile, jobs map[int64][]string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for id, ms := range convs {
		for _, m := range ms {
			d.addLocked(id, m.UserID, m.Role)
		}
		d.sortLocked(id)
		d.maxConv = maxID(d.maxConv, id)
	}
	maps.Copy(d.profile, profiles)
	for id, ms := range jobs {
		set := make(map[string]struct{}, len(ms))
		for _, u := range ms {
			set[u] = struct{}{}
		}
		d.jobs[id] = set
		d.maxJob = maxID(d.maxJob, id)
	}
	d.applied = make([]atomic.Uint64, max(len(applied), 1))
	for k, seq := range applied {
		d.applied[k].Store(seq)
	}
}

// Change says what an applied event did to membership.
type Change struct {
	Joined  []string // users added to the conversation by this event
	Left    []string // users removed from it
	Members []string // the conversation's (or job's) members after the event
	// Unread are members' unread counts of the conversation after the
	// event, sorted by user, where the live feed can tell them before the
	// projector does (feed's guesses); the directory leaves it empty.
	Unread []UnreadCount
}

// UnreadCount is a user's unread count of a conversation.
type UnreadCount struct {
	User   string
	Unread int64
}

// Apply updates the directory with one stream event and reports the membership
// change. Change.Members is shared: callers must not modify it.
func (d *Directory) Apply(st eventstore.Stored) Change {
	defer d.advance(st.Seq)
	switch e := st.Event.(type) {
	case *eventstore.Message, *eventstore.Typing, *eventstore.Read,
		*eventstore.Edit, *eventstore.Delete, *eventstore.React, *eventstore.Erased:
		d.mu.RLock()
		defer d.mu.RUnlock()
		return Change{Members: d.sorted[eventstore.ConversationOf(e)]}
	case nil, *eventstore.Expired:
		return Change{}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	var ch Change
	switch e := st.Event.(type) {
	case *eventstore.Created:
		if _, exists := d.convs[e.ConversationID]; exists {
			break // a second create cannot be appended; ignore one published by hand
		}
		d.convs[e.ConversationID] = make(map[string]string, len(e.Members))
		for _, m := range e.Members {
			d.addLocked(e.ConversationID, m.UserID, m.Role)
			ch.Joined = append(ch.Joined, m.UserID)
		}
		d.sortLocked(e.ConversationID)
		d.maxConv = maxID(d.maxConv, e.ConversationID)
	case *eventstore.MemberChanged:
		_, was := d.convs[e.ConversationID][e.UserID]
		switch e.Op {
		case eventstore.OpAdd:
			d.addLocked(e.ConversationID, e.UserID, e.Role)
			if !was {
				ch.Joined = []string{e.UserID}
			}
		case eventstore.OpRemove:
			if was {
				d.removeLocked(e.ConversationID, e.UserID)
				ch.Left = []string{e.UserID}
			}
		}
		d.sortLocked(e.ConversationID)
		d.maxConv = maxID(d.maxConv, e.ConversationID)
	case *eventstore.Profile:
		d.profile[e.UserID] = Profile{Name: e.Name, Avatar: e.Avatar}
		return ch
	case *eventstore.ProfileErased:
		// Appended expecting the user's last profile event: no newer
		// profile than the erased ones exists.
		delete(d.profile, e.UserID)
		return ch
	case *eventstore.Job:
		set := make(map[string]struct{}, len(e.Members))
		for _, u := range e.Members {
			set[u] = struct{}{}
		}
		d.jobs[e.JobID] = set
		d.maxJob = maxID(d.maxJob, e.JobID)
		ch.Members = slices.Sorted(maps.Keys(set))
		return ch
	case *eventstore.JobStatus:
		ch.Members = slices.Sorted(maps.Keys(d.jobs[e.JobID]))
		return ch
	}
	if id := eventstore.ConversationOf(st.Event); id != 0 {
		ch.Members = d.sorted[id]
	}
	return ch
}

// advance records seq as applied and wakes its waiters.
func (d *Directory) advance(id uint64) {
	n := len(d.applied)
	k, seq := eventstore.Split(n, id)
	if k >= n || seq <= d.applied[k].Load() {
		return
	}
	d.applied[k].Store(seq)
	d.wmu.Lock()
	defer d.wmu.Unlock()
	for w, chs := range d.waiters {
		if wk, ws := eventstore.Split(n, w); wk == k && ws <= seq {
			for _, ch := range chs {
				close(ch)
			}
			delete(d.waiters, w)
		}
	}
}

func (d *Directory) addLocked(conv int64, user, role string) {
	ms := d.convs[conv]
	if ms == nil {
		ms = make(map[string]string, 2)
		d.convs[conv] = ms
	}
	ms[user] = role
	cs := d.users[user]
	if cs == nil {
		cs = make(map[int64]struct{}, 1)
		d.users[user] = cs
	}
	cs[conv] = struct{}{}
}

func (d *Directory) removeLocked(conv int64, user string) {
	delete(d.convs[conv], user)
	if cs := d.users[user]; cs != nil {
		delete(cs, conv)
		if len(cs) == 0 {
			delete(d.users, user)
		}
	}
}

// sortLocked replaces conv's sorted member list after a change.
func (d *Directory) sortLocked(conv int64) {
	if ms := d.convs[conv]; len(ms) > 0 {
		d.sorted[conv] = slices.Sorted(maps.Keys(ms))
	} else {
		delete(d.sorted, conv)
	}
}

// Exists reports whether the conversation was created.
func (d *Directory) Exists(conv int64) bool {
	d.mu.RLock()
	defer d.mu.RUnlock()
	_, ok := d.convs[conv]
	return ok
}

// IsMember reports whether user is a member of conv.
func (d *Directory) IsMember(conv int64, user string) bool {
	d.mu.RLock()
	defer d.mu.RUnlock()
	_, ok := d.convs[conv][user]
	return ok
}

// Members lists conv's members, sorted.
func (d *Directory) Members(conv int64) []string {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return slices.Clone(d.sorted[conv])
}

// Roles returns conv's members with their roles.
func (d *Directory) Roles(conv int64) []eventstore.Member {
	d.mu.RLock()
	defer d.mu.RUnlock()
	out := make([]eventstore.Member, 0, len(d.convs[conv]))
	for u, r := range d.convs[conv] {
		out = append(out, eventstore.Member{UserID: u, Role: r})
	}
	slices.SortFunc(out, func(a, b eventstore.Member) int { return cmp.Compare(a.UserID, b.UserID) })
	return out
}

// Conversations lists the conversations user belongs to, ascending.
func (d *Directory) Conversations(user string) []int64 {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return slices.Sorted(maps.Keys(d.users[user]))
}

// Contacts lists the users who share at least one conversation with user (not user itself).
func (d *Directory) Contacts(user string) []string {
	d.mu.RLock()
	defer d.mu.RUnlock()
	set := make(map[string]struct{})
	for c := range d.users[user] {
		for u := range d.convs[c] {
			if u != user {
				set[u] = struct{}{}
			}
		}
	}
	return slices.Sorted(maps.Keys(set))
}

// ShareConversation reports whether a and b are both members of some conversation.
func (d *Directory) ShareConversation(a, b string) bool {
	d.mu.RLock()
	defer d.mu.RUnlock()
	ca, cb := d.users[a], d.users[b]
	if len(cb) < len(ca) {
		ca, cb = cb, ca
	}
	for c := range ca {
		if _, ok := cb[c]; ok {
			return true
		}
	}
	return false
}

// Profile returns user's profile, if one was set.
func (d *Directory) Profile(user string) (Profile, bool) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	p, ok := d.profile[user]
	return p, ok
}

// JobExists reports whether the job was created.
func (d *Directory) JobExists(job int64) bool {
	d.mu.RLock()
	defer d.mu.RUnlock()
	_, ok := d.jobs[job]
	return ok
}

// IsJobMember reports whether user follows job.
func (d *Directory) IsJobMember(job int64, user string) bool {
	d.mu.RLock()
	defer d.mu.RUnlock()
	_, ok := d.jobs[job][user]
	return ok
}

// MaxConversationID is the highest conversation id seen, up to
// eventstore.MaxID: one above it (stored before the cap existed) is left out,
// so id assignment goes on below it.
func (d *Directory) MaxConversationID() int64 {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.maxConv
}

// MaxJobID is the highest job id seen, up to eventstore.MaxID.
func (d *Directory) MaxJobID() int64 {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.maxJob
}

// maxID is the larger of cur and id, leaving out an id above eventstore.MaxID.
func maxID(cur, id int64) int64 {
	if id > eventstore.MaxID {
		return cur
	}
	return max(cur, id)
}

// Partitions is the number of partitions the directory follows.
func (d *Directory) Partitions() int { return len(d.applied) }

// Seq is the last stream sequence applied from each partition.
func (d *Directory) Seq() eventstore.Cursor {
	c := eventstore.NewCursor(len(d.applied))
	for k := range d.applied {
		c[k] = d.applied[k].Load()
	}
	return c
}

// WaitFor blocks until the directory has applied the event with id (in its
// partition) or ctx ends.
func (d *Directory) WaitFor(ctx context.Context, id uint64) error {
	k, seq := eventstore.Split(len(d.applied), id)
	if k >= len(d.applied) {
		return fmt.Errorf("wait for event %d: no partition %d", id, k)
	}
	d.wmu.Lock()
	if d.applied[k].Load() >= seq {
		d.wmu.Unlock()
		return nil
	}
	ch := make(chan struct{})
	d.waiters[id] = append(d.waiters[id], ch)
	d.wmu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
