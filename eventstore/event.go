package eventstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	gojson "github.com/goccy/go-json"
)

// SchemaVersion is the payload version this build writes and the highest it reads.
const SchemaVersion = 1

// Kind names an event type. It is also the last token of the event's subject,
// so a reader knows the payload's shape before decoding it.
type Kind string

const (
	KindCreated Kind = "created" // inbox.conv.<id>.created
	KindMember  Kind = "member"  // inbox.conv.<id>.member
	KindMessage Kind = "msg"     // inbox.conv.<id>.msg
	KindTyping  Kind = "typing"  // inbox.conv.<id>.typing
	KindRead    Kind = "read"    // inbox.conv.<id>.read
	KindProfile Kind = "profile" // inbox.user.<user>.profile
	KindJob     Kind = "job"     // inbox.job.<id>.created
	KindStatus  Kind = "status"  // inbox.job.<id>.status

	// A message's lifecycle: every event about message <m> of conversation
	// <id> is on inbox.conv.<id>.msg.<m>.<kind>, so one subject filter
	// (LifecycleFilter) orders them and an append can expect the last of
	// them (ExpectLast).
	KindEdit   Kind = "edit"   // inbox.conv.<id>.msg.<m>.edit
	KindDelete Kind = "delete" // inbox.conv.<id>.msg.<m>.delete
	KindReact  Kind = "react"  // inbox.conv.<id>.msg.<m>.react
	KindErase  Kind = "erase"  // inbox.conv.<id>.msg.<m>.erase (a message), inbox.user.<user>.erase (a profile)

	KindExpire Kind = "expire" // inbox.sys.expire: retention purged the messages below a sequence
)

// Member roles.
const (
	RoleClient = "client"
	RoleWorker = "worker"
	RoleMember = "member"
)

// Message types.
const (
	TypeText   = "TEXT"
	TypeImage  = "IMAGE"
	TypeFile   = "FILE"
	TypeSystem = "SYSTEM" // posted through the service API; sender is SystemSender
)

// SystemSender is the sender id of system messages. It is a reserved user
// id (see ReservedUserID).
const SystemSender = "system"

// ReservedUserID reports whether id is reserved for the service itself:
// SystemSender, in any letter case. No token, member or profile may use a
// reserved id, so nobody can pass for the sender of system messages.
func ReservedUserID(id string) bool { return strings.EqualFold(id, SystemSender) }

// Member operations.
const (
	OpAdd    = "add"
	OpRemove = "remove"
)

var userIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ValidUserID reports whether id is a well-formed user id ([A-Za-z0-9_-]{1,64}).
// User ids appear in subjects, so nothing else is allowed.
func ValidUserID(id string) bool { return userIDPattern.MatchString(id) }

// ValidRole reports whether r is a known member role.
func ValidRole(r string) bool { return r == RoleClient || r == RoleWorker || r == RoleMember }

// ValidMessageType reports whether t is a message type a client may send.
func ValidMessageType(t string) bool { return t == TypeText || t == TypeImage || t == TypeFile }

// MaxID is the largest conversation id, job id, message id and stream
// sequence on the wire: 2^53−1, the largest integer a JavaScript number holds
// exactly. A larger one from a client is refused, and ids are never assigned
// past it.
const MaxID = 1<<53 - 1

// ValidID reports whether id is a positive id no larger than MaxID.
func ValidID(id int64) bool { return id > 0 && id <= MaxID }

// Event is one state change appended to the stream.
type Event interface {
	// Subject is the stream subject the event is appended to.
	Subject() string
	// Kind is the event type; the subject's last token.
	Kind() Kind
	header() *Header
}

// Header is carried by every payload: the schema version, the kind (for humans
// reading `nats stream view`) and the time the event was created.
type Header struct {
	V    int       `json:"v"`
	Type Kind      `json:"type"`
	At   time.Time `json:"at"`
}

func (h *Header) header() *Header { return h }

// Member is one conversation member and its role.
type Member struct {
	UserID string `json:"user_id"`
	Role   string `json:"role"`
}

// Created starts a conversation with its first members.
type Created struct {
	Header
	ConversationID int64    `json:"conversation_id"`
	Members        []Member `json:"members"`
}

