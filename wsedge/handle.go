package wsedge

import (
	"github.com/gobwas/ws"

	"inbox/chat"
)

// handle acts on one complete client text frame. Every failure is answered
// with an ERROR frame and the socket stays open, except repeated rate-limit
// violations (1008).
func (c *conn) handle(data []byte) {
	req, err := decodeFrame(data)
	c.hub.framesIn[req.op].Inc()
	if !c.lim.Allow() {
		c.strikes++
		if c.strikes >= c.hub.cfg.RateStrikes {
			c.hub.log.Info("closing socket: rate limit", "user_id", c.user)
			c.closeWith(ws.StatusPolicyViolation, "rate limit exceeded repeatedly")
			return
		}
		c.replyError(chat.Errorf(chat.CodeRateLimited, "too many frames: at most %g per second", c.hub.cfg.RatePerSecond), req)
		return
	}
	c.strikes = 0
	if err == nil {
		err = c.scope(&req)
	}
	if err != nil {
		c.replyError(err, req)
		return
	}
	ctx := c.hub.ctx
	svc := c.hub.svc
	switch req.op {
	case inMessage:
		seq, err := svc.Send(ctx, c.sender, chat.SendRequest{
			ConversationID: req.ConversationID, Text: *req.Message, Type: req.Type, ClientMsgID: req.ClientMsgID,
		})
		if err != nil {
			c.replyError(err, req)
			return
		}
		if req.ClientMsgID != "" {
			c.enqueue(encodeAck(req.ClientMsgID, req.ConversationID, seq))
		}
	case inTyping:
		if _, err := svc.Typing(ctx, c.user, req.ConversationID, *req.IsTyping); err != nil {
			c.replyError(err, req)
		}
	case inRead:
		if _, err := svc.Read(ctx, c.user, req.ConversationID, req.UpTo, req.MessageIDs); err != nil {
			c.replyError(err, req)
		}
	case inPing:
		c.enqueue(pongFrame)
	case inResume:
		c.resume(*req.Since)
	}
}

// scope applies the socket's endpoint to a request: a legacy chat socket
// speaks for its conversation only (conversation_id may be omitted); a job
// socket only pings.
func (c *conn) scope(req *request) error {
	switch c.ep {
	case epChat:
		if req.op == inPing || req.op == inResume {
			return nil
		}
		if req.ConversationID == 0 {
			req.ConversationID = c.id
		} else if req.ConversationID != c.id {
			return chat.Errorf(chat.CodeForbidden, "this socket carries conversation %d only", c.id)
		}
	case epJob:
		if req.op != inPing && req.op != inResume {
			return chat.Errorf(chat.CodeBadRequest, "a job socket accepts only PING and RESUME")
		}
	}
	return nil
}

func (c *conn) replyError(err error, req request) {
	code := chat.CodeOf(err)
	if code == chat.CodeInternal || code == chat.CodeUnavailable {
		c.hub.log.Warn("client frame failed", "user_id", c.user, "conversation_id", req.ConversationID, "code", code, "err", err)
	}
	c.enqueue(encodeError(err, req.ClientMsgID, req.ConversationID))
}
