package projections

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"inbox/eventstore"
)

// UnreadChange is a member's unread count after a batch in which an event
// changed it, even one that ends where it began: the live feed may have
// told a client the step between (feed's guesses), and this is the count
// that puts it right.
type UnreadChange struct {
	ConversationID int64
	UserID         string
	Unread         int64
	Seq            uint64 // the event that last changed it (a message, a receipt, a join, a deletion)
}

// maxCachedConversations bounds the conversation state kept between batches.
const maxCachedConversations = 100_000

// memberState is a member row as the batch sees it.
type memberState struct {
	role       string
	joinedSeq  uint64
	readUpTo   int64
	unread     int64
	reported   int64  // unread as last reported: a difference is an UnreadChange
	changed    uint64 // the event that last changed unread
	reportedAt uint64 // changed as last reported: a difference is an UnreadChange too
	dirty      bool
	removed    bool // delete the row at flush
}

// convState is a conversation and its members as the batch sees it. A
// conversation that was never created can still have messages (the stream is
// the truth); exists says whether its row is written.
//
// lastMsg is the latest message that is not deleted (0: none), and the
// conversation's activity is the later of its creation and lastMsg: both
// depend only on which messages exist at the end, never on when a deleted,
// erased or expired one was seen, so a rebuild agrees with a live read model.
type convState struct {
	id         int64
	exists     bool
	createdSeq uint64
	createdAt  string
	lastMsg    int64
	members    map[string]*memberState
	dirty      bool
	touched    bool // in applier.touched
}

// lastActivity orders the conversation list: its creation or last message.
func (c *convState) lastActivity() uint64 { return max(c.createdSeq, uint64(c.lastMsg)) }

// member returns uid's state unless uid is not (or no longer) a member.
func (c *convState) member(uid string) *memberState {
	if m := c.members[uid]; m != nil && !m.removed {
		return m
	}
	return nil
}

// applier applies the events of one partition to the projection, one
// transaction per batch. It caches the state of the partition's
// conversations between batches: it must be the only writer of the
// partition's rows (every conversation is in one partition, so the
// partitions' appliers share no state).
type applier struct {
	db      *DB
	k       int // the partition
	log     *slog.Logger
	convs   map[int64]*convState
	touched []*convState
	st      stmts // bound to the current batch's transaction
	base    stmts // prepared on the writer connection, on first use
	// forget: the batch erased or expired content; once it commits, the
	// write-ahead log is checkpointed and truncated so no old page keeps it.
	forget bool
}

// mask is what an id (or seq) is masked with to leave its partition
// (retention's queries): 0 with one partition, whose ids are sequences.
func (a *applier) mask() int64 {
	if a.db.n <= 1 {
		return 0
	}
	return eventstore.MaxPartitions - 1
}

func newApplier(db *DB, k int, log *slog.Logger) *applier {
	if db.n > 1 {
		log = log.With("partition", k)
	}
	return &applier{db: db, k: k, log: log, convs: make(map[int64]*convState)}
}

// The applier's statements: prepared once on the writer connection and bound
// to each batch's transaction with Tx.StmtContext, which reuses the
// connection's prepared statement instead of preparing it again.
type stmtID int

const (
	qInsMsg stmtID = iota
	qSelConv
	qSelLastMsg
	qSelMembers
	qUpConv
	qUpMember
	qDelMember
	qCountOthers
	qMarkRead
	qUpProfile
	qInsJob
	qInsJobMember
	qUpJobStatus
	qSelApplied
	qSetApplied
	qUpKey
	qMsgState
	qEditMsg
	qDeleteMsg
	qEraseMsg
	qInsErased
	qLifeSeq
	qAddReaction
	qDelReaction
	qCountReactions
	qDelReactions
	qDelKeyAt
	qDelProfileAt
	qSelExpired
	qExpiringConvs
	qExpireReactions
	qExpireMessages
	qExpireKeys
	qSetExpired
	numStmts
)