// MemberChanged adds a member (or changes its role) or removes one.
type MemberChanged struct {
	Header
	ConversationID int64  `json:"conversation_id"`
	Op             string `json:"op"`
	UserID         string `json:"user_id"`
	Role           string `json:"role,omitempty"`
}

// Message is a sent message. Its id is the stream sequence it is stored at.
type Message struct {
	Header
	ConversationID int64   `json:"conversation_id"`
	SenderID       string  `json:"sender_id"`
	SenderName     string  `json:"sender_name"`
	SenderAvatar   *string `json:"sender_avatar"`
	Text           string  `json:"message"`
	MsgType        string  `json:"msg_type"`
	ClientMsgID    string  `json:"client_msg_id,omitempty"`
}

// Typing is a typing indicator; it is appended with a short per-message TTL.
type Typing struct {
	Header
	ConversationID int64     `json:"conversation_id"`
	UserID         string    `json:"user_id"`
	IsTyping       bool      `json:"is_typing"`
	ExpiresAt      time.Time `json:"expires_at,omitzero"`
}

// Read is a read receipt: the reader has read the conversation up to UpTo,
// naming MessageIDs explicitly when the client did.
type Read struct {
	Header
	ConversationID int64   `json:"conversation_id"`
	UserID         string  `json:"user_id"`
	UpTo           int64   `json:"up_to"`
	MessageIDs     []int64 `json:"message_ids,omitempty"`
}

// Profile sets a user's display name and avatar.
type Profile struct {
	Header
	UserID string  `json:"user_id"`
	Name   string  `json:"name"`
	Avatar *string `json:"avatar"`
}

// Job creates a job whose members may follow its status on /ws/job/<id>/.
type Job struct {
	Header
	JobID   int64    `json:"job_id"`
	Members []string `json:"members"`
}

// JobStatus is a job status update.
type JobStatus struct {
	Header
	JobID  int64           `json:"job_id"`
	Status string          `json:"status"`
	Detail json.RawMessage `json:"detail,omitempty"`
}

// Edit replaces the text of message MessageID. UserID is who edited it: its
// sender, or SystemSender for the service API.
type Edit struct {
	Header
	ConversationID int64  `json:"conversation_id"`
	MessageID      int64  `json:"message_id"`
	UserID         string `json:"user_id"`
	Text           string `json:"message"`
	ClientMsgID    string `json:"client_msg_id,omitempty"`
}

// Delete deletes message MessageID: readers see it with no text. The
// message's events stay in the stream (an erasure removes them).
type Delete struct {
	Header
	ConversationID int64  `json:"conversation_id"`
	MessageID      int64  `json:"message_id"`
	UserID         string `json:"user_id"`
	ClientMsgID    string `json:"client_msg_id,omitempty"`
}

// React adds (On) or removes UserID's reaction Emoji to message MessageID.
type React struct {
	Header
	ConversationID int64  `json:"conversation_id"`
	MessageID      int64  `json:"message_id"`
	UserID         string `json:"user_id"`
	Emoji          string `json:"emoji"`
	On             bool   `json:"on"`
	ClientMsgID    string `json:"client_msg_id,omitempty"`
}

// Erased is the tombstone of an erased message: appended before the
// message's events are securely deleted from the stream, it holds no
// content, only what a read model needs to show the message as deleted
// (docs/erasure.md). Seqs are the erased events: the message and its edits.
type Erased struct {
	Header
	ConversationID int64     `json:"conversation_id"`
	MessageID      int64     `json:"message_id"`
	SenderID       string    `json:"sender_id"`
	MsgType        string    `json:"msg_type"`
	SentAt         time.Time `json:"sent_at"`
	Seqs           []uint64  `json:"seqs"`
}

// ProfileErased is the tombstone of a user's erased profile events (Seqs).
type ProfileErased struct {
	Header
	UserID string   `json:"user_id"`
	Seqs   []uint64 `json:"seqs"`
}

// Expired says that retention purged every message below sequence Before
// from the stream, with the events of their lifecycle below it.
type Expired struct {
	Header
	Before uint64 `json:"before"`
}

