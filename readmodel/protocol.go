// Package readmodel serves inbox's SQLite read models over NATS
// request/reply, so that an edge (inboxd --role edge) keeps none: a
// projector (--role projector) answers for the partitions whose lease it
// holds (package lease) as the micro service inbox-readmodel, which the nats
// CLI lists (nats micro ls, info, stats); a Client on the edge asks the
// owner of each partition it needs and merges what spans several (a user's
// conversation list, a sender's messages). The Client is the read model
// behind the same small interfaces httpapi, chat and erasure ask a local
// projector, so they do not know which they have.
//
// Requests go to inbox.rm.<k>.<op> (eventstore.ReadModelSubject) as JSON;
// each carries Min, the partition's stream sequence the answer must
// include: the projector waits for it (at most Wait, bounded by its
// MaxWait) and answers with the header Inbox-Stale: true when it could not.
// Errors are micro's headers (Nats-Service-Error-Code: 400, 404, 500, 503,
// 504). The Client raises Min to every sequence a WaitFor saw applied, so a
// read after it never goes back, even when the partition's owner changes in
// between. Unread counts go the other way: the owner publishes each
// batch's changes on inbox.unread.<conversation>, and edges push them to
// their sockets.
package readmodel

import (
	"time"

	"inbox/eventstore"
	"inbox/projections"
)

// ServiceName is the micro service's name; each projector is an instance.
const ServiceName = "inbox-readmodel"

// Version is the service's version (semver, as micro wants): its wire.
const Version = "1.0.0"

// Operations: the last token of a request's subject.
const (
	opConversations = "conversations"
	opMessages      = "messages"
	opKey           = "key"
	opMsgConvs      = "msgconvs"
	opMsgState      = "msgstate"
	opMsgsBy        = "msgsby"
	opWait          = "wait"
	opCovers        = "covers"
	opApplied       = "applied"
	opSnapshot      = "snapshot"
)

// StaleHeader is set on an answer that does not include the Min asked for.
const StaleHeader = "Inbox-Stale"

// Error codes, in micro's Nats-Service-Error-Code header.
const (
	codeBadRequest  = "400"
	codeInternal    = "500"
	codeUnavailable = "503" // the partition is not served here (any more)
	codeTimeout     = "504" // a wait ran out
)

// request is every request's body; each operation reads its fields.
type request struct {
	// Min is the partition's stream sequence the answer must include (0:
	// any); WaitMS bounds the wait for it and for a wait request.
	Min    uint64 `json:"min,omitempty"`
	WaitMS int64  `json:"wait_ms,omitempty"`

	UserID         string           `json:"user_id,omitempty"`
	ConversationID int64            `json:"conversation_id,omitempty"`
	Before         int64            `json:"before,omitempty"`
	Limit          int              `json:"limit,omitempty"`
	Key            *eventstore.Key  `json:"key,omitempty"`
	IDs            []int64          `json:"ids,omitempty"`
	ID             int64            `json:"id,omitempty"`
	Seq            uint64           `json:"seq,omitempty"` // wait: the partition's sequence
	Time           time.Time        `json:"time,omitzero"` // covers
	Snapshot       *snapshotRequest `json:"snapshot,omitempty"`
}

// snapshotRequest asks for the snapshot in chunks of at most ChunkBytes.
type snapshotRequest struct {
	ChunkBytes int `json:"chunk_bytes"`
}

// conversation is a list entry with the order it is merged by.
type conversation struct {
	projections.Conversation
	Activity   int64  `json:"activity"`
	ActivityAt string `json:"activity_at,omitempty"`
}

// response is every answer's body; each operation fills its fields.
// Applied is the partition's applied sequence when it answered.
type response struct {
	Applied uint64 `json:"applied"`

	Conversations []conversation            `json:"conversations,omitempty"`
	Messages      []projections.Message     `json:"messages,omitempty"`
	Found         bool                      `json:"found,omitempty"`
	Record        *eventstore.KeyRecord     `json:"record,omitempty"`
	Convs         map[int64]int64           `json:"convs,omitempty"`
	State         *eventstore.MessageState  `json:"state,omitempty"`
	States        []eventstore.MessageState `json:"states,omitempty"`
	Covered       bool                      `json:"covered,omitempty"`
	Horizon       time.Time                 `json:"horizon,omitzero"` // covers: held up to here
}

// snapshotChunk is one message of a snapshot answer; the last has Done.
type snapshotChunk struct {
	Applied       uint64                         `json:"applied,omitempty"`
	Conversations map[int64][]projections.Member `json:"conversations,omitempty"`
	Profiles      []projections.Profile          `json:"profiles,omitempty"`
	Jobs          map[int64][]string             `json:"jobs,omitempty"`
	Done          bool                           `json:"done,omitempty"`
}

// unreadBatch is what a projector publishes on inbox.unread.<conversation>:
// the unread counts of its members that one batch changed.
type unreadBatch struct {
	ConversationID int64         `json:"conversation_id"`
	Changes        []unreadCount `json:"changes"`
}

type unreadCount struct {
	UserID string `json:"user_id"`
	Unread int64  `json:"unread"`
	Seq    uint64 `json:"seq"` // the event that last changed it
}
