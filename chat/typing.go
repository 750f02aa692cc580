package chat

import (
	"context"
	"time"

	"inbox/admission"
	"inbox/eventstore"
)

type typingKey struct {
	user string
	conv int64
}

type typingState struct {
	at      time.Time      // when the last event was admitted
	on      bool           // its state
	repeat  time.Duration  // the same state again is admitted this long after at
	pending *pendingTyping // appends the other state once TypingGap has passed
}

// pendingTyping is a change of state waiting for TypingGap. Its timer's
// goroutine is owned by the service: counted in s.timers when scheduled,
// done when it has run or when cancelPendingLocked stopped it first.
type pendingTyping struct{ t *time.Timer }

// Typing appends a typing event unless the user sent the same state for this
// conversation too recently (repeatAfter); then it returns 0 and no error.
// It is AdmitTyping followed by AppendTyping.
func (s *Service) Typing(ctx context.Context, user string, conv int64, isTyping bool) (uint64, error) {
	ev, err := s.AdmitTyping(user, conv, isTyping)
	if ev == nil || err != nil {
		return 0, err
	}
	return s.AppendTyping(ctx, ev)
}

// AdmitTyping checks a typing frame and applies the throttle without blocking:
// it returns the event to append now, or nil. At most one event per user and
// conversation is admitted per TypingGap, and the same state again only after
// TypingInterval ±25% (repeatAfter). A change of state (started → stopped)
// sooner than TypingGap is appended by the service itself once the gap has
// passed, unless the user changes back meanwhile: the latest state wins and
// none is lost.
//
// A start carries ExpiresAt (now + TypingTTL): receivers treat the user as
// stopped from then on unless a later start extends it, so a start with no
// follow-up ends by itself. A client that keeps typing re-sends starts; about
// one per TypingInterval (by default half the expiry) is admitted, each
// pushing the expiry forward.
func (s *Service) AdmitTyping(user string, conv int64, isTyping bool) (*eventstore.Typing, error) {
	if err := s.checkMember(conv, user); err != nil {
		return nil, err
	}
	if s.admit(context.Background(), admission.Typing) != nil {
		// Shed while the node is busy, before the throttle notes it: the
		// client's next frame tries again. Silent, like a throttled one.
		return nil, nil
	}
	k := typingKey{user, conv}
	now := s.now()
	s.typingMu.Lock()
	defer s.typingMu.Unlock()
	last, ok := s.typing[k]
	switch {
	case ok && last.pending != nil:
		if isTyping == last.on { // changed back: nothing to announce
			s.cancelPendingLocked(last.pending)
			last.pending = nil
			s.typing[k] = last
		}
		return nil, nil
	case ok && last.on == isTyping && now.Sub(last.at) < last.repeat:
		return nil, nil
	case ok && now.Sub(last.at) < s.limits.TypingGap:
		if s.ctx.Err() != nil { // closed: no more deferred typing events
			return nil, nil
		}
		p := &pendingTyping{}
		s.timers.Add(1)
		p.t = time.AfterFunc(s.limits.TypingGap-now.Sub(last.at), func() {
			defer s.timers.Done()
			s.typingDue(k, p)
		})
		last.pending = p
		s.typing[k] = last
		return nil, nil
	}
	if len(s.typing) > 100_000 {
		s.pruneTypingLocked(now)
	}
	return s.admitTypingLocked(k, isTyping, now), nil
}

func (s *Service) admitTypingLocked(k typingKey, isTyping bool, now time.Time) *eventstore.Typing {
	s.typing[k] = typingState{at: now, on: isTyping, repeat: s.repeatAfter()}
	ev := &eventstore.Typing{ConversationID: k.conv, UserID: k.user, IsTyping: isTyping}
	if isTyping {
		ev.ExpiresAt = now.Add(s.limits.TypingTTL).UTC()
	}
	return ev
}

// cancelPendingLocked stops p's timer. If it had not fired, its goroutine
// never runs and the service stops counting it here; if it had, typingDue
// finds p no longer pending and does nothing. Lock should be held.
func (s *Service) cancelPendingLocked(p *pendingTyping) {
	if p.t.Stop() {
		s.timers.Done()
	}
}

