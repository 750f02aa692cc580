package wsedge

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/gobwas/ws"

	"inbox/chat"
	"inbox/eventstore"
	"inbox/internal/jsonin"
)

// kind labels a server frame for metrics (inbox_frames_out_total{type}).
type kind uint8

const (
	kMessage kind = iota
	kAck
	kError
	kTyping
	kRead
	kJoined
	kLeft
	kUnread
	kJobStatus
	kPresence
	kSynced
	kPong
	kRefreshed
	kTokenExpiring
	kEdited
	kDeleted
	kReaction
	kWSPing // WebSocket control frames
	kWSPong
	kWSClose
	numKinds
)

var kindLabels = [numKinds]string{
	kMessage: "MESSAGE", kAck: "ACK", kError: "ERROR", kTyping: "TYPING", kRead: "READ",
	kJoined: "CONVERSATION_JOINED", kLeft: "CONVERSATION_LEFT", kUnread: "UNREAD",
	kJobStatus: "JOB_STATUS", kPresence: "PRESENCE", kSynced: "SYNCED", kPong: "PONG",
	kRefreshed: "REFRESHED", kTokenExpiring: "TOKEN_EXPIRING",
	kEdited: "MESSAGE_EDITED", kDeleted: "MESSAGE_DELETED", kReaction: "REACTION",
	kWSPing: "ws_ping", kWSPong: "ws_pong", kWSClose: "ws_close",
}

// frame is one server frame ready for the wire: the WebSocket header and the
// payload in one slice, shared read-only by every socket it is queued to.
type frame struct {
	wire []byte
	seq  uint64 // the event's stream sequence; 0 for frames that are not events
	kind kind
	at   time.Time // the event's stream time, for delivery latency; zero if none
	conv int64     // an UNREAD's conversation: a newer count replaces it in a queue
}

// wireFrame compiles an unmasked, final server frame.
func wireFrame(op ws.OpCode, payload []byte) []byte {
	h := ws.Header{Fin: true, OpCode: op, Length: int64(len(payload))}
	var buf bytes.Buffer
	buf.Grow(ws.HeaderSize(h) + len(payload))
	_ = ws.WriteHeader(&buf, h) // a bytes.Buffer does not fail
	buf.Write(payload)
	return buf.Bytes()
}

// textFrame marshals v into a text frame.
func textFrame(k kind, seq uint64, v any) frame {
	p, err := json.Marshal(v)
	if err != nil {
		// Every value marshalled here is a plain struct of strings and numbers.
		panic(fmt.Sprintf("wsedge: marshal %s frame: %v", kindLabels[k], err))
	}
	return frame{wire: wireFrame(ws.OpText, p), seq: seq, kind: k}
}

func closeFrame(code ws.StatusCode, reason string) frame {
	return frame{wire: wireFrame(ws.OpClose, ws.NewCloseFrameBody(code, reason)), kind: kWSClose}
}

var (
	pingFrame = frame{wire: wireFrame(ws.OpPing, nil), kind: kWSPing}
	pongFrame = textFrame(kPong, 0, struct {
		Type string `json:"type"`
	}{"PONG"})
)

// Close codes beyond RFC 6455's.
const (
	// CloseSlowConsumer: the socket did not read its queue (or overflowed its
	// resume buffer); the client may reconnect with ?since.
	CloseSlowConsumer ws.StatusCode = 4013
	// CloseTokenExpired: the socket's token expired (plus the grace period)
	// without a REFRESH; the client reconnects with a fresh token and ?since.
	CloseTokenExpired ws.StatusCode = 4001
)

// Server frames. Field order follows docs/protocol.md.

// messageFrame is the seed's message shape plus seq and client_msg_id.
type messageFrame struct {
	ID             uint64  `json:"id"`
	ConversationID int64   `json:"conversation_id"`
	SenderID       string  `json:"sender_id"`
	SenderName     string  `json:"sender_name"`
	SenderAvatar   *string `json:"sender_avatar"`
	Message        string  `json:"message"`
	Type           string  `json:"type"`
	CreatedAt      string  `json:"created_at"`
	MessageID      uint64  `json:"message_id"`
	Seq            uint64  `json:"seq"`
	ClientMsgID    string  `json:"client_msg_id,omitempty"`
}

