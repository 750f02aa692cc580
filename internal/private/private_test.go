package private

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestDirAndFile(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "a", "b")
	if was, err := Dir(dir); err != nil || was != 0 {
		t.Fatalf("Dir(new) = %v, %v; want 0, nil", was, err)
	}
	checkMode(t, dir, DirMode)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if was, err := Dir(dir); err != nil || was != 0o755 {
		t.Fatalf("Dir(0755) = %v, %v; want 0755, nil", was, err)
	}
	checkMode(t, dir, DirMode)

	file := filepath.Join(dir, "f")
	if was, err := File(file); err != nil || was != 0 {
		t.Fatalf("File(missing) = %v, %v; want 0, nil", was, err)
	}
	if err := os.WriteFile(file, nil, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(file, 0o640); err != nil { // whatever the umask
		t.Fatal(err)
	}
	if was, err := File(file); err != nil || was != 0o640 {
		t.Fatalf("File(0640) = %v, %v; want 0640, nil", was, err)
	}
	checkMode(t, file, FileMode)
	if err := os.Chmod(file, 0o400); err != nil {
		t.Fatal(err)
	}
	if was, err := File(file); err != nil || was != 0 {
		t.Fatalf("File(0400) = %v, %v; want it left alone", was, err)
	}
	checkMode(t, file, 0o400)
}

func TestWriteNewAndReplace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "secret")
	if err := WriteNew(path, []byte("one")); err != nil {
		t.Fatal(err)
	}
	if err := WriteNew(path, []byte("two")); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second WriteNew = %v, want fs.ErrExist", err)
	}
	checkContent(t, path, "one")
	checkMode(t, path, FileMode)
	if err := Replace(path, []byte("three")); err != nil {
		t.Fatal(err)
	}
	checkContent(t, path, "three")
	checkMode(t, path, FileMode)
	left, err := filepath.Glob(filepath.Join(filepath.Dir(path), ".*.tmp"))
	if err != nil || len(left) > 0 {
		t.Fatalf("temporary files left: %v %v", left, err)
	}
}

func checkMode(t *testing.T, path string, want fs.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Fatalf("%s: mode %v, want %v", path, got, want)
	}
}

func checkContent(t *testing.T, path, want string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil || string(b) != want {
		t.Fatalf("%s = %q, %v; want %q", path, b, err, want)
	}
}
