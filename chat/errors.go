package chat

import (
	"context"
	"errors"
	"fmt"
	"time"

	"inbox/eventstore"
)

// Error codes, shared by the socket's ERROR frames and the HTTP API's error bodies.
const (
	CodeBadRequest  = "bad_request"
	CodeForbidden   = "forbidden"
	CodeNotFound    = "not_found"
	CodeConflict    = "conflict"
	CodeRateLimited = "rate_limited"
	CodeTooLarge    = "too_large"
	CodeUnavailable = "unavailable"
	CodeInternal    = "internal"
)

// Error is a coded, client-facing error.
type Error struct {
	Code string
	Msg  string
	Err  error // cause, not shown to clients
	// RetryAfter, if set, is when the client may try again (an ERROR
	// frame's retry_after_ms, an HTTP Retry-After).
	RetryAfter time.Duration
}

func (e *Error) Error() string { return e.Msg }
func (e *Error) Unwrap() error { return e.Err }

// Errorf returns a coded error.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// RetryAfterOf returns err's retry hint (0: none).
func RetryAfterOf(err error) time.Duration {
	var e *Error
	if errors.As(err, &e) {
		return e.RetryAfter
	}
	return 0
}

// CodeOf returns err's code: its own if it is an *Error, else unavailable for
// an unreachable stream, else internal.
func CodeOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	if errors.Is(err, eventstore.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
		return CodeUnavailable
	}
	return CodeInternal
}
