package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"inbox/auth"
	"inbox/internal/cli"
	"inbox/node"
)

// tokenCmd mints a user token that inboxd accepts and prints it on stdout:
//
//	inbox token [--data DIR] [--ttl 24h] [--name "Display Name"] [--key FILE] [--jwt-issuer ISS] [--jwt-audience AUD] <user>
//
// It signs with --key (a PEM private key) if given, with --jwt-secret
// (INBOX_JWT_SECRET, inboxd's) if set, and otherwise with the development
// secret inboxd generated into the data folder. Its flags read their INBOX_*
// variables like inboxd's, so it shares inboxd's environment.
func tokenCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("inbox token", flag.ContinueOnError)
	fs.SetOutput(stdout)
	var o tokenOptions
	fs.StringVar(&o.dataDir, "data", node.DefaultDataDir, "data folder whose development secret signs the token")
	fs.DurationVar(&o.ttl, "ttl", auth.DefaultTokenTTL, "how long the token is valid")
	fs.StringVar(&o.name, "name", "", "display name (the token's name claim)")
	fs.StringVar(&o.keyFile, "key", "", "PEM private key (RSA or Ed25519) to sign with, when inboxd verifies with --jwt-public-key")
	fs.StringVar(&o.secret, "jwt-secret", "", "HS256 secret to sign with: inboxd's --jwt-secret")
	fs.StringVar(&o.publicKey, "jwt-public-key", "", "inboxd's --jwt-public-key, if it verifies with one: then --key must be given")
	fs.StringVar(&o.issuer, "jwt-issuer", "", "iss claim, when inboxd requires one (its --jwt-issuer)")
	fs.StringVar(&o.audience, "jwt-audience", "", "aud claim, when inboxd requires one (its --jwt-audience)")
	cli.Describe(fs, "inbox token [flags] <user>", `
Mint a JWT for <user> that inboxd accepts, and print it. It signs with --key (a
PEM private key, when inboxd verifies with INBOX_JWT_PUBLIC_KEY), else with
INBOX_JWT_SECRET if set, else with the development secret inboxd generated into
the data folder.`,
		"inbox token alice                                   # valid for 24 hours",
		"inbox token --name \"Alice Doe\" --ttl 1h alice",
		"curl -H \"Authorization: Bearer $(inbox token alice)\" http://127.0.0.1:8000/api/conversations")

	// Flags may come before or after the user.
	users, err := cli.ParseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(users) != 1 {
		return fmt.Errorf("want exactly one user id, got %d (usage: inbox token [flags] <user>)", len(users))
	}

	cfg, err := o.signer()
	if err != nil {
		return err
	}
	cfg.Issuer, cfg.Audience = o.issuer, o.audience
	m, err := auth.NewMinter(cfg)
	if err != nil {
		return err
	}
	token, err := m.Mint(users[0], o.name, o.ttl)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, token)
	return err
}

// tokenOptions are inbox token's flags.
type tokenOptions struct {
	dataDir, name, keyFile string
	secret, publicKey      string
	issuer, audience       string
	ttl                    time.Duration
}

// signer picks the key inboxd verifies with: --key, --jwt-secret, or the
// data folder's development secret.
func (o tokenOptions) signer() (auth.MinterConfig, error) {
	switch {
	case o.keyFile != "":
		return auth.MinterConfig{PrivateKeyFile: o.keyFile}, nil
	case o.secret != "":
		return auth.MinterConfig{Secret: o.secret}, nil
	case o.publicKey != "":
		return auth.MinterConfig{}, errors.New("--jwt-public-key (INBOX_JWT_PUBLIC_KEY) is set, so inboxd accepts only tokens signed by its private key: pass it with --key FILE")
	}
	s, err := auth.LoadDevSecrets(o.dataDir)
	if errors.Is(err, auth.ErrNoDevSecrets) {
		return auth.MinterConfig{}, fmt.Errorf("%w (start inboxd with --data %s first, or set INBOX_JWT_SECRET)", err, o.dataDir)
	}
	if err != nil {
		return auth.MinterConfig{}, err
	}
	return auth.MinterConfig{Secret: s.JWTSecret}, nil
}
