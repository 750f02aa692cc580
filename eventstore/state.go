package eventstore

import "time"

// MessageState is what a read model holds of one message: what the service
// checks an edit, a deletion, a reaction or an erasure against.
type MessageState struct {
	ID             int64
	ConversationID int64
	SenderID       string
	MsgType        string
	SentAt         time.Time // created_at, whole seconds
	Edited         bool
	Deleted        bool
	Erased         bool
	// LifeSeq is the last event of the message's lifecycle applied (0:
	// none): the next one is appended expecting it (ExpectLast).
	LifeSeq uint64
	// Reactions are the asking user's emoji on the message.
	Reactions []string
}
