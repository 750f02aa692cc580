package eventstore

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"net/url"
	"strconv"
	"time"
)

// Keyed operations: what a request sent with an idempotency key did.
const (
	OpSend   = "send"   // a message (client_msg_id, Idempotency-Key)
	OpEdit   = "edit"   // an edit of a message
	OpDelete = "delete" // a deletion of a message
	OpReact  = "react"  // a reaction added or removed
)

// Key is a client's idempotency key, scoped to the user who sent it and the
// conversation it was sent to: the same key from another user, or in another
// conversation, is another key.
type Key struct {
	UserID         string
	ConversationID int64
	ClientKey      string // client_msg_id, or the HTTP Idempotency-Key
}

// MsgID is the Nats-Msg-Id a request with k is appended under, so a retry
// within the stream's duplicate window stores nothing new:
// m:<user>:<conversation>:<key>. It does not name the operation: one key
// is one request in its conversation, whatever that request does. The key
// is query-escaped: nats.go trims a header value and turns CR and LF into
// spaces, so "c-1", " c-1" and "c-1\n" would otherwise share an id.
func (k Key) MsgID() string {
	return "m:" + k.UserID + ":" + strconv.FormatInt(k.ConversationID, 10) + ":" + url.QueryEscape(k.ClientKey)
}

// Keyed describes an event that a client sent with an idempotency key.
type Keyed struct {
	Key
	Op          string // OpSend, ...
	Fingerprint string // Fingerprint of the request's content: the same key with another is a conflict
}

// KeyedEvent is an event a client may send with an idempotency key.
type KeyedEvent interface {
	Event
	// Keyed describes the request; ok is false when it carries no key.
	Keyed() (k Keyed, ok bool)
}

// KeyRecord is a keyed request as stored: the event at Seq, created At.
type KeyRecord struct {
	Keyed
	Seq uint64
	At  time.Time
}

// Fingerprint hashes the parts of a request's content: hex SHA-256 over
// each part's length (8 bytes, big-endian) and bytes, so no two lists of
// parts share an input, whatever bytes they hold. The service and the read
// model compute it from the same fields of the event, so a read model
// rebuilt from the stream records the same value.
func Fingerprint(parts ...string) string {
	h := sha256.New()
	var n [8]byte
	for _, p := range parts {
		binary.BigEndian.PutUint64(n[:], uint64(len(p)))
		h.Write(n[:])
		h.Write([]byte(p))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Keyed describes a message sent with a client_msg_id: its fingerprint
// covers the type (TEXT when empty) and the text.
func (e *Message) Keyed() (Keyed, bool) {
	if e.ClientMsgID == "" {
		return Keyed{}, false
	}
	typ := e.MsgType
	if typ == "" {
		typ = TypeText
	}
	return Keyed{
		Key:         Key{UserID: e.SenderID, ConversationID: e.ConversationID, ClientKey: e.ClientMsgID},
		Op:          OpSend,
		Fingerprint: Fingerprint(typ, e.Text),
	}, true
}

// Keyed describes an edit sent with a key: its fingerprint covers the
// message edited and the new text.
func (e *Edit) Keyed() (Keyed, bool) {
	return keyedOp(e.UserID, e.ConversationID, e.ClientMsgID, OpEdit, strconv.FormatInt(e.MessageID, 10), e.Text)
}

// Keyed describes a deletion sent with a key: its fingerprint covers the
// message deleted.
func (e *Delete) Keyed() (Keyed, bool) {
	return keyedOp(e.UserID, e.ConversationID, e.ClientMsgID, OpDelete, strconv.FormatInt(e.MessageID, 10))
}

// Keyed describes a reaction sent with a key: its fingerprint covers the
// message, the emoji and whether it is added or removed.
func (e *React) Keyed() (Keyed, bool) {
	return keyedOp(e.UserID, e.ConversationID, e.ClientMsgID, OpReact, strconv.FormatInt(e.MessageID, 10), e.Emoji, strconv.FormatBool(e.On))
}

func keyedOp(user string, conv int64, key, op string, parts ...string) (Keyed, bool) {
	if key == "" {
		return Keyed{}, false
	}
	return Keyed{
		Key:         Key{UserID: user, ConversationID: conv, ClientKey: key},
		Op:          op,
		Fingerprint: Fingerprint(parts...),
	}, true
}

var (
	_ KeyedEvent = (*Message)(nil)
	_ KeyedEvent = (*Edit)(nil)
	_ KeyedEvent = (*Delete)(nil)
	_ KeyedEvent = (*React)(nil)
)