type ref struct {
	ConversationID int64 `json:"conversation_id"`
}

type ackFrame struct {
	Type        string `json:"type"`
	ClientMsgID string `json:"client_msg_id"`
	Ref         ref    `json:"ref"`
	MessageID   uint64 `json:"message_id"`
	Seq         uint64 `json:"seq"`
}

type errorFrame struct {
	Type        string `json:"type"`
	Code        string `json:"code"`
	Error       string `json:"error"`
	ClientMsgID string `json:"client_msg_id,omitempty"`
	Ref         *ref   `json:"ref,omitempty"`
	// RetryAfterMS is when to try again, when the server says (a node
	// shedding load, a spent catch-up budget).
	RetryAfterMS int64 `json:"retry_after_ms,omitempty"`
}

// typingFrame is the seed's TYPING frame plus, on a start, expires_at: the
// moment (RFC 3339, UTC, milliseconds) after which the receiver shows the
// user as no longer typing unless another start came (docs/protocol.md).
type typingFrame struct {
	Type           string `json:"type"`
	ConversationID int64  `json:"conversation_id"`
	UserID         string `json:"user_id"`
	IsTyping       bool   `json:"is_typing"`
	Seq            uint64 `json:"seq"`
	ExpiresAt      string `json:"expires_at,omitempty"`
}

// presenceFrame says a contact came online or went offline. last_seen is
// always present: null while online (or never seen), else when the user's
// last socket closed or its node was last known alive (RFC 3339, UTC).
type presenceFrame struct {
	Type     string  `json:"type"`
	UserID   string  `json:"user_id"`
	Online   bool    `json:"online"`
	LastSeen *string `json:"last_seen"`
}

type readFrame struct {
	Type           string  `json:"type"`
	ConversationID int64   `json:"conversation_id"`
	UserID         string  `json:"user_id"`
	UpTo           int64   `json:"up_to"`
	MessageIDs     []int64 `json:"message_ids,omitempty"`
	Seq            uint64  `json:"seq"`
}

type joinedFrame struct {
	Type           string   `json:"type"`
	ConversationID int64    `json:"conversation_id"`
	Members        []string `json:"members"`
	Seq            uint64   `json:"seq"`
}

type leftFrame struct {
	Type           string `json:"type"`
	ConversationID int64  `json:"conversation_id"`
	Seq            uint64 `json:"seq"`
}

type unreadFrame struct {
	Type           string `json:"type"`
	ConversationID int64  `json:"conversation_id"`
	Unread         int64  `json:"unread"`
}

type jobStatusFrame struct {
	Type   string          `json:"type"`
	JobID  int64           `json:"job_id"`
	Status string          `json:"status"`
	Detail json.RawMessage `json:"detail"`
	Seq    uint64          `json:"seq"`
}

// syncedFrame ends a catch-up page; more says the catch-up is not over: the
// client resumes from seq, or with more than one partition from cursor
// (docs/protocol.md).
type syncedFrame struct {
	Type   string `json:"type"`
	Seq    uint64 `json:"seq"`
	More   bool   `json:"more,omitempty"`
	Cursor string `json:"cursor,omitempty"`
}

// refreshedFrame confirms a REFRESH: the socket now lives until expires_at
// (plus the grace period). Times are RFC 3339, UTC, milliseconds, like a
// typing frame's expires_at.
type refreshedFrame struct {
	Type      string `json:"type"`
	ExpiresAt string `json:"expires_at"`
}

// tokenExpiringFrame warns that the socket's token expires at expires_at
// and the socket will be closed (4001) at close_at unless a REFRESH comes.
type tokenExpiringFrame struct {
	Type      string `json:"type"`
	ExpiresAt string `json:"expires_at"`
	CloseAt   string `json:"close_at"`
}

