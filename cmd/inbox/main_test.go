package main

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
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
