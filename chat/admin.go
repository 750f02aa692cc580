package chat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"unicode/utf8"

	"inbox/eventstore"
)

// CreateConversation creates a conversation with id, or with the next free id
// when id is 0, and returns the id and the event's sequence. An id that exists
// is ErrExists (code conflict).
func (s *Service) CreateConversation(ctx context.Context, id int64, members []eventstore.Member) (int64, uint64, error) {
	if id < 0 || id > eventstore.MaxID {
		return 0, 0, Errorf(CodeBadRequest, "conversation id %d must be a positive integer up to %d (2^53−1)", id, int64(eventstore.MaxID))
	}
	if err := checkMembers(members); err != nil {
		return 0, 0, err
	}
	return s.claim(ctx, "conversation", id, &s.nextConv, s.dir.MaxConversationID, func(cid int64) eventstore.Event {
		return &eventstore.Created{ConversationID: cid, Members: members}
	})
}

// claim appends the creation event that ev makes for id, or for the next free
// id when id is 0, with ExpectNew: a taken explicit id is a conflict; a taken
// assigned id (another node got there first) is retried with the next one.
func (s *Service) claim(ctx context.Context, what string, id int64, next *atomic.Int64, seen func() int64, ev func(int64) eventstore.Event) (int64, uint64, error) {
	for attempt := 0; ; attempt++ {
		cid := id
		if cid == 0 {
			var ok bool
			if cid, ok = nextID(next, seen()); !ok {
				return 0, 0, Errorf(CodeConflict, "the highest %s id is already %d (2^53−1), the largest allowed; create with an explicit free id", what, int64(eventstore.MaxID))
			}
		}
		seq, err := s.appendSettled(ctx, ev(cid), eventstore.ExpectNew())
		switch {
		case err == nil:
			return cid, seq, nil
		case errors.Is(err, eventstore.ErrExists) && id == 0 && attempt < 20:
			continue
		case errors.Is(err, eventstore.ErrExists):
			return 0, 0, &Error{Code: CodeConflict, Msg: fmt.Sprintf("%s %d already exists", what, cid), Err: err}
		default:
			return 0, 0, err
		}
	}
}

// nextID hands out an id above both seen (the highest id in the directory) and
// every id this node handed out before. It reports false, and never wraps,
// once that would pass eventstore.MaxID.
func nextID(next *atomic.Int64, seen int64) (int64, bool) {
	for {
		cur := next.Load()
		last := max(cur, seen)
		if last >= eventstore.MaxID {
			return 0, false
		}
		if next.CompareAndSwap(cur, last+1) {
			return last + 1, true
		}
	}
}

// checkUserID refuses a malformed user id and a reserved one (system
// messages' sender): what names it ("member id") starts the error.
func checkUserID(what, id string) error {
	if !eventstore.ValidUserID(id) {
		return Errorf(CodeBadRequest, "%s %q must match [A-Za-z0-9_-]{1,64}", what, id)
	}
	if eventstore.ReservedUserID(id) {
		return Errorf(CodeBadRequest, "%s %q is reserved for the service", what, id)
	}
	return nil
}

func checkMembers(members []eventstore.Member) error {
	if len(members) == 0 {
		return Errorf(CodeBadRequest, "a conversation needs at least one member")
	}
	seen := make(map[string]bool, len(members))
	for _, m := range members {
		if err := checkUserID("member id", m.UserID); err != nil {
			return err
		}
		if !eventstore.ValidRole(m.Role) {
			return Errorf(CodeBadRequest, "role %q of %s must be client, worker or member", m.Role, m.UserID)
		}
		if seen[m.UserID] {
			return Errorf(CodeBadRequest, "member %s listed twice", m.UserID)
		}
		seen[m.UserID] = true
	}
	return nil
}

// AddMember adds user to conv with role (or changes its role).
func (s *Service) AddMember(ctx context.Context, conv int64, m eventstore.Member) (uint64, error) {
	if err := checkMembers([]eventstore.Member{m}); err != nil {
		return 0, err
	}
	if !s.dir.Exists(conv) {
		return 0, Errorf(CodeNotFound, "conversation %d not found", conv)
	}
	return s.appendSettled(ctx, &eventstore.MemberChanged{ConversationID: conv, Op: eventstore.OpAdd, UserID: m.UserID, Role: m.Role})
}

// RemoveMember removes user from conv.
func (s *Service) RemoveMember(ctx context.Context, conv int64, user string) (uint64, error) {
	if !s.dir.Exists(conv) {
		return 0, Errorf(CodeNotFound, "conversation %d not found", conv)
	}
	if !s.dir.IsMember(conv, user) {
		return 0, Errorf(CodeNotFound, "%s is not a member of conversation %d", user, conv)
	}
	return s.appendSettled(ctx, &eventstore.MemberChanged{ConversationID: conv, Op: eventstore.OpRemove, UserID: user})
}

// SetProfile sets a user's display name and avatar URL.
func (s *Service) SetProfile(ctx context.Context, user, name string, avatar *string) (uint64, error) {
	if err := checkUserID("user id", user); err != nil {
		return 0, err
	}
	if name == "" || utf8.RuneCountInString(name) > 200 || !utf8.ValidString(name) {
		return 0, Errorf(CodeBadRequest, "name must be 1 to 200 characters")
	}
	if avatar != nil && len(*avatar) > 2048 {
		return 0, Errorf(CodeBadRequest, "avatar URL longer than 2048 bytes")
	}
	return s.appendSettled(ctx, &eventstore.Profile{UserID: user, Name: name, Avatar: avatar})
}

// PostSystem appends a system message (sender "system", type SYSTEM) to conv.
func (s *Service) PostSystem(ctx context.Context, conv int64, text string) (uint64, error) {
	if err := s.checkText(text); err != nil {
		return 0, err
	}
	if !s.dir.Exists(conv) {
		return 0, Errorf(CodeNotFound, "conversation %d not found", conv)
	}
	return s.append(ctx, &eventstore.Message{
		ConversationID: conv, SenderID: eventstore.SystemSender, SenderName: "System",
		Text: text, MsgType: eventstore.TypeSystem,
	})
}

// CreateJob creates a job followed by members, with id or the next free one.
func (s *Service) CreateJob(ctx context.Context, id int64, members []string) (int64, uint64, error) {
	if id < 0 || id > eventstore.MaxID {
		return 0, 0, Errorf(CodeBadRequest, "job id %d must be a positive integer up to %d (2^53−1)", id, int64(eventstore.MaxID))
	}
	for _, u := range members {
		if err := checkUserID("member id", u); err != nil {
			return 0, 0, err
		}
	}
	return s.claim(ctx, "job", id, &s.nextJob, s.dir.MaxJobID, func(jid int64) eventstore.Event {
		return &eventstore.Job{JobID: jid, Members: members}
	})
}

// PostJobStatus appends a job status update.
func (s *Service) PostJobStatus(ctx context.Context, job int64, status string, detail json.RawMessage) (uint64, error) {
	if !s.dir.JobExists(job) {
		return 0, Errorf(CodeNotFound, "job %d not found", job)
	}
	if status == "" || len(status) > 64 {
		return 0, Errorf(CodeBadRequest, "status must be 1 to 64 bytes")
	}
	if len(detail) > 0 && !json.Valid(detail) {
		return 0, Errorf(CodeBadRequest, "detail is not valid JSON")
	}
	return s.append(ctx, &eventstore.JobStatus{JobID: job, Status: status, Detail: detail})
}