func (e *Created) Kind() Kind       { return KindCreated }
func (e *MemberChanged) Kind() Kind { return KindMember }
func (e *Message) Kind() Kind       { return KindMessage }
func (e *Typing) Kind() Kind        { return KindTyping }
func (e *Read) Kind() Kind          { return KindRead }
func (e *Profile) Kind() Kind       { return KindProfile }
func (e *Job) Kind() Kind           { return KindJob }
func (e *JobStatus) Kind() Kind     { return KindStatus }
func (e *Edit) Kind() Kind          { return KindEdit }
func (e *Delete) Kind() Kind        { return KindDelete }
func (e *React) Kind() Kind         { return KindReact }
func (e *Erased) Kind() Kind        { return KindErase }
func (e *ProfileErased) Kind() Kind { return KindErase }
func (e *Expired) Kind() Kind       { return KindExpire }

func (e *Created) Subject() string       { return ConvSubject(e.ConversationID, KindCreated) }
func (e *MemberChanged) Subject() string { return ConvSubject(e.ConversationID, KindMember) }
func (e *Message) Subject() string       { return ConvSubject(e.ConversationID, KindMessage) }
func (e *Typing) Subject() string        { return ConvSubject(e.ConversationID, KindTyping) }
func (e *Read) Subject() string          { return ConvSubject(e.ConversationID, KindRead) }
func (e *Profile) Subject() string       { return UserSubject(e.UserID, KindProfile) }
func (e *Job) Subject() string           { return JobSubject(e.JobID, "created") }
func (e *JobStatus) Subject() string     { return JobSubject(e.JobID, KindStatus) }

func (e *Edit) Subject() string   { return MessageSubject(e.ConversationID, e.MessageID, KindEdit) }
func (e *Delete) Subject() string { return MessageSubject(e.ConversationID, e.MessageID, KindDelete) }
func (e *React) Subject() string  { return MessageSubject(e.ConversationID, e.MessageID, KindReact) }
func (e *Erased) Subject() string { return MessageSubject(e.ConversationID, e.MessageID, KindErase) }
func (e *ProfileErased) Subject() string {
	return UserSubject(e.UserID, KindErase)
}
func (e *Expired) Subject() string { return "inbox.sys." + string(KindExpire) }

// ConvSubject is the subject of a conversation event.
func ConvSubject(id int64, k Kind) string {
	return "inbox.conv." + strconv.FormatInt(id, 10) + "." + string(k)
}

// AllConvs matches the events of kind k of every conversation.
func AllConvs(k Kind) string { return "inbox.conv.*." + string(k) }

// JobSubject is the subject of a job event: its creation (k "created", the
// seed's subject for KindJob) or a status.
func JobSubject(id int64, k Kind) string {
	return "inbox.job." + strconv.FormatInt(id, 10) + "." + string(k)
}

// MessageSubject is the subject of a lifecycle event (edit, delete, react,
// erase) of message msg in conversation conv.
func MessageSubject(conv, msg int64, k Kind) string {
	return ConvSubject(conv, KindMessage) + "." + strconv.FormatInt(msg, 10) + "." + string(k)
}

// LifecycleFilter matches every lifecycle event of message msg.
func LifecycleFilter(conv, msg int64) string {
	return ConvSubject(conv, KindMessage) + "." + strconv.FormatInt(msg, 10) + ".*"
}

// LifecyclesFilter matches the lifecycle events of every message of conv.
func LifecyclesFilter(conv int64) string { return ConvSubject(conv, KindMessage) + ".*.*" }

// EditsFilter matches the edits of every message of conv.
func EditsFilter(conv int64) string { return ConvSubject(conv, KindMessage) + ".*." + string(KindEdit) }

// UserSubject is the subject of a user event (profile, erase).
func UserSubject(user string, k Kind) string { return "inbox.user." + user + "." + string(k) }

// Filters over every conversation: what retention purges (messages, and
// the events of their lifecycle).
const (
	AllMessages   = "inbox.conv.*." + string(KindMessage)
	AllLifecycles = "inbox.conv.*.msg.*.*"
)

// Stream subjects: everything inbox appends lives under these.
var streamSubjects = []string{"inbox.conv.*.*", AllLifecycles, "inbox.user.*.*", "inbox.job.*.*", "inbox.sys.*"}