// editedFrame: a message's new text, to every member (the shape:
// unlike other control frames it carries message, the new text).
type editedFrame struct {
	Type           string `json:"type"`
	ConversationID int64  `json:"conversation_id"`
	MessageID      int64  `json:"message_id"`
	Message        string `json:"message"`
	EditedAt       string `json:"edited_at"`
	Seq            uint64 `json:"seq"`
}

// deletedFrame: a message was deleted or erased; clients drop its text.
type deletedFrame struct {
	Type           string `json:"type"`
	ConversationID int64  `json:"conversation_id"`
	MessageID      int64  `json:"message_id"`
	Seq            uint64 `json:"seq"`
}

// reactionFrame: a reaction added (on) or removed.
type reactionFrame struct {
	Type           string `json:"type"`
	ConversationID int64  `json:"conversation_id"`
	MessageID      int64  `json:"message_id"`
	UserID         string `json:"user_id"`
	Emoji          string `json:"emoji"`
	On             bool   `json:"on"`
	Seq            uint64 `json:"seq"`
}

// createdAt formats an event time like the seed: RFC 3339, UTC, whole seconds.
func createdAt(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func encodeMessage(seq uint64, e *eventstore.Message) frame {
	return textFrame(kMessage, seq, messageFrame{
		ID: seq, ConversationID: e.ConversationID, SenderID: e.SenderID, SenderName: e.SenderName,
		SenderAvatar: e.SenderAvatar, Message: e.Text, Type: e.MsgType, CreatedAt: createdAt(e.At),
		MessageID: seq, Seq: seq, ClientMsgID: e.ClientMsgID,
	})
}

func encodeEdited(seq uint64, e *eventstore.Edit) frame {
	return textFrame(kEdited, seq, editedFrame{"MESSAGE_EDITED", e.ConversationID, e.MessageID, e.Text, createdAt(e.At), seq})
}

func encodeDeleted(seq uint64, conv, id int64) frame {
	return textFrame(kDeleted, seq, deletedFrame{"MESSAGE_DELETED", conv, id, seq})
}

func encodeReaction(seq uint64, e *eventstore.React) frame {
	return textFrame(kReaction, seq, reactionFrame{"REACTION", e.ConversationID, e.MessageID, e.UserID, e.Emoji, e.On, seq})
}

// expiresAtLayout is RFC 3339 with exactly three fractional digits.
const expiresAtLayout = "2006-01-02T15:04:05.000Z07:00"

func encodeTyping(seq uint64, e *eventstore.Typing) frame {
	f := typingFrame{Type: "TYPING", ConversationID: e.ConversationID, UserID: e.UserID, IsTyping: e.IsTyping, Seq: seq}
	if e.IsTyping && !e.ExpiresAt.IsZero() {
		f.ExpiresAt = e.ExpiresAt.UTC().Format(expiresAtLayout)
	}
	return textFrame(kTyping, seq, f)
}

func encodePresence(user string, online bool, lastSeen time.Time) frame {
	f := presenceFrame{Type: "PRESENCE", UserID: user, Online: online}
	if !online && !lastSeen.IsZero() {
		s := createdAt(lastSeen)
		f.LastSeen = &s
	}
	return textFrame(kPresence, 0, f)
}

func encodeRead(seq uint64, e *eventstore.Read) frame {
	return textFrame(kRead, seq, readFrame{"READ", e.ConversationID, e.UserID, e.UpTo, e.MessageIDs, seq})
}

func encodeJoined(seq uint64, conv int64, members []string) frame {
	if members == nil {
		members = []string{}
	}
	return textFrame(kJoined, seq, joinedFrame{"CONVERSATION_JOINED", conv, members, seq})
}

func encodeLeft(seq uint64, conv int64) frame {
	return textFrame(kLeft, seq, leftFrame{"CONVERSATION_LEFT", conv, seq})
}

func encodeJobStatus(seq uint64, e *eventstore.JobStatus) frame {
	detail := e.Detail
	if len(detail) == 0 {
		detail = json.RawMessage("{}")
	}
	return textFrame(kJobStatus, seq, jobStatusFrame{"JOB_STATUS", e.JobID, e.Status, detail, seq})
}

func encodeUnread(conv, unread int64) frame {
	f := textFrame(kUnread, 0, unreadFrame{"UNREAD", conv, unread})
	f.conv = conv
	return f
}

// encodeSynced is SYNCED at cursor c: with one partition its seq is the
// stream sequence, as it always was; with more it carries the cursor, and
// seq is the highest event id in it.
func encodeSynced(c eventstore.Cursor, more bool) frame {
	if len(c) == 1 {
		return textFrame(kSynced, 0, syncedFrame{"SYNCED", c[0], more, ""})
	}
	var top uint64
	for k := range c {
		top = max(top, c.ID(k))
	}
	return textFrame(kSynced, 0, syncedFrame{"SYNCED", top, more, c.String()})
}

func encodeRefreshed(exp time.Time) frame {
	return textFrame(kRefreshed, 0, refreshedFrame{"REFRESHED", exp.UTC().Format(expiresAtLayout)})
}

func encodeTokenExpiring(exp, closeAt time.Time) frame {
	return textFrame(kTokenExpiring, 0, tokenExpiringFrame{"TOKEN_EXPIRING", exp.UTC().Format(expiresAtLayout), closeAt.UTC().Format(expiresAtLayout)})
}

func encodeAck(clientMsgID string, conv int64, seq uint64) frame {
	return textFrame(kAck, 0, ackFrame{"ACK", clientMsgID, ref{conv}, seq, seq})
}

// encodeChangeAck acknowledges an EDIT, DELETE or REACT: message_id is the
// message changed, seq the change's event.
func encodeChangeAck(clientMsgID string, conv int64, id int64, seq uint64) frame {
	return textFrame(kAck, 0, ackFrame{"ACK", clientMsgID, ref{conv}, uint64(id), seq})
}

func encodeError(err error, clientMsgID string, conv int64) frame {
	f := errorFrame{Type: "ERROR", Code: chat.CodeOf(err), Error: err.Error(), ClientMsgID: clientMsgID, RetryAfterMS: chat.RetryAfterOf(err).Milliseconds()}
	if f.Code == chat.CodeInternal || f.Code == chat.CodeUnavailable {
		var ce *chat.Error
		if !errors.As(err, &ce) {
			f.Error = "internal error" // never show a cause that is not a coded message
		}
	}
	if conv > 0 {
		f.Ref = &ref{conv}
	}
	return textFrame(kError, 0, f)
}

// Client frames.

// Client frame types (inbox_frames_in_total{type} labels).
const (
	inMessage = "MESSAGE" // TEXT, IMAGE, FILE or no type
	inTyping  = "TYPING"
	inRead    = "READ"
	inPing    = "PING"
	inResume  = "RESUME"
	inRefresh = "REFRESH"
	inEdit    = "EDIT"
	inDelete  = "DELETE"
	inReact   = "REACT"
	inInvalid = "invalid"
)

// clientFrame is every field a client frame may carry. Unknown fields are
// ignored (older and newer frontends send extras); known fields must have
// their type: ids are JSON integers, anything else is bad_request.
type clientFrame struct {
	Type           string  `json:"type"`
	ConversationID int64   `json:"conversation_id"`
	Message        *string `json:"message"`
	ClientMsgID    string  `json:"client_msg_id"`
	IsTyping       *bool   `json:"is_typing"`
	MessageIDs     []int64 `json:"message_ids"`
	UpTo           int64   `json:"up_to"`
	Since          *uint64 `json:"since"`
	Cursor         *string `json:"cursor"`
	Token          string  `json:"token"`
	MessageID      int64   `json:"message_id"`
	Emoji          string  `json:"emoji"`
	On             *bool   `json:"on"`
}

// request is a decoded, checked client frame.
type request struct {
	op string // one of the in* constants
	clientFrame
}

// badRequest is a bad_request error.
func badRequest(format string, args ...any) error {
	return chat.Errorf(chat.CodeBadRequest, format, args...)
}

// decodeFrame parses one client text frame. The shape is checked here; text,
// membership and ids are checked by chat.Service. Names match exactly, a
// name given twice and invalid UTF-8 are refused, unknown names are ignored
// (jsonin). The returned request is usable (for client_msg_id and
// conversation_id in the ERROR frame) even when err is set.
func decodeFrame(data []byte) (request, error) {
	var r request
	r.op = inInvalid
	if err := jsonin.Unmarshal(data, &r.clientFrame, jsonin.IgnoreUnknown); err != nil {
		r.clientFrame = salvage(data)
		return r, &chat.Error{Code: chat.CodeBadRequest, Msg: err.Error(), Err: err}
	}
	switch r.Type {
	case "", eventstore.TypeText, eventstore.TypeImage, eventstore.TypeFile:
		r.op = inMessage
		if r.Type == "" {
			r.Type = eventstore.TypeText
		}
		if r.Message == nil {
			return r, badRequest("a message frame needs message")
		}
	case "TYPING":
		r.op = inTyping
		if r.IsTyping == nil {
			return r, badRequest("a TYPING frame needs is_typing")
		}
	case "READ":
		r.op = inRead
	case "PING":
		r.op = inPing
	case "RESUME":
		r.op = inResume
		switch {
		case r.Since == nil && r.Cursor == nil:
			return r, badRequest("a RESUME frame needs since (or cursor)")
		case r.Since != nil && r.Cursor != nil:
			return r, badRequest("a RESUME frame takes since or cursor, not both")
		case r.Since != nil && *r.Since > eventstore.MaxID:
			return r, badRequest("since must be a stream sequence up to %d (2^53−1)", int64(eventstore.MaxID))
		}
	case "REFRESH":
		r.op = inRefresh
		if r.Token == "" {
			return r, badRequest("a REFRESH frame needs token")
		}
	case "EDIT":
		r.op = inEdit
		if r.MessageID == 0 || r.Message == nil {
			return r, badRequest("an EDIT frame needs message_id and message")
		}
	case "DELETE":
		r.op = inDelete
		if r.MessageID == 0 {
			return r, badRequest("a DELETE frame needs message_id")
		}
	case "REACT":
		r.op = inReact
		if r.MessageID == 0 || r.Emoji == "" || r.On == nil {
			return r, badRequest("a REACT frame needs message_id, emoji and on")
		}
	default:
		return r, badRequest("unknown frame type %q", truncate(r.Type, 32))
	}
	return r, nil
}

// resumeFrom is where a RESUME frame resumes from: its cursor, or its since
// (a cursor of one entry).
func (r *request) resumeFrom() string {
	if r.Cursor != nil {
		return *r.Cursor
	}
	if r.Since != nil {
		return strconv.FormatUint(*r.Since, 10)
	}
	return ""
}

// salvage finds conversation_id and client_msg_id in a frame that did not
// decode, so its ERROR can name them: the decoder stops at the first bad
// field, and a client matches an ERROR to what it sent by these two.
func salvage(data []byte) clientFrame {
	var f clientFrame
	dec := jsontext.NewDecoder(bytes.NewReader(data), jsontext.AllowDuplicateNames(true))
	if tok, err := dec.ReadToken(); err != nil || tok.Kind() != '{' {
		return f
	}
	for dec.PeekKind() == '"' {
		tok, err := dec.ReadToken()
		if err != nil {
			return f
		}
		name := tok.String() // before the next read voids tok
		v, err := dec.ReadValue()
		if err != nil {
			return f
		}
		switch name {
		case "conversation_id":
			_ = jsonin.Unmarshal(v, &f.ConversationID, jsonin.IgnoreUnknown)
		case "client_msg_id":
			_ = jsonin.Unmarshal(v, &f.ClientMsgID, jsonin.IgnoreUnknown)
		}
	}
	return f
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
