package testutil

import (
	"os"
	"path/filepath"
	"testing"
)

// fakeTB records how a test ended instead of ending the real one.
type fakeTB struct {
	testing.TB
	skipped, failed bool
	msg             string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Skip(args ...any) {
	f.skipped = true
	f.msg = args[0].(string)
}

func (f *fakeTB) Fatalf(format string, args ...any) {
	f.failed = true
	f.msg = format
}

func TestRequireTool(t *testing.T) {
	bin := t.TempDir()
	tool := filepath.Join(bin, "inbox-test-tool")
	if err := os.WriteFile(tool, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin)

	for _, tc := range []struct {
		name          string
		ci            string
		names         []string
		want          string
		skip, failure bool
	}{
		{name: "found", ci: "true", names: []string{"inbox-no-such-tool", "inbox-test-tool"}, want: tool},
		{name: "missing on a laptop", ci: "", names: []string{"inbox-no-such-tool"}, skip: true},
		{name: "missing under CI", ci: "true", names: []string{"inbox-no-such-tool"}, failure: true},
		{name: "CI=false is a laptop", ci: "false", names: []string{"inbox-no-such-tool"}, skip: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("CI", tc.ci)
			f := &fakeTB{}
			got := RequireTool(f, "the test runs it", tc.names...)
			if got != tc.want || f.skipped != tc.skip || f.failed != tc.failure {
				t.Fatalf("RequireTool = %q, skipped %v, failed %v (%s); want %q, skipped %v, failed %v",
					got, f.skipped, f.failed, f.msg, tc.want, tc.skip, tc.failure)
			}
		})
	}
}
