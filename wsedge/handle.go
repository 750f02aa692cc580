package wsedge

import (
	"context"
	"fmt"
	"time"

	"github.com/gobwas/ws"

	"inbox/admission"
	"inbox/chat"
	"inbox/eventstore"
)

// handle acts on one complete client text frame. Every failure is answered
// with an ERROR frame and the socket stays open, except repeated rate-limit
// violations (1008). A frame that needs the stream (a message, an admitted
// TYPING, READ, RESUME) goes to the worker; the rest is answered here unless
// the worker is busy, so replies keep the order of the frames.
func (c *conn) handle(data []byte) {
	req, err := decodeFrame(data)
	c.hub.framesIn[req.op].Inc()
	if !c.lim.Allow() {
		c.strikes++
		if c.strikes >= c.hub.cfg.RateStrikes {
			c.hub.refusals.Info("rate_limit", "closing socket: rate limit", "user_id", c.user)
			c.closeWith(ws.StatusPolicyViolation, "rate limit exceeded repeatedly")
			return
		}
		err = chat.Errorf(chat.CodeRateLimited, "too many frames: at most %g per second", c.hub.cfg.RatePerSecond)
	} else {
		c.strikes = 0
		if err == nil {
			err = c.scope(&req)
		}
		if err == nil && req.op == inResume {
			err = c.admitResume()
		}
		if err == nil && isWrite(req.op) {
			// Refused at the door while the node is busy: the frame costs
			// an ERROR, not a place in the worker's queue (docs/overload.md).
			err = c.hub.svc.Admit(admission.Message)
		}
	}
	j := job{req: req, err: err}
	if err == nil && isWrite(req.op) {
		j.at = time.Now() // its wait for the worker counts toward admission
	}
	idle := c.idle()
	if err == nil && req.op == inTyping && idle {
		// Most frames of someone who keeps typing are throttled: they cost
		// no goroutine and no append.
		j.typing, j.err = c.hub.svc.AdmitTyping(c.user, req.ConversationID, *req.IsTyping)
		if j.typing == nil && j.err == nil {
			return
		}
	}
	if idle && (j.err != nil || req.op == inPing || req.op == inRefresh) {
		c.act(j)
		return
	}
	c.queue(j)
}

// isWrite reports whether a client frame of type op is a user's write that
// the node sheds while busy (admission.Message); typing has its own rule.
func isWrite(op string) bool {
	switch op {
	case inMessage, inRead, inEdit, inDelete, inReact:
		return true
	}
	return false
}

// job is work for the socket's worker: a client frame, or the catch-up of a
// socket opened with ?since.
type job struct {
	req     request
	err     error              // the frame is refused with this error
	typing  *eventstore.Typing // an admitted typing event to append
	catchUp bool
	since   eventstore.Cursor
	at      time.Time // when a write was read (zero: other frames)
}

// maxJobs is how many frames may wait for one socket's worker; one more
// closes the socket with 1008 (the rate limit keeps a client well below it).
const maxJobs = 256

// idle reports whether the socket's worker is not running.
func (c *conn) idle() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.working
}

// queue hands j to the socket's worker, starting it if needed.
func (c *conn) queue(j job) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.jobs) >= maxJobs {
		c.hub.refusals.Info("too_many_frames", "closing socket: too many frames waiting", "user_id", c.user)
		c.closeLocked(ws.StatusPolicyViolation, "too many frames waiting")
		return
	}
	c.jobs = append(c.jobs, j)
	if !c.working {
		c.working = true
		c.hub.wg.Add(1) // the socket is being read, so the count is > 0
		go c.work()
	}
}

// work runs the socket's jobs in order until there are none, then exits.
func (c *conn) work() {
	defer c.hub.wg.Done()
	for {
		c.mu.Lock()
		if len(c.jobs) == 0 {
			c.working = false
			c.jobs = nil
			c.mu.Unlock()
			return
		}
		j := c.jobs[0]
		c.jobs[0] = job{}
		c.jobs = c.jobs[1:]
		c.mu.Unlock()
		c.act(j)
	}
}

