package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// RequireTool returns the path of the first of names found on PATH. If none
// is, the test is skipped, saying why it needs the tool; under CI=true it
// fails instead, so that CI cannot pass by skipping what it exists to run.
func RequireTool(t testing.TB, why string, names ...string) string {
	t.Helper()
	for _, name := range names {
		if path, err := exec.LookPath(name); err == nil {
			return path
		}
	}
	MissingTool(t, "%s not on PATH: %s", strings.Join(names, " or "), why)
	return ""
}

// MissingTool skips the test for lack of a tool or facility the machine does
// not have, or fails it under CI=true, where everything a test needs is
// installed by .ci/run.
func MissingTool(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if InCI() {
		t.Fatalf("%s (CI=true: .ci/run must provide it)", msg)
		return
	}
	t.Skip(msg)
}

// InCI reports whether the tests run under CI (CI=true, as .ci/run sets).
func InCI() bool { return os.Getenv("CI") == "true" }
