package httpapi

import (
	"bytes"
	"encoding/json"
	"net/http"

	"inbox/eventstore"
)

type createConversationRequest struct {
	ID      int64               `json:"id"` // 0 or absent: the next free id
	Members []eventstore.Member `json:"members"`
}

type conversationResponse struct {
	ID      int64               `json:"id"`
	Members []eventstore.Member `json:"members"`
	Seq     uint64              `json:"seq"`
}

// createConversation: POST /api/admin/conversations.
func (a *api) createConversation(w http.ResponseWriter, r *http.Request) error {
	var req createConversationRequest
	if err := a.decode(w, r, &req); err != nil {
		return err
	}
	id, seq, err := a.svc.CreateConversation(r.Context(), req.ID, req.Members)
	if err != nil {
		return err
	}
	annotate(r, "conversation_id", id, "seq", seq)
	a.catchUp(w, r, seq)
	writeJSON(w, http.StatusCreated, conversationResponse{ID: id, Members: req.Members, Seq: seq})
	return nil
}

type memberRequest struct {
	UserID string `json:"user_id"`
	Role   string `json:"role"`
}

type memberResponse struct {
	ConversationID int64  `json:"conversation_id"`
	UserID         string `json:"user_id"`
	Role           string `json:"role,omitempty"`
	Seq            uint64 `json:"seq"`
}

// addMember: POST /api/admin/conversations/{id}/members.
func (a *api) addMember(w http.ResponseWriter, r *http.Request) error {
	conv, err := pathID(r, "id", "conversation")
	if err != nil {
		return err
	}
	var req memberRequest
	if err := a.decode(w, r, &req); err != nil {
		return err
	}
	seq, err := a.svc.AddMember(r.Context(), conv, eventstore.Member{UserID: req.UserID, Role: req.Role})
	if err != nil {
		return err
	}
	annotate(r, "target_user_id", req.UserID, "seq", seq)
	a.catchUp(w, r, seq)
	writeJSON(w, http.StatusOK, memberResponse{ConversationID: conv, UserID: req.UserID, Role: req.Role, Seq: seq})
	return nil
}

// removeMember: DELETE /api/admin/conversations/{id}/members/{user_id}.
func (a *api) removeMember(w http.ResponseWriter, r *http.Request) error {
	conv, err := pathID(r, "id", "conversation")
	if err != nil {
		return err
	}
	u, err := pathUser(r)
	if err != nil {
		return err
	}
	seq, err := a.svc.RemoveMember(r.Context(), conv, u)
	if err != nil {
		return err
	}
	annotate(r, "seq", seq)
	a.catchUp(w, r, seq)
	writeJSON(w, http.StatusOK, memberResponse{ConversationID: conv, UserID: u, Seq: seq})
	return nil
}

type profileRequest struct {
	Name   string  `json:"name"`
	Avatar *string `json:"avatar"`
}

type profileResponse struct {
	UserID string  `json:"user_id"`
	Name   string  `json:"name"`
	Avatar *string `json:"avatar"`
	Seq    uint64  `json:"seq"`
}

// setProfile: PUT /api/admin/profiles/{user_id}.
func (a *api) setProfile(w http.ResponseWriter, r *http.Request) error {
	u, err := pathUser(r)
	if err != nil {
		return err
	}
	var req profileRequest
	if err := a.decode(w, r, &req); err != nil {
		return err
	}
	seq, err := a.svc.SetProfile(r.Context(), u, req.Name, req.Avatar)
	if err != nil {
		return err
	}
	annotate(r, "seq", seq)
	a.catchUp(w, r, seq)
	writeJSON(w, http.StatusOK, profileResponse{UserID: u, Name: req.Name, Avatar: req.Avatar, Seq: seq})
	return nil
}

type systemMessageRequest struct {
	Message string `json:"message"`
}

// postSystem: POST /api/admin/conversations/{id}/messages.
func (a *api) postSystem(w http.ResponseWriter, r *http.Request) error {
	conv, err := pathID(r, "id", "conversation")
	if err != nil {
		return err
	}
	var req systemMessageRequest
	if err := a.decode(w, r, &req); err != nil {
		return err
	}
	seq, err := a.svc.PostSystem(r.Context(), conv, req.Message)
	if err != nil {
		return err
	}
	annotate(r, "seq", seq)
	return a.answerMessage(w, r, conv, seq)
}

type createJobRequest struct {
	ID      int64    `json:"id"` // 0 or absent: the next free id
	Members []string `json:"members"`
}

type jobResponse struct {
	ID      int64    `json:"id"`
	Members []string `json:"members"`
	Seq     uint64   `json:"seq"`
}

// createJob: POST /api/admin/jobs.
func (a *api) createJob(w http.ResponseWriter, r *http.Request) error {
	var req createJobRequest
	if err := a.decode(w, r, &req); err != nil {
		return err
	}
	if req.Members == nil {
		req.Members = []string{}
	}
	id, seq, err := a.svc.CreateJob(r.Context(), req.ID, req.Members)
	if err != nil {
		return err
	}
	annotate(r, "job_id", id, "seq", seq)
	a.catchUp(w, r, seq)
	writeJSON(w, http.StatusCreated, jobResponse{ID: id, Members: req.Members, Seq: seq})
	return nil
}

type jobStatusRequest struct {
	Status string          `json:"status"`
	Detail json.RawMessage `json:"detail"`
}

type jobStatusResponse struct {
	JobID  int64           `json:"job_id"`
	Status string          `json:"status"`
	Detail json.RawMessage `json:"detail"`
	Seq    uint64          `json:"seq"`
}

// postJobStatus: POST /api/admin/jobs/{id}/status.
func (a *api) postJobStatus(w http.ResponseWriter, r *http.Request) error {
	job, err := pathID(r, "id", "job")
	if err != nil {
		return err
	}
	var req jobStatusRequest
	if err := a.decode(w, r, &req); err != nil {
		return err
	}
	detail := bytes.TrimSpace(req.Detail)
	switch {
	case len(detail) == 0 || bytes.Equal(detail, []byte("null")):
		detail = []byte("{}")
	case detail[0] != '{':
		return badRequest("field \"detail\" must be a JSON object")
	}
	seq, err := a.svc.PostJobStatus(r.Context(), job, req.Status, detail)
	if err != nil {
		return err
	}
	annotate(r, "seq", seq)
	a.catchUp(w, r, seq)
	writeJSON(w, http.StatusCreated, jobStatusResponse{JobID: job, Status: req.Status, Detail: detail, Seq: seq})
	return nil
}
