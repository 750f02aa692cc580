// Package cli gives every flag of inbox's commands an INBOX_* environment
// variable: flag "http-addr" reads INBOX_HTTP_ADDR unless set on the command line.
package cli

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
)

// EnvName is the environment variable of flag name.
func EnvName(name string) string {
	return "INBOX_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// Describe sets fs's usage, what -h and --help print: the usage line, a
// paragraph saying what the command does, examples, and the flags.
func Describe(fs *flag.FlagSet, usage, description string, examples ...string) {
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "usage: %s\n\n%s\n", usage, strings.TrimSpace(description))
		if len(examples) > 0 {
			fmt.Fprintf(w, "\nexamples:\n")
			for _, e := range examples {
				fmt.Fprintf(w, "  %s\n", e)
			}
		}
		fmt.Fprintf(w, "\nflags:\n")
		fs.PrintDefaults()
	}
}

// ParseFlags is fs.Parse(args) with help that is not an error to the user:
// -h or --help prints the usage to fs.Output() (set it to stdout) and returns
// flag.ErrHelp, which a command treats as success (exit status 0). Any other
// mistake prints nothing and returns an error naming it in one line.
func ParseFlags(fs *flag.FlagSet, args []string) error {
	out := fs.Output()
	var buf bytes.Buffer
	fs.SetOutput(&buf)
	err := fs.Parse(args)
	fs.SetOutput(out)
	switch {
	case errors.Is(err, flag.ErrHelp):
		if _, werr := buf.WriteTo(out); werr != nil {
			return fmt.Errorf("print usage: %w", werr)
		}
		return err
	case err != nil:
		return fmt.Errorf("%w (see --help)", err)
	}
	return nil
}

// Parse parses args into fs with ParseFlags, then fills every flag not given
// on the command line from its environment variable, with the flag's own
// parser, so a bad value in either place fails the same way. Usage lists the
// variables.
func Parse(fs *flag.FlagSet, args []string) error {
	describeEnv(fs)
	if err := ParseFlags(fs, args); err != nil {
		return err
	}
	return fromEnv(fs)
}

// ParseInterspersed is Parse for a command whose flags may also come after
// its arguments ("inbox token alice --ttl 1h"): it returns the arguments.
func ParseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	describeEnv(fs)
	var rest []string
	for {
		if err := ParseFlags(fs, args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			break
		}
		rest = append(rest, fs.Arg(0))
		args = fs.Args()[1:]
	}
	return rest, fromEnv(fs)
}

// describeEnv names each flag's variable in its usage.
func describeEnv(fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		f.Usage += " (env " + EnvName(f.Name) + ")"
	})
}

// fromEnv sets every flag not given on the command line from its variable.
func fromEnv(fs *flag.FlagSet) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		if v, ok := os.LookupEnv(EnvName(f.Name)); ok {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %w", EnvName(f.Name), v, err))
			}
		}
	})
	return errors.Join(errs...)
}
