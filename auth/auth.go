// Package auth authenticates inbox's clients and operators: it verifies the
// JWTs users present (HS256 with a shared secret, or RS256/EdDSA with a public
// key), takes them from an HTTP request (Authorization header, token query
// parameter or, from allowed origins only, the inbox_token cookie), mints
// tokens, checks the service admin token, and keeps the development secrets
// inboxd generates into its data folder when none are configured.
package auth

import (
	"errors"
	"fmt"
	"time"
)

// Errors callers branch on. Every error Verify, Authenticate and
// (*AdminToken).Check return wraps exactly one of ErrUnauthorized or
// ErrForbidden; its message ("unauthorized: token expired") carries a reason
// fit for a 401/403 response body and never a secret.
var (
	// ErrUnauthorized: no credentials, or credentials that do not verify (HTTP 401).
	ErrUnauthorized = errors.New("unauthorized")
	// ErrForbidden: an admin token was presented but it is not the right one (HTTP 403).
	ErrForbidden = errors.New("forbidden")

	// ErrNoToken: the request carried no token at all. Wraps ErrUnauthorized.
	ErrNoToken = fmt.Errorf("%w: no token", ErrUnauthorized)
	// ErrTokenExpired: the token's exp has passed (beyond the leeway). Wraps ErrUnauthorized.
	ErrTokenExpired = fmt.Errorf("%w: token expired", ErrUnauthorized)
)

// Shortest secrets accepted. An HS256 secret shorter than the hash is
// open to an offline guess from any one token; an admin token is a password
// that opens the whole service API.
const (
	MinSecretBytes   = 32 // HS256 secret (INBOX_JWT_SECRET), in bytes
	MinAdminTokenLen = 24 // admin token (INBOX_ADMIN_TOKEN), in characters
)

// checkSecret refuses an HS256 secret shorter than MinSecretBytes.
func checkSecret(secret string) error {
	if len(secret) < MinSecretBytes {
		return fmt.Errorf("JWT secret (INBOX_JWT_SECRET) is %d bytes, want at least %d: generate one with `openssl rand -hex 32`", len(secret), MinSecretBytes)
	}
	return nil
}

// unauthorized returns an error wrapping ErrUnauthorized with a reason.
func unauthorized(reason string) error {
	return fmt.Errorf("%w: %s", ErrUnauthorized, reason)
}

// Claims are what inbox takes from a verified token.
type Claims struct {
	// UserID is the token's sub: a valid user id ([A-Za-z0-9_-]{1,64}).
	UserID string
	// Name is the optional display name (claim "name").
	Name string
	// Picture is the optional avatar URL (claim "picture").
	Picture string
	// ExpiresAt is the token's exp.
	ExpiresAt time.Time
}
