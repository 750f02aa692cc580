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

func (e *Created) Kind() Kind       { return KindCreated }
func (e *MemberChanged) Kind() Kind { return KindMember }
func (e *Message) Kind() Kind       { return KindMessage }
func (e *Typing) Kind() Kind        { return KindTyping }
func (e *Read) Kind() Kind          { return KindRead }
func (e *Profile) Kind() Kind       { return KindProfile }
func (e *Job) Kind() Kind           { return KindJob }
func (e *JobStatus) Kind() Kind     { return KindStatus }

func (e *Created) Subject() string       { return ConvSubject(e.ConversationID, KindCreated) }
func (e *MemberChanged) Subject() string { return ConvSubject(e.ConversationID, KindMember) }
func (e *Message) Subject() string       { return ConvSubject(e.ConversationID, KindMessage) }
func (e *Typing) Subject() string        { return ConvSubject(e.ConversationID, KindTyping) }
func (e *Read) Subject() string          { return ConvSubject(e.ConversationID, KindRead) }
func (e *Profile) Subject() string       { return "inbox.user." + e.UserID + ".profile" }
func (e *Job) Subject() string           { return "inbox.job." + strconv.FormatInt(e.JobID, 10) + ".created" }
func (e *JobStatus) Subject() string {
	return "inbox.job." + strconv.FormatInt(e.JobID, 10) + ".status"
}

// ConvSubject is the subject of a conversation event.
func ConvSubject(id int64, k Kind) string {
	return "inbox.conv." + strconv.FormatInt(id, 10) + "." + string(k)
}

// Stream subjects: everything inbox appends lives under these.
var streamSubjects = []string{"inbox.conv.*.*", "inbox.user.*.*", "inbox.job.*.*"}

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
	scope, id, kind, ok := splitSubject(subject)
	if !ok {
		return nil, fmt.Errorf("%w: subject %q is not an inbox subject", ErrBadEvent, subject)
	}
	var e Event
	switch scope + "." + string(kind) {
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
	if err := validate(e, id); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadEvent, subject, err)
	}
	return e, nil
}

// splitSubject splits inbox.<scope>.<id>.<kind>.
func splitSubject(s string) (scope, id string, kind Kind, ok bool) {
	rest, ok := strings.CutPrefix(s, "inbox.")
	if !ok {
		return "", "", "", false
	}
	parts := strings.Split(rest, ".")
	if len(parts) != 3 {
		return "", "", "", false
	}
	return parts[0], parts[1], Kind(parts[2]), true
}

func validate(e Event, subjectID string) error {
	checkID := func(id int64) error {
		if id <= 0 || strconv.FormatInt(id, 10) != subjectID {
			return fmt.Errorf("id %d does not match subject id %q", id, subjectID)
		}
		return nil
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
	}
	return nil
}
