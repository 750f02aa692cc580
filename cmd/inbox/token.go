package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"inbox/auth"
	"inbox/internal/cli"
)

// tokenCmd mints a user token that inboxd accepts and prints it on stdout:
//
//	inbox token [--data DIR] [--ttl 24h] [--name "Display Name"] [--key FILE] [--issuer ISS] [--audience AUD] <user>
//
// It signs with INBOX_JWT_SECRET if set, with --key (a PEM private key) if
// given, and otherwise with the development secret inboxd generated into the
// data folder.
func tokenCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("inbox token", flag.ContinueOnError)
	fs.SetOutput(stdout)
	dataDir := os.Getenv("INBOX_DATA")
	if dataDir == "" {
		dataDir = "./data"
	}
	fs.StringVar(&dataDir, "data", dataDir, "data folder whose development secret signs the token (INBOX_DATA)")
	ttl := fs.Duration("ttl", 24*time.Hour, "how long the token is valid")
	name := fs.String("name", "", "display name (the token's name claim)")
	keyFile := fs.String("key", "", "PEM private key (RSA or Ed25519) to sign with, when inboxd verifies with INBOX_JWT_PUBLIC_KEY")
	issuer := fs.String("issuer", os.Getenv("INBOX_JWT_ISSUER"), "iss claim, when inboxd requires one (INBOX_JWT_ISSUER)")
	audience := fs.String("audience", os.Getenv("INBOX_JWT_AUDIENCE"), "aud claim, when inboxd requires one (INBOX_JWT_AUDIENCE)")
	cli.Describe(fs, "inbox token [flags] <user>", `
Mint a JWT for <user> that inboxd accepts, and print it. It signs with --key (a
PEM private key, when inboxd verifies with INBOX_JWT_PUBLIC_KEY), else with
INBOX_JWT_SECRET if set, else with the development secret inboxd generated into
the data folder.`,
		"inbox token alice                                   # valid for 24 hours",
		"inbox token --name \"Alice Doe\" --ttl 1h alice",
		"curl -H \"Authorization: Bearer $(inbox token alice)\" http://127.0.0.1:8000/api/conversations")

	// Flags may come before or after the user.
	var users []string
	for {
		if err := cli.ParseFlags(fs, args); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		users = append(users, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(users) != 1 {
		return fmt.Errorf("want exactly one user id, got %d (usage: inbox token [flags] <user>)", len(users))
	}

	cfg, err := tokenSigner(dataDir, *keyFile)
	if err != nil {
		return err
	}
	cfg.Issuer, cfg.Audience = *issuer, *audience
	m, err := auth.NewMinter(cfg)
	if err != nil {
		return err
	}
	token, err := m.Mint(users[0], *name, *ttl)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, token)
	return err
}

// tokenSigner picks the key inboxd verifies with: --key, INBOX_JWT_SECRET, or
// the data folder's development secret.
func tokenSigner(dataDir, keyFile string) (auth.MinterConfig, error) {
	secret := os.Getenv("INBOX_JWT_SECRET")
	switch {
	case keyFile != "":
		return auth.MinterConfig{PrivateKeyFile: keyFile}, nil
	case secret != "":
		return auth.MinterConfig{Secret: secret}, nil
	case os.Getenv("INBOX_JWT_PUBLIC_KEY") != "":
		return auth.MinterConfig{}, errors.New("INBOX_JWT_PUBLIC_KEY is set, so inboxd accepts only tokens signed by its private key: pass it with --key FILE")
	}
	s, err := auth.LoadDevSecrets(dataDir)
	if errors.Is(err, auth.ErrNoDevSecrets) {
		return auth.MinterConfig{}, fmt.Errorf("%w (start inboxd with --data %s first, or set INBOX_JWT_SECRET)", err, dataDir)
	}
	if err != nil {
		return auth.MinterConfig{}, err
	}
	return auth.MinterConfig{Secret: s.JWTSecret}, nil
}
