package testutil

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// FilesHolding searches every file under dir for each of words, byte for
// byte (as grep -r would), and lists what it found: "<path> holds <word>".
// An erasure test expects it to find nothing, after checking that it found
// the words before.
func FilesHolding(t testing.TB, dir string, words ...string) []string {
	t.Helper()
	var hits []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, w := range words {
			if bytes.Contains(data, []byte(w)) {
				hits = append(hits, fmt.Sprintf("%s holds %q", path, w))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return hits
}
