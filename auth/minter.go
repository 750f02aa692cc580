package auth

import (
	"crypto/ed25519"
	"crypto/rsa"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"inbox/eventstore"
)

// DefaultTokenTTL is how long a minted development token lasts: inbox
// token's, the demo's and the console's development sign-in.
const DefaultTokenTTL = 24 * time.Hour

// MinterConfig says how tokens are signed. Exactly one of Secret and
// PrivateKeyFile is set.
type MinterConfig struct {
	// Secret is the HS256 shared secret.
	Secret string
	// PrivateKeyFile is a PEM file holding an RSA (signs RS256) or Ed25519
	// (signs EdDSA) private key, PKCS#8 or PKCS#1.
	PrivateKeyFile string
	// Issuer and Audience, if set, go into the iss and aud claims.
	Issuer, Audience string
}

// Minter signs user tokens that a Verifier with the matching secret or
// public key accepts. It is safe for concurrent use.
type Minter struct {
	method jwt.SigningMethod
	key    any
	iss    string
	aud    jwt.ClaimStrings
	now    func() time.Time
}

// NewMinter builds a Minter from cfg. A secret shorter than MinSecretBytes
// is refused, as the Verifier refuses it.
func NewMinter(cfg MinterConfig) (*Minter, error) {
	m := &Minter{now: time.Now, iss: cfg.Issuer}
	if cfg.Audience != "" {
		m.aud = jwt.ClaimStrings{cfg.Audience}
	}
	switch {
	case cfg.Secret != "" && cfg.PrivateKeyFile != "":
		return nil, errors.New("configure either a JWT secret or a JWT private key, not both")
	case cfg.Secret != "":
		if err := checkSecret(cfg.Secret); err != nil {
			return nil, err
		}
		m.method, m.key = jwt.SigningMethodHS256, []byte(cfg.Secret)
	case cfg.PrivateKeyFile != "":
		key, err := loadPrivateKey(cfg.PrivateKeyFile)
		if err != nil {
			return nil, err
		}
		switch key.(type) {
		case *rsa.PrivateKey:
			m.method = jwt.SigningMethodRS256
		case ed25519.PrivateKey:
			m.method = jwt.SigningMethodEdDSA
		}
		m.key = key
	default:
		return nil, errors.New("no JWT secret or JWT private key configured")
	}
	return m, nil
}

// Mint returns a token for userID, valid for ttl, with the optional display
// name. userID must be a valid user id, not a reserved one, and ttl positive.
func (m *Minter) Mint(userID, name string, ttl time.Duration) (string, error) {
	if !eventstore.ValidUserID(userID) {
		return "", fmt.Errorf("mint token: invalid user id %q (want [A-Za-z0-9_-]{1,64})", userID)
	}
	if eventstore.ReservedUserID(userID) {
		return "", fmt.Errorf("mint token: user id %q is reserved for the service", userID)
	}
	if ttl <= 0 {
		return "", fmt.Errorf("mint token: ttl %v is not positive", ttl)
	}
	now := m.now().Truncate(time.Second)
	claims := tokenClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   userID,
			Issuer:    m.iss,
			Audience:  m.aud,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		},
		Name: name,
	}
	s, err := jwt.NewWithClaims(m.method, claims).SignedString(m.key)
	if err != nil {
		return "", fmt.Errorf("mint token: %w", err)
	}
	return s, nil
}
