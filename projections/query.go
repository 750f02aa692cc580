package projections

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"

	"inbox/eventstore"
)

// Member is a conversation member and its role.
type Member struct {
	UserID string `json:"user_id"`
	Role   string `json:"role"`
}

// Message is a stored message in the wire shape of the socket's message
// frame; ID, MessageID and Seq are all its stream sequence. EditedAt is when
// it was last edited (nil: never); a deleted one has no text, no reactions
// and no EditedAt. Reactions are the emoji on it with who reacted, first
// reactor first; never nil.
type Message struct {
	ID             int64               `json:"id"`
	ConversationID int64               `json:"conversation_id"`
	SenderID       string              `json:"sender_id"`
	SenderName     string              `json:"sender_name"`
	SenderAvatar   *string             `json:"sender_avatar"`
	Text           string              `json:"message"`
	Type           string              `json:"type"`
	CreatedAt      string              `json:"created_at"` // RFC3339 UTC, "2025-01-15T10:30:00Z"
	MessageID      int64               `json:"message_id"`
	Seq            int64               `json:"seq"`
	ClientMsgID    string              `json:"client_msg_id,omitempty"`
	IsRead         bool                `json:"is_read"` // read by a recipient
	EditedAt       *string             `json:"edited_at"`
	Deleted        bool                `json:"deleted"`
	Reactions      map[string][]string `json:"reactions"`
}

// Conversation is one entry of a user's conversation list.
type Conversation struct {
	ID          int64    `json:"id"`
	Members     []Member `json:"members"`
	LastMessage *Message `json:"last_message"`
	Unread      int64    `json:"unread"`
	// Activity is the id of the conversation's creation or of its last
	// message, whichever is later, and ActivityAt that event's time as
	// stored: the list's order (see byActivityTime). Not on the wire of the
	// API; lists of several read models are merged by them
	// (MergeConversations).
	Activity   int64  `json:"-"`
	ActivityAt string `json:"-"`
}

// MergeConversations merges the conversation lists of one user from the
// read models of several partitions (an edge gathers them) into the order
// one read model of all of them lists them in: newest activity time first,
// then highest activity id, then highest conversation id.
func MergeConversations(lists ...[]Conversation) []Conversation {
	n := 0
	for _, l := range lists {
		n += len(l)
	}
	out := make([]Conversation, 0, n)
	for _, l := range lists {
		out = append(out, l...)
	}
	slices.SortStableFunc(out, func(a, b Conversation) int {
		if c := strings.Compare(b.ActivityAt, a.ActivityAt); c != 0 {
			return c
		}
		if c := cmp.Compare(b.Activity, a.Activity); c != 0 {
			return c
		}
		return cmp.Compare(b.ID, a.ID)
	})
	return out
}

// Profile is a user's display name and avatar.
type Profile struct {
	UserID string  `json:"user_id"`
	Name   string  `json:"name"`
	Avatar *string `json:"avatar"`
}

// Snapshot is the membership directory at one applied position.
type Snapshot struct {
	Applied       eventstore.Cursor // the last sequence applied from each partition
	Conversations map[int64][]Member
	Profiles      map[string]Profile
	Jobs          map[int64][]string
}

const messageColumns = `m.id, m.conversation_id, m.sender_id, m.sender_name, m.sender_avatar, m.text, m.type, m.client_msg_id, m.created_at, m.is_read,
	m.edited_at, m.deleted`

func scanMessage(sc interface{ Scan(...any) error }) (Message, error) {
	var m Message
	var avatar, edited sql.NullString
	err := sc.Scan(&m.ID, &m.ConversationID, &m.SenderID, &m.SenderName, &avatar, &m.Text, &m.Type, &m.ClientMsgID, &m.CreatedAt, &m.IsRead,
		&edited, &m.Deleted)
	if avatar.Valid {
		m.SenderAvatar = &avatar.String
	}
	if edited.Valid {
		m.EditedAt = &edited.String
	}
	m.MessageID, m.Seq = m.ID, m.ID
	m.Reactions = map[string][]string{}
	return m, err
}

