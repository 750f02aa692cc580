package httpapi

import (
	"context"
	"net/http"

	"inbox/chat"
	"inbox/erasure"
)

// Eraser erases messages and profiles (POST …/erase); *erasure.Eraser is one.
type Eraser interface {
	Message(ctx context.Context, conv, id int64) (erasure.Report, error)
	User(ctx context.Context, user string) (erasure.Report, error)
}

var _ Eraser = (*erasure.Eraser)(nil)

type editRequest struct {
	Message string `json:"message"`
}

// messagePath reads {id} and {message_id}.
func messagePath(r *http.Request) (conv, id int64, err error) {
	if conv, err = pathID(r, "id", "conversation"); err != nil {
		return 0, 0, err
	}
	if id, err = pathID(r, "message_id", "message"); err != nil {
		return 0, 0, err
	}
	annotate(r, "message_id", id)
	return conv, id, nil
}

// editMessage: PATCH /api/conversations/{id}/messages/{message_id} (the
// sender) and PATCH /api/admin/conversations/{id}/messages/{message_id}.
func (a *api) editMessage(w http.ResponseWriter, r *http.Request) error {
	conv, id, err := messagePath(r)
	if err != nil {
		return err
	}
	var req editRequest
	if err := a.decode(w, r, &req); err != nil {
		return err
	}
	ch, err := a.svc.Edit(r.Context(), a.actor(r), chat.EditRequest{ConversationID: conv, MessageID: id, Text: req.Message, ClientMsgID: r.Header.Get(IdempotencyHeader)})
	if err != nil {
		return err
	}
	return a.answerChanged(w, r, ch)
}

// deleteMessage: DELETE /api/conversations/{id}/messages/{message_id} (the
// sender) and DELETE /api/admin/conversations/{id}/messages/{message_id}.
func (a *api) deleteMessage(w http.ResponseWriter, r *http.Request) error {
	conv, id, err := messagePath(r)
	if err != nil {
		return err
	}
	ch, err := a.svc.Delete(r.Context(), a.actor(r), chat.DeleteRequest{ConversationID: conv, MessageID: id, ClientMsgID: r.Header.Get(IdempotencyHeader)})
	if err != nil {
		return err
	}
	return a.answerChanged(w, r, ch)
}

// addReaction: PUT /api/conversations/{id}/messages/{message_id}/reactions/{emoji}.
func (a *api) addReaction(w http.ResponseWriter, r *http.Request) error { return a.react(w, r, true) }

// removeReaction: DELETE /api/conversations/{id}/messages/{message_id}/reactions/{emoji}.
func (a *api) removeReaction(w http.ResponseWriter, r *http.Request) error {
	return a.react(w, r, false)
}

func (a *api) react(w http.ResponseWriter, r *http.Request, on bool) error {
	conv, id, err := messagePath(r)
	if err != nil {
		return err
	}
	ch, err := a.svc.React(r.Context(), claims(r).UserID, chat.ReactRequest{ConversationID: conv, MessageID: id,
		Emoji: r.PathValue("emoji"), On: on, ClientMsgID: r.Header.Get(IdempotencyHeader)})
	if err != nil {
		return err
	}
	return a.answerChanged(w, r, ch)
}

// actor is who asks: the service API on an admin route, else the user.
func (a *api) actor(r *http.Request) chat.Actor {
	if c := claims(r); c.UserID != "" {
		return chat.Actor{UserID: c.UserID}
	}
	return chat.Admin
}

// answerChanged answers a change with the message as it now is (200), once
// the read model has applied the change; 202 with the ids if it has not in
// ConsistencyWait.
func (a *api) answerChanged(w http.ResponseWriter, r *http.Request, ch chat.Changed) error {
	annotate(r, "seq", ch.Seq)
	if ch.Replayed {
		annotate(r, "replayed", true)
	}
	if a.catchUp(w, r, ch.Seq) {
		msgs, err := a.reads.Messages(r.Context(), ch.ConversationID, ch.MessageID+1, 1)
		if err != nil {
			return err
		}
		if len(msgs) == 1 && msgs[0].ID == ch.MessageID {
			writeJSON(w, http.StatusOK, msgs[0])
			return nil
		}
		w.Header().Set(StaleHeader, "true") // expired since
	}
	writeJSON(w, http.StatusAccepted, stored{ID: uint64(ch.MessageID), MessageID: uint64(ch.MessageID), Seq: ch.Seq, ConversationID: ch.ConversationID})
	return nil
}

// eraseUser: POST /api/admin/users/{user_id}/erase.
func (a *api) eraseUser(w http.ResponseWriter, r *http.Request) error {
	u, err := pathUser(r)
	if err != nil {
		return err
	}
	if a.eraser == nil {
		return chat.Errorf(chat.CodeUnavailable, "this node cannot erase")
	}
	rep, err := a.eraser.User(r.Context(), u)
	if err != nil {
		return err
	}
	annotate(r, "target_user_id", u, "messages", len(rep.Messages), "deleted", rep.Deleted)
	writeJSON(w, http.StatusOK, rep)
	return nil
}

// eraseMessage: POST /api/admin/conversations/{id}/messages/{message_id}/erase.
func (a *api) eraseMessage(w http.ResponseWriter, r *http.Request) error {
	conv, id, err := messagePath(r)
	if err != nil {
		return err
	}
	if a.eraser == nil {
		return chat.Errorf(chat.CodeUnavailable, "this node cannot erase")
	}
	rep, err := a.eraser.Message(r.Context(), conv, id)
	if err != nil {
		return err
	}
	annotate(r, "deleted", rep.Deleted)
	writeJSON(w, http.StatusOK, rep)
	return nil
}