// Errors returned by Decode. All of them wrap ErrBadEvent.
var (
	ErrBadEvent      = errors.New("bad event")
	ErrUnknownKind   = fmt.Errorf("%w: unknown kind", ErrBadEvent)
	ErrFutureVersion = fmt.Errorf("%w: schema version from the future", ErrBadEvent)
)

// Encode returns the JSON payload of e, stamping its header.
func Encode(e Event) ([]byte, error) {
	h := e.header()
	h.V = SchemaVersion
	h.Type = e.Kind()
	if h.At.IsZero() {
		h.At = time.Now().UTC()
	}
	return json.Marshal(e)
}

// Decode parses a stored event (with goccy/go-json: replay spends much of its
// time here, and it decodes about twice as fast as encoding/json). The subject picks the payload's type; the payload's
// version, kind and ids must agree with it. Anything else is an ErrBadEvent.
func Decode(subject string, data []byte) (_ Event, err error) {
	// The payload is untrusted (anyone with stream access can publish): a
	// decoder bug must cost one skipped event, never the projector.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: decoder panic on %s: %v", ErrBadEvent, subject, r)
		}
	}()
	sub, ok := splitSubject(subject)
	if !ok {
		return nil, fmt.Errorf("%w: subject %q is not an inbox subject", ErrBadEvent, subject)
	}
	kind := sub.kind
	var e Event
	switch sub.scope + "." + string(kind) {
	case "conv.created":
		e = &Created{}
	case "conv.member":
		e = &MemberChanged{}
	case "conv.msg":
		e = &Message{}
	case "conv.typing":
		e = &Typing{}
	case "conv.read":
		e = &Read{}
	case "user.profile":
		e = &Profile{}
	case "job.created":
		e = &Job{}
	case "job.status":
		e = &JobStatus{}
	case "msg.edit":
		e = &Edit{}
	case "msg.delete":
		e = &Delete{}
	case "msg.react":
		e = &React{}
	case "msg.erase":
		e = &Erased{}
	case "user.erase":
		e = &ProfileErased{}
	case "sys.expire":
		e = &Expired{}
	default:
		return nil, fmt.Errorf("%w %q on %s", ErrUnknownKind, kind, subject)
	}
	if err := gojson.Unmarshal(data, e); err != nil {
		return nil, fmt.Errorf("%w: decode %s: %v", ErrBadEvent, subject, err)
	}
	h := e.header()
	switch {
	case h.V > SchemaVersion:
		return nil, fmt.Errorf("%w: v%d on %s (this build reads up to v%d)", ErrFutureVersion, h.V, subject, SchemaVersion)
	case h.V < 1:
		return nil, fmt.Errorf("%w: missing schema version on %s", ErrBadEvent, subject)
	case h.Type != e.Kind():
		return nil, fmt.Errorf("%w: payload type %q on %s", ErrBadEvent, h.Type, subject)
	}
	if err := validate(e, sub); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadEvent, subject, err)
	}
	return e, nil
}

// subject is an inbox subject taken apart.
type subject struct {
	scope string // conv, user, job, sys; msg for a message's lifecycle
	id    string // conversation, user or job id
	msg   string // the message id of a lifecycle subject
	kind  Kind
}

// splitSubject splits inbox.<scope>.<id>.<kind>,
// inbox.conv.<id>.msg.<message id>.<kind> and inbox.sys.<kind>, each also
// with a partition token after inbox. (inbox.p<k>.conv.<id>.<kind>).
func splitSubject(s string) (subject, bool) {
	k, s := unpartitioned(s)
	if k < 0 {
		return subject{}, false
	}
	rest, ok := strings.CutPrefix(s, "inbox.")
	if !ok {
		return subject{}, false
	}
	parts := strings.Split(rest, ".")
	switch {
	case len(parts) == 3:
		return subject{scope: parts[0], id: parts[1], kind: Kind(parts[2])}, true
	case len(parts) == 5 && parts[0] == "conv" && parts[2] == string(KindMessage):
		return subject{scope: "msg", id: parts[1], msg: parts[3], kind: Kind(parts[4])}, true
	case len(parts) == 2 && parts[0] == "sys":
		return subject{scope: "sys", kind: Kind(parts[1])}, true
	}
	return subject{}, false
}

