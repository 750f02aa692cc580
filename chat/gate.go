package chat

import (
	"errors"

	"inbox/admission"
)

// Gate sheds load at the door: Admit refuses what the node cannot take on in
// time (a *admission.Shed), before anything is appended; Begin and Done
// bracket each admitted write, so the gate sees how long sends take.
// *admission.Controller is one.
type Gate interface {
	Admit(admission.Kind) error
	Begin() admission.Started
	Done(admission.Started, uint64)
}

var _ Gate = (*admission.Controller)(nil)

// admit asks the gate, if any, whether a write of kind k may go ahead: a
// refusal is an unavailable error with the shed's retry hint.
func (s *Service) admit(k admission.Kind) error {
	if s.gate == nil {
		return nil
	}
	err := s.gate.Admit(k)
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

// begin starts timing an admitted write.
func (s *Service) begin() write {
	if s.gate == nil {
		return write{}
	}
	return write{gate: s.gate, started: s.gate.Begin()}
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