// loadReactions fills in the reactions of msgs.
func loadReactions(ctx context.Context, q interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}, msgs []*Message) error {
	if len(msgs) == 0 {
		return nil
	}
	byID := make(map[int64]*Message, len(msgs))
	args := make([]any, len(msgs))
	for i, m := range msgs {
		byID[m.ID] = m
		args[i] = m.ID
	}
	rows, err := q.QueryContext(ctx, `SELECT message_id, emoji, user_id FROM reactions WHERE message_id IN (?`+
		strings.Repeat(", ?", len(msgs)-1)+`) ORDER BY message_id, seq`, args...)
	if err != nil {
		return fmt.Errorf("reactions: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id int64
		var emoji, user string
		if err := rows.Scan(&id, &emoji, &user); err != nil {
			return fmt.Errorf("reactions: %w", err)
		}
		if m := byID[id]; m != nil {
			m.Reactions[emoji] = append(m.Reactions[emoji], user)
		}
	}
	return rows.Err()
}

// Conversations returns userID's conversations with their members, last
// message and the user's unread count, newest activity first.
func (db *DB) Conversations(ctx context.Context, userID string) ([]Conversation, error) {
	tx, err := db.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("conversations of %s: %w", userID, err)
	}
	defer tx.Rollback()
	convs, err := queryConversations(ctx, tx, userID, db.n > 1)
	if err != nil {
		return nil, fmt.Errorf("conversations of %s: %w", userID, err)
	}
	return convs, nil
}

// Conversation lists are ordered by last activity (a conversation's
// creation or its last message), newest first. With one partition the
// activity's id is its order. With more, ids of different partitions are
// sequences of different streams, not in time order: the list is ordered by
// the activity's time (whole seconds, as stored), then its id.
// MergeConversations merges lists of several read models by the same order.
const (
	activityTime   = `CASE WHEN c.last_message_id > c.created_seq THEN lm.created_at ELSE c.created_at END`
	byActivitySeq  = `ORDER BY c.last_activity_seq DESC, c.id DESC`
	byActivityTime = `ORDER BY ` + activityTime + ` DESC, c.last_activity_seq DESC, c.id DESC`
)