func validate(e Event, sub subject) error {
	subjectID := sub.id
	checkID := func(id int64) error {
		if id <= 0 || strconv.FormatInt(id, 10) != subjectID {
			return fmt.Errorf("id %d does not match subject id %q", id, subjectID)
		}
		return nil
	}
	checkMsg := func(conv, msg int64) error {
		if !ValidID(msg) || strconv.FormatInt(msg, 10) != sub.msg {
			return fmt.Errorf("message id %d does not match subject message id %q", msg, sub.msg)
		}
		return checkID(conv)
	}
	checkUser := func(u string) error {
		if !ValidUserID(u) {
			return fmt.Errorf("bad user id %q", u)
		}
		return nil
	}
	switch e := e.(type) {
	case *Created:
		if len(e.Members) == 0 {
			return errors.New("no members")
		}
		for _, m := range e.Members {
			if err := checkUser(m.UserID); err != nil {
				return err
			}
			if !ValidRole(m.Role) {
				return fmt.Errorf("bad role %q", m.Role)
			}
		}
		return checkID(e.ConversationID)
	case *MemberChanged:
		if e.Op != OpAdd && e.Op != OpRemove {
			return fmt.Errorf("bad op %q", e.Op)
		}
		if e.Op == OpAdd && !ValidRole(e.Role) {
			return fmt.Errorf("bad role %q", e.Role)
		}
		if err := checkUser(e.UserID); err != nil {
			return err
		}
		return checkID(e.ConversationID)
	case *Message:
		if err := checkUser(e.SenderID); err != nil {
			return err
		}
		return checkID(e.ConversationID)
	case *Typing:
		if err := checkUser(e.UserID); err != nil {
			return err
		}
		return checkID(e.ConversationID)
	case *Read:
		if err := checkUser(e.UserID); err != nil {
			return err
		}
		if e.UpTo < 0 {
			return fmt.Errorf("negative up_to %d", e.UpTo)
		}
		return checkID(e.ConversationID)
	case *Profile:
		if e.UserID != subjectID {
			return fmt.Errorf("user id %q does not match subject", e.UserID)
		}
		return checkUser(e.UserID)
	case *Job:
		for _, m := range e.Members {
			if err := checkUser(m); err != nil {
				return err
			}
		}
		return checkID(e.JobID)
	case *JobStatus:
		return checkID(e.JobID)
	case *Edit:
		if err := checkUser(e.UserID); err != nil {
			return err
		}
		return checkMsg(e.ConversationID, e.MessageID)
	case *Delete:
		if err := checkUser(e.UserID); err != nil {
			return err
		}
		return checkMsg(e.ConversationID, e.MessageID)
	case *React:
		if err := checkUser(e.UserID); err != nil {
			return err
		}
		if e.Emoji == "" || len(e.Emoji) > MaxEmojiBytes {
			return fmt.Errorf("emoji of %d bytes", len(e.Emoji))
		}
		return checkMsg(e.ConversationID, e.MessageID)
	case *Erased:
		if err := checkUser(e.SenderID); err != nil {
			return err
		}
		if err := checkSeqs(e.Seqs); err != nil {
			return err
		}
		return checkMsg(e.ConversationID, e.MessageID)
	case *ProfileErased:
		if e.UserID != subjectID {
			return fmt.Errorf("user id %q does not match subject", e.UserID)
		}
		if err := checkSeqs(e.Seqs); err != nil {
			return err
		}
		return checkUser(e.UserID)
	case *Expired:
		if e.Before == 0 {
			return errors.New("no sequence to expire before")
		}
	}
	return nil
}

// MaxReactionsPerUser is how many distinct emoji one user may have on one
// message: a reaction past it is refused by the service and, in an event
// published by other means, ignored by the read model.
const MaxReactionsPerUser = 20

// MaxEmojiBytes bounds a reaction's emoji in a stored event (the service
// checks what a client may send: chat.ValidEmoji).
const MaxEmojiBytes = 64

func checkSeqs(seqs []uint64) error {
	if len(seqs) == 0 {
		return errors.New("no sequences")
	}
	for _, s := range seqs {
		if s == 0 || s > MaxID {
			return fmt.Errorf("bad sequence %d", s)
		}
	}
	return nil
}
