package auth

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/http"
	"unicode/utf8"
)

// AdminToken checks the service token of the admin API
// (INBOX_ADMIN_TOKEN). It is safe for concurrent use.
type AdminToken struct {
	// sum is the token's SHA-256: comparing digests of equal length keeps
	// the comparison constant-time and leaks not even the token's length.
	sum [sha256.Size]byte
}

// NewAdminToken returns a checker for token, which must be at least
// MinAdminTokenLen characters long.
func NewAdminToken(token string) (*AdminToken, error) {
	if n := utf8.RuneCountInString(token); n < MinAdminTokenLen {
		return nil, fmt.Errorf("admin token (INBOX_ADMIN_TOKEN) is %d characters, want at least %d: generate one with `openssl rand -hex 32`", n, MinAdminTokenLen)
	}
	return &AdminToken{sum: sha256.Sum256([]byte(token))}, nil
}

// Check verifies the "Authorization: Bearer <admin token>" of r. A missing
// token (or another scheme) is an error wrapping ErrUnauthorized (HTTP 401);
// a wrong one wraps ErrForbidden (HTTP 403).
func (a *AdminToken) Check(r *http.Request) error {
	h := r.Header.Get("Authorization")
	if h == "" {
		return unauthorized("missing admin token")
	}
	token, ok := bearer(h)
	if !ok || token == "" {
		return unauthorized("admin token must be sent as Authorization: Bearer")
	}
	sum := sha256.Sum256([]byte(token))
	if subtle.ConstantTimeCompare(sum[:], a.sum[:]) != 1 {
		return errWrongAdminToken
	}
	return nil
}

var errWrongAdminToken = fmt.Errorf("%w: wrong admin token", ErrForbidden)