// closeTyping cancels the typing changes still waiting for their gap and
// waits for those already appending, whose context Close has cancelled.
func (s *Service) closeTyping() {
	s.typingMu.Lock()
	for k, st := range s.typing {
		if st.pending != nil {
			s.cancelPendingLocked(st.pending)
			st.pending = nil
			s.typing[k] = st
		}
	}
	s.typingMu.Unlock()
	s.timers.Wait()
}

// repeatAfter is how long after an admitted typing event the same state is
// admitted again: TypingInterval ±25% at random, never under TypingGap.
// Without the spread, users who start typing together (a reconnect wave, a
// storm) would repeat together every interval forever: one burst of appends
// each interval instead of an even flow. The latest repeat, 1.25 intervals
// (6.25 s by default), still extends a start well before its TTL (10 s).
func (s *Service) repeatAfter() time.Duration {
	i := s.limits.TypingInterval
	return max(s.limits.TypingGap, i*3/4+time.Duration(s.rand()*float64(i/2)))
}

// typingDue appends a change of state that waited for TypingGap (p).
func (s *Service) typingDue(k typingKey, p *pendingTyping) {
	s.typingMu.Lock()
	last, ok := s.typing[k]
	if !ok || last.pending != p || s.ctx.Err() != nil {
		s.typingMu.Unlock()
		return // cancelled, or the service closed
	}
	if s.admit(context.Background(), admission.Typing) != nil { // shed: the change is dropped
		last.pending = nil
		s.typing[k] = last
		s.typingMu.Unlock()
		return
	}
	ev := s.admitTypingLocked(k, !last.on, s.now())
	s.typingMu.Unlock()
	ctx, cancel := context.WithTimeout(s.ctx, s.limits.SettleTimeout)
	defer cancel()
	if _, err := s.AppendTyping(ctx, ev); err != nil {
		s.log.Warn("deferred typing event not appended", "user_id", k.user, "conversation_id", k.conv, "is_typing", ev.IsTyping, "err", err)
	}
}

// typingEnded notes that user's message in conv ended its typing indicator
// there (receivers clear it on a message, docs/protocol.md). So the next
// start is a change of state, announced within TypingGap, and not a repeat
// held back for TypingInterval while receivers show nobody typing. A change
// still waiting for its gap is moot and dropped.
func (s *Service) typingEnded(user string, conv int64) {
	k := typingKey{user, conv}
	s.typingMu.Lock()
	defer s.typingMu.Unlock()
	last, ok := s.typing[k]
	if !ok || (!last.on && last.pending == nil) {
		return
	}
	if last.pending != nil {
		s.cancelPendingLocked(last.pending)
		last.pending = nil
	}
	last.on = false
	s.typing[k] = last
}

// AppendTyping appends a typing event AdmitTyping returned.
func (s *Service) AppendTyping(ctx context.Context, ev *eventstore.Typing) (uint64, error) {
	w := s.begin(ctx)
	seq, err := s.append(ctx, ev)
	w.done(seq)
	return seq, err
}

// AppendTypingAsync is AppendTyping without the wait: the event is handed
// to the stream, in order with the caller's later appends, and done (if
// set) gets the append's error, nil once stored, when the stream answered.
// A socket's worker uses it so that the socket's next frames, its
// messages, never queue behind a typing event: under a typing storm each
// append can take hundreds of milliseconds, and a message that waited
// behind one counted as late and was refused.
func (s *Service) AppendTypingAsync(ctx context.Context, ev *eventstore.Typing, done func(error)) {
	a, ok := s.store.(AsyncAppender)
	if !ok {
		_, err := s.AppendTyping(ctx, ev)
		if done != nil {
			done(err)
		}
		return
	}
	w := s.begin(ctx)
	finish := func(seq uint64, err error) {
		w.done(seq)
		if _, err = appended(seq, err); done != nil {
			done(err)
		}
	}
	if err := a.AppendAsync(ev, finish); err != nil {
		finish(0, err)
	}
}

func (s *Service) pruneTypingLocked(now time.Time) {
	for k, st := range s.typing {
		if st.pending == nil && now.Sub(st.at) >= st.repeat {
			delete(s.typing, k)
		}
	}
}