var queries = [numStmts]string{
	qInsMsg: `INSERT INTO messages (id, conversation_id, sender_id, sender_name, sender_avatar, text, type, client_msg_id, created_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
	qSelConv:    `SELECT created_seq, created_at, last_message_id, last_activity_seq FROM conversations WHERE id = ?`,
	qSelLastMsg: `SELECT coalesce(max(id), 0) FROM messages WHERE conversation_id = ? AND deleted = 0`,
	qSelMembers: `SELECT user_id, role, joined_seq, read_up_to, unread FROM members WHERE conversation_id = ?`,
	qUpConv: `INSERT INTO conversations (id, created_seq, created_at, last_message_id, last_activity_seq) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (id) DO UPDATE SET last_message_id = excluded.last_message_id, last_activity_seq = excluded.last_activity_seq`,
	qUpMember: `INSERT INTO members (conversation_id, user_id, role, joined_seq, read_up_to, unread) VALUES (?, ?, ?, ?, ?, ?)
			ON CONFLICT (conversation_id, user_id) DO UPDATE SET role = excluded.role, joined_seq = excluded.joined_seq,
			read_up_to = excluded.read_up_to, unread = excluded.unread`,
	qDelMember:   `DELETE FROM members WHERE conversation_id = ? AND user_id = ?`,
	qCountOthers: `SELECT count(*) FROM messages WHERE conversation_id = ? AND id > ? AND id <= ? AND sender_id <> ? AND deleted = 0`,
	qMarkRead:    `UPDATE messages SET is_read = 1 WHERE conversation_id = ? AND id > ? AND id <= ? AND sender_id <> ? AND is_read = 0`,
	qUpProfile: `INSERT INTO profiles (user_id, name, avatar, updated_seq) VALUES (?, ?, ?, ?)
			ON CONFLICT (user_id) DO UPDATE SET name = excluded.name, avatar = excluded.avatar, updated_seq = excluded.updated_seq`,
	qInsJob:       `INSERT OR IGNORE INTO jobs (id, created_seq, created_at) VALUES (?, ?, ?)`,
	qInsJobMember: `INSERT OR IGNORE INTO job_members (job_id, user_id) VALUES (?, ?)`,
	qUpJobStatus: `INSERT INTO job_status (job_id, status, detail, seq, updated_at) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (job_id) DO UPDATE SET status = excluded.status, detail = excluded.detail, seq = excluded.seq, updated_at = excluded.updated_at`,
	qSelApplied: `SELECT seq FROM applied WHERE k = ?`,
	qSetApplied: `UPDATE applied SET seq = ?, skipped = skipped + ? WHERE k = ?`,
	qMsgState:   `SELECT conversation_id, sender_id, deleted, erased FROM messages WHERE id = ?`,
	qEditMsg:    `UPDATE messages SET text = ?, edited_at = ?, life_seq = ? WHERE id = ?`,
	qDeleteMsg:  `UPDATE messages SET text = '', edited_at = NULL, deleted = 1, life_seq = ? WHERE id = ?`,
	qEraseMsg: `UPDATE messages SET sender_name = '', sender_avatar = NULL, text = '', client_msg_id = '', is_read = 0,
			edited_at = NULL, deleted = 1, erased = 1, life_seq = ? WHERE id = ?`,
	qInsErased: `INSERT INTO messages (id, conversation_id, sender_id, sender_name, sender_avatar, text, type, client_msg_id, created_at,
			deleted, erased, life_seq) VALUES (?, ?, ?, '', NULL, '', ?, '', ?, 1, 1, ?)`,
	qLifeSeq:        `UPDATE messages SET life_seq = ? WHERE id = ?`,
	qAddReaction:    `INSERT OR IGNORE INTO reactions (message_id, emoji, user_id, seq) VALUES (?, ?, ?, ?)`,
	qDelReaction:    `DELETE FROM reactions WHERE message_id = ? AND emoji = ? AND user_id = ?`,
	qCountReactions: `SELECT count(*) FROM reactions WHERE message_id = ? AND user_id = ?`,
	qDelReactions:   `DELETE FROM reactions WHERE message_id = ?`,
	qDelKeyAt:       `DELETE FROM idempotency WHERE seq = ?`,
	qDelProfileAt:   `DELETE FROM profiles WHERE user_id = ? AND updated_seq = ?`,
	// Retention is per partition: its rows are those whose id (or seq)
	// has the partition in its low bits, (id & mask) = k, mask 0 with one
	// partition (applier.mask).
	qSelExpired:      `SELECT expired_before FROM applied WHERE k = ?`,
	qExpiringConvs:   `SELECT DISTINCT conversation_id FROM messages WHERE id < ? AND (id & ?) = ?`,
	qExpireReactions: `DELETE FROM reactions WHERE message_id < ? AND (message_id & ?) = ?`,
	qExpireMessages:  `DELETE FROM messages WHERE id < ? AND (id & ?) = ?`,
	qExpireKeys:      `DELETE FROM idempotency WHERE seq < ? AND (seq & ?) = ?`,
	qSetExpired:      `UPDATE applied SET expired_before = max(expired_before, ?) WHERE k = ?`,
	qUpKey: `INSERT INTO idempotency (user_id, conversation_id, key, op, fingerprint, seq, at) VALUES (?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (user_id, conversation_id, key) DO UPDATE SET op = excluded.op, fingerprint = excluded.fingerprint,
			seq = excluded.seq, at = excluded.at`,
}

type stmts [numStmts]*sql.Stmt

// prepare prepares every statement on db.
func (s *stmts) prepare(ctx context.Context, db *sql.DB) error {
	for i, q := range queries {
		st, err := db.PrepareContext(ctx, q)
		if err != nil {
			return fmt.Errorf("prepare %q: %w", strings.Join(strings.Fields(q)[:3], " "), err)
		}
		s[i] = st
	}
	return nil
}

// bind returns prepared's statements bound to tx.
func (s *stmts) bind(ctx context.Context, tx *sql.Tx) stmts {
	var b stmts
	for i, st := range s {
		b[i] = tx.StmtContext(ctx, st)
	}
	return b
}

// apply applies events of the applier's partition in one transaction that
// also stores the partition's last sequence. Events at or below the applied
// sequence are skipped, so applying a batch twice changes nothing. It returns the members whose unread count
// changed. The transaction is not cancelled by ctx: a started batch finishes.
func (a *applier) apply(ctx context.Context, events []eventstore.Stored) ([]UnreadChange, error) {
	changes, err := a.applyTx(context.WithoutCancel(ctx), events)
	if err != nil {
		clear(a.convs) // the cache may hold rolled-back state
		a.touched = a.touched[:0]
		a.forget = false
		return nil, err
	}
	if len(a.convs) > maxCachedConversations {
		clear(a.convs)
	}
	return changes, nil
}

func (a *applier) applyTx(ctx context.Context, events []eventstore.Stored) (changes []UnreadChange, err error) {
	if a.base[0] == nil { // before BeginTx: the writer has one connection
		if err := a.base.prepare(ctx, a.db.w); err != nil {
			return nil, err
		}
	}
	tx, err := a.db.w.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("begin batch: %w", err)
	}
	defer func() {
		if err != nil {
			tx.Rollback()
		}
	}()
	a.st = a.base.bind(ctx, tx)
	var applied, skipped uint64
	if err := a.st[qSelApplied].QueryRowContext(ctx, a.k).Scan(&applied); err != nil {
		return nil, fmt.Errorf("read applied sequence of partition %d: %w", a.k, err)
	}
	if applied != a.db.applied[a.k].Load() {
		clear(a.convs) // someone else wrote the database
	}
	start := applied
	for i := range events {
		st := &events[i]
		k, seq := eventstore.Split(a.db.n, st.Seq)
		if k != a.k {
			return nil, fmt.Errorf("event %d of partition %d in a batch of partition %d", st.Seq, k, a.k)
		}
		if seq <= applied {
			continue
		}
		if st.Err != nil {
			a.log.Warn("skip undecodable event", "seq", st.Seq, "subject", st.Subject, "err", st.Err)
			skipped++
		} else if err := a.applyEvent(ctx, st); err != nil {
			return nil, fmt.Errorf("apply event %d (%s): %w", st.Seq, st.Subject, err)
		}
		applied = seq
	}
	if applied == start {
		tx.Rollback()
		return nil, nil
	}
	if changes, err = a.flush(ctx); err != nil {
		return nil, err
	}
	if _, err := a.st[qSetApplied].ExecContext(ctx, applied, skipped, a.k); err != nil {
		return nil, fmt.Errorf("store applied sequence: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("commit batch up to %d: %w", applied, err)
	}
	if a.forget {
		// Before the batch counts as applied: whoever waits for an erasure
		// to be applied finds no old page left in the write-ahead log.
		a.forget = false
		if err := a.db.checkpoint(ctx); err != nil {
			a.log.Warn("checkpoint the write-ahead log after an erasure", "err", err)
		}
	}
	a.db.applied[a.k].Store(applied)
	a.db.skipped.Add(skipped)
	return changes, nil
}

// at is the event's creation time as stored: RFC3339 in UTC, whole seconds.
func at(h *eventstore.Header, st *eventstore.Stored) string {
	t := h.At
	if t.IsZero() {
		t = st.Time
	}
	return t.UTC().Format(time.RFC3339)
}

// nullable maps a nil pointer to SQL NULL.
func nullable(p *string) any {
	if p == nil {
		return nil
	}
	return *p
}

func (a *applier) applyEvent(ctx context.Context, st *eventstore.Stored) error {
	seq := st.Seq
	switch e := st.Event.(type) {
	case *eventstore.Message:
		c, err := a.conv(ctx, e.ConversationID)
		if err != nil {
			return err
		}
		typ := e.MsgType
		if typ == "" {
			typ = eventstore.TypeText
		}
		created := at(&e.Header, st)
		if _, err := a.st[qInsMsg].ExecContext(ctx, int64(seq), e.ConversationID, e.SenderID, e.SenderName,
			nullable(e.SenderAvatar), e.Text, typ, e.ClientMsgID, created); err != nil {
			return fmt.Errorf("insert message: %w", err)
		}
		if err := a.recordKey(ctx, e, seq, created); err != nil {
			return err
		}
		c.lastMsg = int64(seq)
		a.touch(c, true)
		for uid, m := range c.members {
			if uid != e.SenderID && !m.removed {
				m.unread++
				m.dirty, m.changed = true, seq
			}
		}
	case *eventstore.Created:
		c, err := a.conv(ctx, e.ConversationID)
		if err != nil {
			return err
		}
		if c.exists {
			a.log.Warn("ignore second creation of a conversation", "seq", seq, "conversation_id", c.id, "created_seq", c.createdSeq)
			return nil
		}
		c.exists, c.createdSeq, c.createdAt = true, seq, at(&e.Header, st)
		for _, m := range e.Members {
			a.join(c, m.UserID, m.Role, seq)
		}
		a.touch(c, true)
	case *eventstore.MemberChanged:
		c, err := a.conv(ctx, e.ConversationID)
		if err != nil {
			return err
		}
		if !c.exists {
			a.log.Warn("ignore member change of an unknown conversation", "seq", seq, "conversation_id", c.id)
			return nil
		}
		m := c.member(e.UserID)
		switch {
		case e.Op == eventstore.OpRemove && m != nil:
			m.removed = true
		case e.Op == eventstore.OpAdd && m != nil:
			m.dirty = m.dirty || m.role != e.Role
			m.role = e.Role
		case e.Op == eventstore.OpAdd:
			a.join(c, e.UserID, e.Role, seq)
		}
		a.touch(c, false)
	case *eventstore.Read:
		return a.read(ctx, e, seq)
	case *eventstore.Profile:
		if _, err := a.st[qUpProfile].ExecContext(ctx, e.UserID, e.Name, nullable(e.Avatar), int64(seq)); err != nil {
			return fmt.Errorf("upsert profile: %w", err)
		}
	case *eventstore.Job:
		res, err := a.st[qInsJob].ExecContext(ctx, e.JobID, int64(seq), at(&e.Header, st))
		if err != nil {
			return fmt.Errorf("insert job: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			a.log.Warn("ignore second creation of a job", "seq", seq, "job_id", e.JobID)
			return nil
		}
		for _, uid := range e.Members {
			if _, err := a.st[qInsJobMember].ExecContext(ctx, e.JobID, uid); err != nil {
				return fmt.Errorf("insert job member: %w", err)
			}
		}
	case *eventstore.JobStatus:
		var detail any
		if len(e.Detail) > 0 {
			detail = string(e.Detail)
		}
		if _, err := a.st[qUpJobStatus].ExecContext(ctx, e.JobID, e.Status, detail, int64(seq), at(&e.Header, st)); err != nil {
			return fmt.Errorf("upsert job status: %w", err)
		}
	case *eventstore.Typing:
		// Ephemeral: delivered live, never stored.
	case *eventstore.Edit, *eventstore.Delete, *eventstore.React, *eventstore.Erased:
		return a.lifecycle(ctx, st)
	case *eventstore.ProfileErased:
		return a.profileErased(ctx, e)
	case *eventstore.Expired:
		return a.expire(ctx, e, seq)
	default:
		return fmt.Errorf("no projection for event kind %q", st.Event.Kind())
	}
	return nil
}

// recordKey records a request sent with an idempotency key (the latest
// event with that key wins: a key reused after the window names the new one).
func (a *applier) recordKey(ctx context.Context, e eventstore.KeyedEvent, seq uint64, created string) error {
	k, ok := e.Keyed()
	if !ok {
		return nil
	}
	a.db.keys.add(k.Key) // before the commit: the filter never misses a stored key
	if _, err := a.st[qUpKey].ExecContext(ctx, k.UserID, k.ConversationID, k.ClientKey, k.Op, k.Fingerprint, int64(seq), created); err != nil {
		return fmt.Errorf("record idempotency key: %w", err)
	}
	return nil
}

// join makes uid a member from seq on. Its read watermark starts at the
// join: history from before joining (or re-joining) is visible but never
// unread. A new member's count (0) is reported as a change, so a client that
// joins sees its badge reset.
func (a *applier) join(c *convState, uid, role string, seq uint64) {
	c.members[uid] = &memberState{role: role, joinedSeq: seq, readUpTo: int64(seq), reported: -1, dirty: true, changed: seq}
}

// read moves a member's watermark forward: to the highest of up_to and the
// named message ids (the service checked they are messages of the
// conversation), never past the receipt itself (so a watermark from the
// future cannot pre-read what comes later). The watermark depends on the
// receipt alone, not on which messages exist: a message erased or expired
// later leaves it as it was, as a rebuild without that message finds it.
// Others' messages it passes get is_read=1 and leave the reader's unread
// count (deleted ones no longer count).
func (a *applier) read(ctx context.Context, e *eventstore.Read, seq uint64) error {
	c, err := a.conv(ctx, e.ConversationID)
	if err != nil {
		return err
	}
	m := c.member(e.UserID)
	if m == nil {
		return nil
	}
	target := max(e.UpTo, m.readUpTo)
	if len(e.MessageIDs) > 0 {
		target = max(target, slices.Max(e.MessageIDs))
	}
	target = min(target, int64(seq))
	if target <= m.readUpTo {
		return nil
	}
	var n int64
	if err := a.st[qCountOthers].QueryRowContext(ctx, c.id, m.readUpTo, target, e.UserID).Scan(&n); err != nil {
		return fmt.Errorf("count read messages: %w", err)
	}
	if _, err := a.st[qMarkRead].ExecContext(ctx, c.id, m.readUpTo, target, e.UserID); err != nil {
		return fmt.Errorf("mark messages read: %w", err)
	}
	m.unread -= n
	m.readUpTo = target
	m.dirty, m.changed = true, seq
	a.touch(c, false)
	return nil
}

// touch records that c has state to flush; dirty marks its own row.
func (a *applier) touch(c *convState, dirty bool) {
	c.dirty = c.dirty || dirty
	if !c.touched {
		c.touched = true
		a.touched = append(a.touched, c)
	}
}

// conv returns the state of conversation id, loading it on first use.
func (a *applier) conv(ctx context.Context, id int64) (*convState, error) {
	if c := a.convs[id]; c != nil {
		return c, nil
	}
	c := &convState{id: id, members: make(map[string]*memberState)}
	var activity uint64 // derived: lastActivity()
	err := a.st[qSelConv].QueryRowContext(ctx, id).Scan(&c.createdSeq, &c.createdAt, &c.lastMsg, &activity)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		if err := a.st[qSelLastMsg].QueryRowContext(ctx, id).Scan(&c.lastMsg); err != nil {
			return nil, fmt.Errorf("load last message of conversation %d: %w", id, err)
		}
	case err != nil:
		return nil, fmt.Errorf("load conversation %d: %w", id, err)
	default:
		c.exists = true
		if err := a.loadMembers(ctx, c); err != nil {
			return nil, err
		}
	}
	a.convs[id] = c
	return c, nil
}

func (a *applier) loadMembers(ctx context.Context, c *convState) error {
	rows, err := a.st[qSelMembers].QueryContext(ctx, c.id)
	if err != nil {
		return fmt.Errorf("load members of conversation %d: %w", c.id, err)
	}
	defer rows.Close()
	for rows.Next() {
		var uid string
		m := &memberState{}
		if err := rows.Scan(&uid, &m.role, &m.joinedSeq, &m.readUpTo, &m.unread); err != nil {
			return fmt.Errorf("load members of conversation %d: %w", c.id, err)
		}
		m.reported = m.unread
		c.members[uid] = m
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("load members of conversation %d: %w", c.id, err)
	}
	return nil
}

// flush writes the touched conversations and members and returns the unread
// changes, in conversation then user order.
func (a *applier) flush(ctx context.Context) ([]UnreadChange, error) {
	var changes []UnreadChange
	for _, c := range a.touched {
		if c.exists && c.dirty {
			if _, err := a.st[qUpConv].ExecContext(ctx, c.id, int64(c.createdSeq), c.createdAt, c.lastMsg, int64(c.lastActivity())); err != nil {
				return nil, fmt.Errorf("store conversation %d: %w", c.id, err)
			}
		}
		for uid, m := range c.members {
			switch {
			case m.removed:
				if _, err := a.st[qDelMember].ExecContext(ctx, c.id, uid); err != nil {
					return nil, fmt.Errorf("remove member %s of conversation %d: %w", uid, c.id, err)
				}
				delete(c.members, uid)
				continue
			case m.dirty:
				if _, err := a.st[qUpMember].ExecContext(ctx, c.id, uid, m.role, int64(m.joinedSeq), m.readUpTo, m.unread); err != nil {
					return nil, fmt.Errorf("store member %s of conversation %d: %w", uid, c.id, err)
				}
			}
			if m.unread != m.reported || m.changed != m.reportedAt {
				changes = append(changes, UnreadChange{ConversationID: c.id, UserID: uid, Unread: m.unread, Seq: m.changed})
				m.reported, m.reportedAt = m.unread, m.changed
			}
			m.dirty = false
		}
		c.dirty, c.touched = false, false
	}
	a.touched = a.touched[:0]
	slices.SortFunc(changes, func(x, y UnreadChange) int {
		return cmp.Or(cmp.Compare(x.ConversationID, y.ConversationID), strings.Compare(x.UserID, y.UserID))
	})
	return changes, nil
}