func queryConversations(ctx context.Context, tx *sql.Tx, userID string, partitioned bool) ([]Conversation, error) {
	order := byActivitySeq
	if partitioned {
		order = byActivityTime
	}
	rows, err := tx.QueryContext(ctx, `
		SELECT c.id, me.unread, c.last_activity_seq, `+activityTime+` FROM members me JOIN conversations c ON c.id = me.conversation_id
		LEFT JOIN messages lm ON lm.id = c.last_message_id
		WHERE me.user_id = ? `+order, userID)
	if err != nil {
		return nil, err
	}
	var convs []Conversation
	index := make(map[int64]int)
	for rows.Next() {
		var c Conversation
		var at sql.NullString // no row: a last message gone (retention, erasure)
		if err := rows.Scan(&c.ID, &c.Unread, &c.Activity, &at); err != nil {
			rows.Close()
			return nil, err
		}
		c.ActivityAt = at.String
		index[c.ID] = len(convs)
		convs = append(convs, c)
	}
	if err := rows.Close(); err != nil {
		return nil, err
	}
	if len(convs) == 0 {
		return []Conversation{}, nil
	}
	rows, err = tx.QueryContext(ctx, `
		SELECT o.conversation_id, o.user_id, o.role FROM members me JOIN members o ON o.conversation_id = me.conversation_id
		WHERE me.user_id = ? ORDER BY o.conversation_id, o.joined_seq, o.user_id`, userID)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var id int64
		var m Member
		if err := rows.Scan(&id, &m.UserID, &m.Role); err != nil {
			rows.Close()
			return nil, err
		}
		if i, ok := index[id]; ok {
			convs[i].Members = append(convs[i].Members, m)
		}
	}
	if err := rows.Close(); err != nil {
		return nil, err
	}
	rows, err = tx.QueryContext(ctx, `
		SELECT `+messageColumns+` FROM members me JOIN conversations c ON c.id = me.conversation_id
		JOIN messages m ON m.id = c.last_message_id WHERE me.user_id = ?`, userID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var last []*Message
	for rows.Next() {
		msg, err := scanMessage(rows)
		if err != nil {
			return nil, err
		}
		if i, ok := index[msg.ConversationID]; ok {
			convs[i].LastMessage = &msg
			last = append(last, &msg)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if err := loadReactions(ctx, tx, last); err != nil {
		return nil, err
	}
	return convs, nil
}

// Messages returns up to limit messages of a conversation, newest first,
// with ids below before (0: from the latest). limit <= 0 means 50.
func (db *DB) Messages(ctx context.Context, convID, before int64, limit int) ([]Message, error) {
	if limit <= 0 {
		limit = 50
	}
	if before <= 0 {
		before = 1<<63 - 1
	}
	tx, err := db.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("messages of conversation %d: %w", convID, err)
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, `SELECT `+messageColumns+` FROM messages m
		WHERE m.conversation_id = ? AND m.id < ? ORDER BY m.id DESC LIMIT ?`, convID, before, limit)
	if err != nil {
		return nil, fmt.Errorf("messages of conversation %d: %w", convID, err)
	}
	defer rows.Close()
	msgs := []Message{}
	for rows.Next() {
		m, err := scanMessage(rows)
		if err != nil {
			return nil, fmt.Errorf("messages of conversation %d: %w", convID, err)
		}
		msgs = append(msgs, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("messages of conversation %d: %w", convID, err)
	}
	ptrs := make([]*Message, len(msgs))
	for i := range msgs {
		ptrs[i] = &msgs[i]
	}
	if err := loadReactions(ctx, tx, ptrs); err != nil {
		return nil, fmt.Errorf("messages of conversation %d: %w", convID, err)
	}
	return msgs, nil
}

// IsMember reports whether userID is a member of conversation convID.
func (db *DB) IsMember(ctx context.Context, convID int64, userID string) (bool, error) {
	_, err := db.Unread(ctx, convID, userID)
	switch {
	case errors.Is(err, ErrNotFound):
		return false, nil
	case err != nil:
		return false, err
	}
	return true, nil
}

// Unread is userID's unread count in conversation convID; ErrNotFound if
// userID is not a member.
func (db *DB) Unread(ctx context.Context, convID int64, userID string) (int64, error) {
	var n int64
	err := db.r.QueryRowContext(ctx, `SELECT unread FROM members WHERE conversation_id = ? AND user_id = ?`, convID, userID).Scan(&n)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return 0, fmt.Errorf("member %s of conversation %d: %w", userID, convID, ErrNotFound)
	case err != nil:
		return 0, fmt.Errorf("member %s of conversation %d: %w", userID, convID, err)
	}
	return n, nil
}

// Profile is userID's profile; ErrNotFound if none was set.
func (db *DB) Profile(ctx context.Context, userID string) (Profile, error) {
	p := Profile{UserID: userID}
	var avatar sql.NullString
	err := db.r.QueryRowContext(ctx, `SELECT name, avatar FROM profiles WHERE user_id = ?`, userID).Scan(&p.Name, &avatar)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return Profile{}, fmt.Errorf("profile of %s: %w", userID, ErrNotFound)
	case err != nil:
		return Profile{}, fmt.Errorf("profile of %s: %w", userID, err)
	}
	if avatar.Valid {
		p.Avatar = &avatar.String
	}
	return p, nil
}

