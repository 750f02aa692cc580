package auth

import (
	"crypto/ed25519"
	"crypto/rsa"
	"errors"
	"slices"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"inbox/eventstore"
)

// DefaultLeeway is the clock skew allowed on exp and nbf when Config.Leeway is zero.
const DefaultLeeway = 30 * time.Second

// MaxTokenSize bounds the length of a token accepted from a request.
const MaxTokenSize = 8 << 10

// Config says how tokens are verified and where cookies are accepted from.
// Exactly one of Secret and PublicKeyFile is set.
type Config struct {
	// Secret is the HS256 shared secret (INBOX_JWT_SECRET).
	Secret string
	// PublicKeyFile is a PEM file holding an RSA (RS256) or Ed25519 (EdDSA)
	// public key, or a certificate for one (INBOX_JWT_PUBLIC_KEY).
	PublicKeyFile string
	// AllowedOrigins are the exact origins (scheme://host[:port]) whose
	// requests may authenticate with the inbox_token cookie
	// (INBOX_ALLOWED_ORIGINS; see SplitOrigins). Empty: cookies are never
	// accepted.
	AllowedOrigins []string
	// Leeway is the clock skew allowed on exp and nbf; zero means
	// DefaultLeeway, negative means none.
	Leeway time.Duration
	// Issuer, if set, must be the token's iss (INBOX_JWT_ISSUER), and
	// Audience one of its aud (INBOX_JWT_AUDIENCE): a token signed with the
	// same key for another service or by another issuer is refused.
	Issuer, Audience string
}

// Verifier verifies tokens with one configured key. It is safe for
// concurrent use.
type Verifier struct {
	key     any // []byte, *rsa.PublicKey or ed25519.PublicKey
	methods []string
	parser  *jwt.Parser
	iss     string // required iss, if set
	aud     string // required among aud, if set
	origins map[string]bool
}

// Algorithm families, by key type. Only the configured family is accepted,
// so "none" and alg confusion (an HS256 token signed with the bytes of an
// RSA public key) are refused before any signature check.
var (
	hmacMethods    = []string{"HS256", "HS384", "HS512"}
	rsaMethods     = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
	ed25519Methods = []string{"EdDSA"}
)

// NewVerifier builds a Verifier from cfg. A secret shorter than
// MinSecretBytes, a missing, unreadable or unsupported key, or a malformed
// allowed origin, is an error.
func NewVerifier(cfg Config) (*Verifier, error) {
	v := &Verifier{}
	switch {
	case cfg.Secret != "" && cfg.PublicKeyFile != "":
		return nil, errors.New("configure either a JWT secret or a JWT public key, not both")
	case cfg.Secret != "":
		if err := checkSecret(cfg.Secret); err != nil {
			return nil, err
		}
		v.key, v.methods = []byte(cfg.Secret), hmacMethods
	case cfg.PublicKeyFile != "":
		key, err := loadPublicKey(cfg.PublicKeyFile)
		if err != nil {
			return nil, err
		}
		switch key.(type) {
		case *rsa.PublicKey:
			v.methods = rsaMethods
		case ed25519.PublicKey:
			v.methods = ed25519Methods
		}
		v.key = key
	default:
		return nil, errors.New("no JWT secret or JWT public key configured")
	}

	origins, err := parseOrigins(cfg.AllowedOrigins)
	if err != nil {
		return nil, err
	}
	v.origins = origins

	leeway := cfg.Leeway
	if leeway == 0 {
		leeway = DefaultLeeway
	}
	v.parser = jwt.NewParser(
		jwt.WithValidMethods(v.methods),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(max(leeway, 0)),
	)
	v.iss, v.aud = cfg.Issuer, cfg.Audience
	return v, nil
}

// tokenClaims is the JSON shape of a token's claims.
type tokenClaims struct {
	jwt.RegisteredClaims
	Name    string `json:"name,omitempty"`
	Picture string `json:"picture,omitempty"`
}

// Verify checks token's algorithm, signature, exp (required) and nbf, iss
// and aud when configured, and that sub is a valid user id and not a
// reserved one (eventstore.ReservedUserID). Every error
// wraps ErrUnauthorized.
func (v *Verifier) Verify(token string) (Claims, error) {
	if len(token) > MaxTokenSize {
		return Claims{}, unauthorized("token too large")
	}
	var tc tokenClaims
	t, err := v.parser.ParseWithClaims(token, &tc, v.keyFunc)
	if err != nil {
		if t != nil && t.Method != nil && !slices.Contains(v.methods, t.Method.Alg()) {
			return Claims{}, errAlgorithm
		}
		return Claims{}, verifyError(err)
	}
	// Checked here rather than by the parser, whose missing-claim error
	// does not say which claim is missing.
	if v.iss != "" && tc.Issuer != v.iss {
		return Claims{}, unauthorized("token iss is not the configured issuer")
	}
	if v.aud != "" && !slices.Contains(tc.Audience, v.aud) {
		return Claims{}, unauthorized("token aud does not name the configured audience")
	}
	if !eventstore.ValidUserID(tc.Subject) {
		return Claims{}, unauthorized("token sub is not a valid user id")
	}
	if eventstore.ReservedUserID(tc.Subject) {
		return Claims{}, unauthorized("token sub is a reserved user id")
	}
	// The parser requires exp, so ExpiresAt is set.
	return Claims{
		UserID:    tc.Subject,
		Name:      tc.Name,
		Picture:   tc.Picture,
		ExpiresAt: tc.ExpiresAt.Time,
	}, nil
}

// keyFunc returns the configured key, after checking once more that the
// token's method belongs to the key's family.
func (v *Verifier) keyFunc(t *jwt.Token) (any, error) {
	var ok bool
	switch v.key.(type) {
	case []byte:
		_, ok = t.Method.(*jwt.SigningMethodHMAC)
	case *rsa.PublicKey:
		switch t.Method.(type) {
		case *jwt.SigningMethodRSA, *jwt.SigningMethodRSAPSS:
			ok = true
		}
	case ed25519.PublicKey:
		_, ok = t.Method.(*jwt.SigningMethodEd25519)
	}
	if !ok {
		return nil, errBadMethod
	}
	return v.key, nil
}

var (
	errBadMethod = errors.New("unexpected signing method")
	errAlgorithm = unauthorized("unexpected signing algorithm")
)

// verifyError maps a jwt parse error to a reason safe to show a client.
func verifyError(err error) error {
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return ErrTokenExpired
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return unauthorized("token has no exp")
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return unauthorized("token not valid yet")
	case errors.Is(err, jwt.ErrTokenMalformed):
		return unauthorized("malformed token")
	case errors.Is(err, errBadMethod), errors.Is(err, jwt.ErrTokenUnverifiable):
		// A missing or unknown alg.
		return errAlgorithm
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return unauthorized("invalid token signature")
	default:
		return unauthorized("invalid token")
	}
}
