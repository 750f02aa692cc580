package httpapi

import (
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"inbox/chat"
	"inbox/eventstore"
	"inbox/internal/jsonin"
)

// CodeUnauthorized is the error code of a missing or invalid credential. The
// other codes are chat's (chat.CodeBadRequest, …), shared with the socket.
const CodeUnauthorized = "unauthorized"

// CodeMethodNotAllowed is the error code of a request whose path exists but
// not under its method (HTTP 405, with an Allow header).
const CodeMethodNotAllowed = "method_not_allowed"

// statusOf is the HTTP status of each error code.
var statusOf = map[string]int{
	chat.CodeBadRequest:  http.StatusBadRequest,
	CodeUnauthorized:     http.StatusUnauthorized,
	chat.CodeForbidden:   http.StatusForbidden,
	chat.CodeNotFound:    http.StatusNotFound,
	chat.CodeConflict:    http.StatusConflict,
	chat.CodeTooLarge:    http.StatusRequestEntityTooLarge,
	chat.CodeRateLimited: http.StatusTooManyRequests,
	chat.CodeUnavailable: http.StatusServiceUnavailable,
	chat.CodeInternal:    http.StatusInternalServerError,
}

// errorBody is every error response: {"error": "...", "code": "..."}.
type errorBody struct {
	Error string `json:"error"`
	Code  string `json:"code"`
	// RetryAfterMS, when the server said when to retry (a node shedding
	// load), is Retry-After in milliseconds.
	RetryAfterMS int64 `json:"retry_after_ms,omitempty"`
}

// badRequest returns a bad_request error with a message.
func badRequest(format string, args ...any) error {
	return chat.Errorf(chat.CodeBadRequest, format, args...)
}

// writeError answers with err's code and status. Only a *chat.Error's own
// message reaches the client; any other error is logged by the caller and
// shown as its code's generic text.
func (a *api) writeError(w http.ResponseWriter, err error) {
	code := chat.CodeOf(err)
	var ce *chat.Error
	var msg string
	switch {
	case errors.As(err, &ce):
		msg = ce.Msg
	case code == chat.CodeUnavailable:
		msg = "the service is temporarily unavailable; retry later"
	default:
		msg = "internal error"
	}
	status, ok := statusOf[code]
	if !ok {
		status, code = http.StatusInternalServerError, chat.CodeInternal
	}
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="inbox"`)
	}
	var retryMS int64
	if status == http.StatusServiceUnavailable || status == http.StatusTooManyRequests {
		retry := chat.RetryAfterOf(err)
		secs := max(1, int64(math.Ceil(retry.Seconds()))) // whole seconds, at least 1
		w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
		retryMS = retry.Milliseconds()
	}
	writeJSON(w, status, errorBody{Error: msg, Code: code, RetryAfterMS: retryMS})
}

// errorText is err for the log: a chat.Error's cause too, when it has one.
func errorText(err error) string {
	var ce *chat.Error
	if errors.As(err, &ce) && ce.Err != nil && ce.Err.Error() != ce.Msg {
		return ce.Msg + ": " + ce.Err.Error()
	}
	return err.Error()
}

// writeJSON writes v as the JSON response with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v) // the client went away; nothing to do
}

// decode reads r's JSON body into dst: at most MaxBodyBytes, one value,
// nothing after it, valid UTF-8, names matched exactly, no name twice, no
// unknown fields (jsonin). Its errors name what is wrong.
func (a *api) decode(w http.ResponseWriter, r *http.Request, dst any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, _ := strings.Cut(ct, ";")
		if mt = strings.TrimSpace(strings.ToLower(mt)); mt != "application/json" && !strings.HasSuffix(mt, "+json") {
			return badRequest("Content-Type %q is not JSON (want application/json)", mt)
		}
	}
	err := jsonin.Read(http.MaxBytesReader(w, r.Body, a.cfg.MaxBodyBytes), dst, jsonin.RejectUnknown)
	var mbe *http.MaxBytesError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &mbe):
		return chat.Errorf(chat.CodeTooLarge, "request body is larger than the limit of %d bytes", mbe.Limit)
	}
	return &chat.Error{Code: chat.CodeBadRequest, Msg: "request body: " + err.Error(), Err: err}
}

// pathID parses the positive integer path value name ("id").
func pathID(r *http.Request, name, what string) (int64, error) {
	s := r.PathValue(name)
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || s[0] == '+' || !eventstore.ValidID(id) {
		return 0, badRequest("%s id %q in the path must be a positive integer up to %d (2^53−1)", what, truncate(s, 32), int64(eventstore.MaxID))
	}
	annotate(r, what+"_id", id)
	return id, nil
}

// pathUser returns the user id path value, which must be a valid user id.
func pathUser(r *http.Request) (string, error) {
	u := r.PathValue("user_id")
	if !eventstore.ValidUserID(u) {
		return "", badRequest("user id %q in the path must match [A-Za-z0-9_-]{1,64}", u)
	}
	annotate(r, "target_user_id", u)
	return u, nil
}

// queryInt parses an optional integer query parameter within [lo, hi]; def
// when it is absent.
func queryInt(r *http.Request, name string, def, lo, hi int64) (int64, error) {
	q := r.URL.Query()
	if !q.Has(name) {
		return def, nil
	}
	s := q.Get(name)
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < lo || n > hi {
		return 0, badRequest("query parameter %s=%q must be an integer from %d to %d", name, truncate(s, 32), lo, hi)
	}
	return n, nil
}

// truncate shortens a client's string to n bytes for an error message.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
