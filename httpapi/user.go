package httpapi

import (
	"context"
	"fmt"
	"net/http"

	"inbox/chat"
	"inbox/eventstore"
	"inbox/projections"
)

// History paging bounds.
const (
	DefaultLimit = 50
	MaxLimit     = 200
)

// IdempotencyHeader carries a send's client_msg_id: a retry with the same key
// in the same conversation stores nothing new and answers with the first
// send's message; the same key with another message is 409 conflict.
const IdempotencyHeader = "Idempotency-Key"

// catchUp waits, at most ConsistencyWait, for the projection to apply seq.
// When it does not, the answer is marked stale and the caller answers anyway.
func (a *api) catchUp(w http.ResponseWriter, r *http.Request, seq uint64) bool {
	if seq == 0 {
		return true
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.cfg.ConsistencyWait)
	defer cancel()
	if err := a.proj.WaitFor(ctx, seq); err != nil {
		w.Header().Set(StaleHeader, "true")
		annotate(r, "stale_for_seq", seq)
		a.log.Warn("projection behind the caller's write", "seq", seq, "wait", a.cfg.ConsistencyWait, "err", err)
		return false
	}
	return true
}

// catchUpWrites waits, at most ConsistencyWait, for the projection to apply
// the caller's last writes (chat.Service.LastWrite): in conv's partition
// only, or with conv 0 in every partition.
func (a *api) catchUpWrites(w http.ResponseWriter, r *http.Request, writes eventstore.Cursor, conv int64) bool {
	if writes == nil {
		return true
	}
	if conv != 0 {
		return a.catchUp(w, r, writes.ID(eventstore.Partition(conv, len(writes))))
	}
	for k := range writes {
		if writes[k] != 0 && !a.catchUp(w, r, writes.ID(k)) {
			return false
		}
	}
	return true
}

type conversationsResponse struct {
	Conversations []projections.Conversation `json:"conversations"`
}

// listConversations: GET /api/conversations.
func (a *api) listConversations(w http.ResponseWriter, r *http.Request) error {
	c := claims(r)
	a.catchUpWrites(w, r, a.svc.LastWrite(c.UserID), 0)
	convs, err := a.reads.Conversations(r.Context(), c.UserID)
	if err != nil {
		return err
	}
	if convs == nil {
		convs = []projections.Conversation{}
	}
	for i := range convs {
		if convs[i].Members == nil {
			convs[i].Members = []projections.Member{}
		}
	}
	writeJSON(w, http.StatusOK, conversationsResponse{Conversations: convs})
	return nil
}

type messagesResponse struct {
	Messages []projections.Message `json:"messages"`
}

// listMessages: GET /api/conversations/{id}/messages?before=&limit=.
func (a *api) listMessages(w http.ResponseWriter, r *http.Request) error {
	c := claims(r)
	conv, err := pathID(r, "id", "conversation")
	if err != nil {
		return err
	}
	before, err := queryInt(r, "before", 0, 1, eventstore.MaxID)
	if err != nil {
		return err
	}
	limit, err := queryInt(r, "limit", DefaultLimit, 1, MaxLimit)
	if err != nil {
		return err
	}
	if err := a.checkMember(conv, c.UserID); err != nil {
		return err
	}
	a.catchUpWrites(w, r, a.svc.LastWrite(c.UserID), conv)
	msgs, err := a.reads.Messages(r.Context(), conv, before, int(limit))
	if err != nil {
		return err
	}
	if msgs == nil {
		msgs = []projections.Message{}
	}
	writeJSON(w, http.StatusOK, messagesResponse{Messages: msgs})
	return nil
}

// checkMember answers 404 for a conversation never created and 403 for one
// the user is not in, from the in-memory directory.
func (a *api) checkMember(conv int64, user string) error {
	if a.dir.IsMember(conv, user) {
		return nil
	}
	if !a.dir.Exists(conv) {
		return chat.Errorf(chat.CodeNotFound, "conversation %d not found", conv)
	}
	return chat.Errorf(chat.CodeForbidden, "not a member of conversation %d", conv)
}

type sendRequest struct {
	Message string `json:"message"`
	Type    string `json:"type"`
}

// sendMessage: POST /api/conversations/{id}/messages.
func (a *api) sendMessage(w http.ResponseWriter, r *http.Request) error {
	c := claims(r)
	conv, err := pathID(r, "id", "conversation")
	if err != nil {
		return err
	}
	var req sendRequest
	if err := a.decode(w, r, &req); err != nil {
		return err
	}
	from := chat.Sender{UserID: c.UserID, Name: c.Name}
	if c.Picture != "" {
		from.Avatar = &c.Picture
	}
	key := r.Header.Get(IdempotencyHeader)
	sent, err := a.svc.Send(r.Context(), from, chat.SendRequest{
		ConversationID: conv, Text: req.Message, Type: req.Type, ClientMsgID: key,
	})
	if err != nil {
		return err
	}
	if sent.ConversationID != conv {
		// Never answer with another conversation's message.
		return fmt.Errorf("send to conversation %d answered with message %d of conversation %d", conv, sent.ID, sent.ConversationID)
	}
	annotate(r, "seq", sent.ID)
	if sent.Replayed {
		annotate(r, "replayed", true)
	}
	return a.answerMessage(w, r, conv, sent.ID)
}

// stored is the answer to a POST whose event is stored but not yet readable
// (the projection did not catch up in time): 202 with the message's ids.
type stored struct {
	ID             uint64 `json:"id"`
	MessageID      uint64 `json:"message_id"`
	Seq            uint64 `json:"seq"`
	ConversationID int64  `json:"conversation_id"`
}

// answerMessage waits for the projection to apply the message stored at seq
// and answers 201 with it in the wire shape; 202 with its ids if the wait
// runs out.
func (a *api) answerMessage(w http.ResponseWriter, r *http.Request, conv int64, seq uint64) error {
	if a.catchUp(w, r, seq) {
		msgs, err := a.reads.Messages(r.Context(), conv, int64(seq)+1, 1)
		if err != nil {
			return err
		}
		if len(msgs) == 1 && msgs[0].ID == int64(seq) {
			writeJSON(w, http.StatusCreated, msgs[0])
			return nil
		}
		// A dedup hit past the projection's history (rebuilt meanwhile): say what we know.
		w.Header().Set(StaleHeader, "true")
	}
	writeJSON(w, http.StatusAccepted, stored{ID: seq, MessageID: seq, Seq: seq, ConversationID: conv})
	return nil
}
