package main

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"inbox/auth"
)

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"-h"}, {"--help"}} {
		var out strings.Builder
		if err := run(context.Background(), args, &out, io.Discard); err != nil {
			t.Fatalf("inbox %s: %v; help is not an error", args[0], err)
		}
		for _, want := range []string{"usage: inbox <command>", "inbox is the operator CLI", "examples:", "replay", "verify", "token", "bench"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("inbox %s prints no %q:\n%s", args[0], want, out.String())
			}
		}
	}
	for _, c := range commands {
		for _, flag := range []string{"-h", "--help"} {
			var out strings.Builder
			if err := run(context.Background(), []string{c.name, flag}, &out, io.Discard); err != nil {
				t.Fatalf("inbox %s %s: %v; help is not an error", c.name, flag, err)
			}
			for _, want := range []string{"usage: inbox " + c.name, "examples:\n  inbox " + c.name, "flags:\n  -"} {
				if !strings.Contains(out.String(), want) {
					t.Errorf("inbox %s %s prints no %q:\n%s", c.name, flag, want, out.String())
				}
			}
		}
	}
}

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		name     string
		args     []string
		want     string
		badUsage bool
	}{
		{name: "no command", args: nil, want: "no command given", badUsage: true},
		{name: "unknown command", args: []string{"rebuild"}, want: `unknown command "rebuild"`, badUsage: true},
		{name: "unknown flag", args: []string{"replay", "--no-such-flag"}, want: "replay: flag provided but not defined: -no-such-flag"},
		{name: "token without user", args: []string{"token"}, want: "token: want exactly one user id, got 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out strings.Builder
			err := run(context.Background(), tc.args, &out, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) || errors.As(err, new(usageError)) != tc.badUsage {
				t.Fatalf("err = %v, want one containing %q (usage error: %v)", err, tc.want, tc.badUsage)
			}
			if out.Len() > 0 {
				t.Errorf("a mistake printed %q on stdout", out.String())
			}
		})
	}
}

// TestTokenEnvironment: inbox token reads inboxd's variables through its
// flags, as every command does, and takes flags after the user too.
func TestTokenEnvironment(t *testing.T) {
	const secret = "a-secret-of-at-least-thirty-two-bytes"
	t.Setenv("INBOX_JWT_SECRET", secret)
	t.Setenv("INBOX_JWT_AUDIENCE", "inbox")
	t.Setenv("INBOX_DATA", t.TempDir()) // no development secret there
	var out strings.Builder
	if err := run(context.Background(), []string{"token", "alice", "--jwt-issuer", "https://id.example", "--ttl", "1h"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	v, err := auth.NewVerifier(auth.Config{Secret: secret, Issuer: "https://id.example", Audience: "inbox"})
	if err != nil {
		t.Fatal(err)
	}
	claims, err := v.Verify(strings.TrimSpace(out.String()))
	if err != nil || claims.UserID != "alice" {
		t.Fatalf("token verified as %+v, %v; want alice's, with inboxd's issuer and audience", claims, err)
	}
	if left := time.Until(claims.ExpiresAt); left > time.Hour || left < 59*time.Minute {
		t.Errorf("token valid for %v more, want --ttl 1h", left)
	}
}
