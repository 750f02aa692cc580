// Command inbox is the operator CLI: rebuild and verify the read model, mint
// tokens, and load-test a running inboxd.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

var commands = []struct {
	name, summary string
	run           func(ctx context.Context, args []string) error
}{
	{"replay", "rebuild the read model from stream sequence 1 and swap it in", replayCmd},
	{"verify", "rebuild the read model into a temporary file and compare it with the live one", verifyCmd},
	{"token", "mint a JWT for a user (development secret from the data folder)", tokenCmd},
	{"bench", "load-test a running inboxd over loopback (idle sockets or fan-out)", benchCmd},
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
		usage()
		os.Exit(2)
	}
	name := os.Args[1]
	for _, c := range commands {
		if c.name != name {
			continue
		}
		err := c.run(ctx, os.Args[2:])
		switch {
		case err == nil:
			return
		case errors.Is(err, flag.ErrHelp):
			os.Exit(2)
		default:
			fmt.Fprintf(os.Stderr, "inbox %s: %v\n", name, err)
			os.Exit(1)
		}
	}
	fmt.Fprintf(os.Stderr, "inbox: unknown command %q\n\n", name)
	usage()
	os.Exit(2)
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: inbox <command> [flags]\n\ncommands:")
	for _, c := range commands {
		fmt.Fprintf(os.Stderr, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(os.Stderr, "\nRun 'inbox <command> --help' for its flags; every flag has an INBOX_* environment variable.")
}
