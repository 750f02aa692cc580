package chat

import (
	"context"
	"errors"
	"time"

	"inbox/admission"
)

// Gate sheds load at the door: AdmitWaited refuses what the node cannot
// take on in time (a *admission.Shed), before anything is appended, and
// Begin and Done bracket each admitted write, so the gate sees how long
// writes take from their arrival. *admission.Controller is one.
type Gate interface {
	AdmitWaited(k admission.Kind, waited time.Duration) error
	Begin(arrived time.Time) admission.Started
	Done(admission.Started, uint64)
}

var _ Gate = (*admission.Controller)(nil)

type receivedKey struct{}

// Received returns ctx carrying when a request reached the node (a socket
// frame read, an HTTP request received). The time it waited before the
// service took it counts toward admission: a write that waited past the
// bound is refused, and its wait is part of its append latency.
func Received(ctx context.Context, at time.Time) context.Context {
	return context.WithValue(ctx, receivedKey{}, at)
}

// received is when ctx's request reached the node, or now.
func (s *Service) received(ctx context.Context) time.Time {
	if at, ok := ctx.Value(receivedKey{}).(time.Time); ok {
		return at
	}
	return s.now()
}

// Admit says whether a user's write of kind k may go ahead now: nil, or an
// unavailable error with a retry hint (IsShed). The edge asks before it
// queues a frame; the service asks again when it takes the request.
func (s *Service) Admit(k admission.Kind) error { return s.admit(context.Background(), k) }

// admit asks the gate, if any, whether a write of kind k that arrived as
// ctx says may go ahead: a refusal is an unavailable error with the shed's
// retry hint.
func (s *Service) admit(ctx context.Context, k admission.Kind) error {
	if s.gate == nil {
		return nil
	}
	err := s.gate.AdmitWaited(k, s.now().Sub(s.received(ctx)))
	var shed *admission.Shed
	if errors.As(err, &shed) {
		return &Error{Code: CodeUnavailable, Msg: shed.Error(), Err: shed, RetryAfter: shed.RetryAfter}
	}
	return err
}

// write is an admitted write in progress: done reports its end.
type write struct {
	gate    Gate
	started admission.Started
}

// begin starts timing an admitted write, from its arrival.
func (s *Service) begin(ctx context.Context) write {
	if s.gate == nil {
		return write{}
	}
	return write{gate: s.gate, started: s.gate.Begin(s.received(ctx))}
}

// done ends it: seq is what it stored (0: nothing).
func (w write) done(seq uint64) {
	if w.gate != nil {
		w.gate.Done(w.started, seq)
	}
}

// IsShed reports whether err is a refusal by the gate (the node is busy),
// which is counted, not logged.
func IsShed(err error) bool {
	var shed *admission.Shed
	return errors.As(err, &shed)
}