// act does one job; it may block on the stream.
func (c *conn) act(j job) {
	req := j.req
	switch {
	case j.catchUp:
		c.catchUp(j.since)
		return
	case j.err != nil:
		c.replyError(j.err, req)
		return
	}
	ctx := c.hub.ctx
	if !j.at.IsZero() {
		ctx = chat.Received(ctx, j.at)
	}
	svc := c.hub.svc
	switch req.op {
	case inMessage:
		sent, err := svc.Send(ctx, c.sender, chat.SendRequest{
			ConversationID: req.ConversationID, Text: *req.Message, Type: req.Type, ClientMsgID: req.ClientMsgID,
		})
		if err == nil && sent.ConversationID != req.ConversationID {
			// Never acknowledge with another conversation's message.
			err = fmt.Errorf("send to conversation %d answered with message %d of conversation %d", req.ConversationID, sent.ID, sent.ConversationID)
		}
		if err != nil {
			c.replyError(err, req)
			return
		}
		if req.ClientMsgID != "" {
			c.hub.ackAfter(c, sent.ID, encodeAck(req.ClientMsgID, sent.ConversationID, sent.ID))
		}
	case inTyping:
		ev := j.typing
		if ev == nil {
			var err error
			if ev, err = svc.AdmitTyping(c.user, req.ConversationID, *req.IsTyping); err != nil {
				c.replyError(err, req)
				return
			}
			if ev == nil {
				return // throttled
			}
		}
		// Not awaited: the socket's next frames must not wait for it.
		svc.AppendTypingAsync(ctx, ev, func(err error) {
			if err != nil {
				c.replyError(err, req)
			}
		})
	case inRead:
		if _, err := svc.Read(ctx, c.user, req.ConversationID, req.UpTo, req.MessageIDs); err != nil {
			c.replyError(err, req)
		}
	case inEdit, inDelete, inReact:
		c.change(ctx, req)
	case inPing:
		c.enqueue(pongFrame)
	case inResume:
		c.resume(req.resumeFrom())
	case inRefresh:
		c.refresh(req.Token)
	}
}

// change acts on an EDIT, DELETE or REACT frame; with a client_msg_id it is
// acknowledged, naming the message and the change's seq.
func (c *conn) change(ctx context.Context, req request) {
	svc := c.hub.svc
	by := chat.Actor{UserID: c.user}
	var ch chat.Changed
	var err error
	switch req.op {
	case inEdit:
		ch, err = svc.Edit(ctx, by, chat.EditRequest{ConversationID: req.ConversationID, MessageID: req.MessageID, Text: *req.Message, ClientMsgID: req.ClientMsgID})
	case inDelete:
		ch, err = svc.Delete(ctx, by, chat.DeleteRequest{ConversationID: req.ConversationID, MessageID: req.MessageID, ClientMsgID: req.ClientMsgID})
	case inReact:
		ch, err = svc.React(ctx, c.user, chat.ReactRequest{ConversationID: req.ConversationID, MessageID: req.MessageID, Emoji: req.Emoji, On: *req.On, ClientMsgID: req.ClientMsgID})
	}
	if err == nil && (ch.ConversationID != req.ConversationID || ch.MessageID != req.MessageID) {
		err = fmt.Errorf("%s of message %d in %d answered with message %d of %d", req.op, req.MessageID, req.ConversationID, ch.MessageID, ch.ConversationID)
	}
	if err != nil {
		c.replyError(err, req)
		return
	}
	if req.ClientMsgID != "" {
		c.hub.ackAfter(c, ch.Seq, encodeChangeAck(req.ClientMsgID, ch.ConversationID, ch.MessageID, ch.Seq))
	}
}

// scope applies the socket's endpoint to a request: a legacy chat socket
// speaks for its conversation only (conversation_id may be omitted); a job
// socket only pings.
func (c *conn) scope(req *request) error {
	switch c.ep {
	case epChat:
		if req.op == inPing || req.op == inResume || req.op == inRefresh {
			return nil
		}
		if req.ConversationID == 0 {
			req.ConversationID = c.id
		} else if req.ConversationID != c.id {
			return chat.Errorf(chat.CodeForbidden, "this socket carries conversation %d only", c.id)
		}
	case epJob:
		if req.op != inPing && req.op != inResume && req.op != inRefresh {
			return chat.Errorf(chat.CodeBadRequest, "a job socket accepts only PING, RESUME and REFRESH")
		}
	}
	return nil
}

func (c *conn) replyError(err error, req request) {
	code := chat.CodeOf(err)
	if (code == chat.CodeInternal || code == chat.CodeUnavailable) && !chat.IsShed(err) { // shed requests are counted, not logged
		c.hub.log.Warn("client frame failed", "user_id", c.user, "conversation_id", req.ConversationID, "code", code, "err", err)
	}
	c.enqueue(encodeError(err, req.ClientMsgID, req.ConversationID))
}
