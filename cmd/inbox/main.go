// Command inbox is the operator CLI: rebuild and verify the read model, mint
// tokens, and load-test a running inboxd.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// command is one subcommand. run writes its results (and its --help) to
// stdout, progress bars and tables to stderr.
type command struct {
	name, summary string
	run           func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

var commands = []command{
	{"replay", "rebuild the read model from stream sequence 1 and swap it in", replayCmd},
	{"verify", "rebuild the read model into a temporary file and compare it with the live one", verifyCmd},
	{"token", "mint a JWT for a user (development secret from the data folder)", tokenCmd},
	{"bench", "load-test a running inboxd over loopback (idle sockets or fan-out)", benchCmd},
}

// usageError is a command line naming no command inbox has: exit status 2,
// with the usage on stderr.
type usageError string

func (e usageError) Error() string { return string(e) }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	var ue usageError
	switch {
	case errors.As(err, &ue):
		fmt.Fprintf(os.Stderr, "inbox: %v\n\n", err)
		usage(os.Stderr)
		os.Exit(2)
	case err != nil:
		fmt.Fprintf(os.Stderr, "inbox %v\n", err)
		os.Exit(1)
	}
}

// run runs the command args name. Help (help, -h, --help, or a command's
// -h) goes to stdout and is not an error. An error names the command first.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError("no command given")
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		usage(stdout)
		return nil
	}
	for _, c := range commands {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, args[1:], stdout, stderr)
		switch {
		case err == nil, errors.Is(err, flag.ErrHelp):
			return nil
		default:
			return fmt.Errorf("%s: %w", c.name, err)
		}
	}
	return usageError(fmt.Sprintf("unknown command %q", args[0]))
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage: inbox <command> [flags]

inbox is the operator CLI of inboxd: it rebuilds the SQLite read model from the
NATS JetStream stream INBOX (replay), checks the live read model against a
rebuild (verify), mints user tokens (token), and load-tests a running inboxd
over loopback (bench). It reads the stream from a running inboxd's NATS port,
or, inboxd being stopped, straight from the data folder.

commands:
`)
	for _, c := range commands {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, `
examples:
  inbox token alice                 # a JWT for alice, signed with ./data's development secret
  inbox verify                      # does ./data/inbox.db match a rebuild from the stream?
  inbox replay                      # rebuild ./data/inbox.db from the stream (inboxd stopped)
  inbox replay --out /tmp/inbox.db  # ... or into a new file while inboxd runs
  inbox bench --mode fanout --users 10000 --msg-rate 5000 --duration 15s

Run 'inbox <command> --help' for its flags; every flag has an INBOX_* environment variable.
`)
}