// AppliedSeqs is the last stream sequence of each partition committed to
// the database, read from the file (Applied is this process's view).
func (db *DB) AppliedSeqs(ctx context.Context) (eventstore.Cursor, error) {
	tx, err := db.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("applied sequences: %w", err)
	}
	defer tx.Rollback()
	return db.appliedIn(ctx, tx)
}

// appliedIn reads the applied sequences in tx.
func (db *DB) appliedIn(ctx context.Context, tx *sql.Tx) (eventstore.Cursor, error) {
	c := eventstore.NewCursor(db.n)
	err := each(ctx, tx, `SELECT k, seq FROM applied`, func(rows *sql.Rows) error {
		var k int
		var seq uint64
		if err := rows.Scan(&k, &seq); err != nil {
			return err
		}
		if k >= 0 && k < len(c) {
			c[k] = seq
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("applied sequences: %w", err)
	}
	return c, nil
}

// Snapshot reads, in one transaction, the applied sequences with every
// conversation's members, every profile and every job's members: the edge
// loads its directory from it, then tails the stream after Applied.
func (db *DB) Snapshot(ctx context.Context) (*Snapshot, error) {
	tx, err := db.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	defer tx.Rollback()
	s := &Snapshot{
		Conversations: make(map[int64][]Member),
		Profiles:      make(map[string]Profile),
		Jobs:          make(map[int64][]string),
	}
	if s.Applied, err = db.appliedIn(ctx, tx); err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	if err := each(ctx, tx, `SELECT c.id, m.user_id, m.role FROM conversations c LEFT JOIN members m ON m.conversation_id = c.id
		ORDER BY c.id, m.joined_seq, m.user_id`, func(rows *sql.Rows) error {
		var id int64
		var uid, role sql.NullString
		if err := rows.Scan(&id, &uid, &role); err != nil {
			return err
		}
		ms := s.Conversations[id]
		if uid.Valid {
			ms = append(ms, Member{UserID: uid.String, Role: role.String})
		}
		s.Conversations[id] = ms
		return nil
	}); err != nil {
		return nil, fmt.Errorf("snapshot: members: %w", err)
	}
	if err := each(ctx, tx, `SELECT user_id, name, avatar FROM profiles`, func(rows *sql.Rows) error {
		var p Profile
		var avatar sql.NullString
		if err := rows.Scan(&p.UserID, &p.Name, &avatar); err != nil {
			return err
		}
		if avatar.Valid {
			p.Avatar = &avatar.String
		}
		s.Profiles[p.UserID] = p
		return nil
	}); err != nil {
		return nil, fmt.Errorf("snapshot: profiles: %w", err)
	}
	if err := each(ctx, tx, `SELECT j.id, m.user_id FROM jobs j LEFT JOIN job_members m ON m.job_id = j.id ORDER BY j.id, m.user_id`, func(rows *sql.Rows) error {
		var id int64
		var uid sql.NullString
		if err := rows.Scan(&id, &uid); err != nil {
			return err
		}
		ms := s.Jobs[id]
		if uid.Valid {
			ms = append(ms, uid.String)
		}
		s.Jobs[id] = ms
		return nil
	}); err != nil {
		return nil, fmt.Errorf("snapshot: jobs: %w", err)
	}
	return s, nil
}

// each runs fn on every row of query.
func each(ctx context.Context, tx *sql.Tx, query string, fn func(*sql.Rows) error, args ...any) error {
	rows, err := tx.QueryContext(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := fn(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}

// Conversations is the database's Conversations.
func (p *Projector) Conversations(ctx context.Context, userID string) ([]Conversation, error) {
	return p.db.Conversations(ctx, userID)
}

// Messages is the database's Messages.
func (p *Projector) Messages(ctx context.Context, convID, before int64, limit int) ([]Message, error) {
	return p.db.Messages(ctx, convID, before, limit)
}

// Snapshot is the database's Snapshot.
func (p *Projector) Snapshot(ctx context.Context) (*Snapshot, error) { return p.db.Snapshot(ctx) }
