// Package private keeps inbox's data readable by its owner only: folders
// 0700, files 0600. Existing ones with looser modes are tightened rather than
// refused, so a data folder made by an older inboxd keeps working.
package private

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Modes of what this package creates or tightens.
const (
	DirMode  fs.FileMode = 0o700
	FileMode fs.FileMode = 0o600
)

// Dir creates dir and any missing parents with mode 0700, and takes group
// and others' permissions off an existing dir. tightened is the mode it had
// if it was changed, else 0.
func Dir(dir string) (tightened fs.FileMode, err error) {
	if err := os.MkdirAll(dir, DirMode); err != nil {
		return 0, err
	}
	return tighten(dir)
}

// File takes group and others' permissions off path, if it exists.
// tightened is the mode it had if it was changed, else 0.
func File(path string) (tightened fs.FileMode, err error) {
	mode, err := tighten(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	return mode, err
}

// tighten clears the group and other bits of path's mode.
func tighten(path string) (fs.FileMode, error) {
	info, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	mode := info.Mode().Perm()
	if mode&0o077 == 0 {
		return 0, nil
	}
	if err := os.Chmod(path, mode&^0o077); err != nil {
		return 0, fmt.Errorf("make %s readable by its owner only: %w", path, err)
	}
	return mode, nil
}

// WriteNew writes data to a new file at path (mode 0600), all or nothing: a
// temporary file is written and synced, then hard-linked into place, which
// fails with fs.ErrExist if path already exists, so concurrent writers agree
// on one content. Where hard links are unsupported it falls back to a rename.
func WriteNew(path string, data []byte) error {
	tmp, err := writeTemp(path, data)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return err
		}
		if err := os.Rename(tmp, path); err != nil {
			return err
		}
	}
	syncDir(filepath.Dir(path))
	return nil
}

// Replace writes data to path (mode 0600) through a temporary file renamed
// into place, so a reader sees the old content or the new, never a part.
func Replace(path string, data []byte) error {
	tmp, err := writeTemp(path, data)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	syncDir(filepath.Dir(path))
	return nil
}

// writeTemp writes and syncs data into a new temporary file (mode 0600)
// beside path and returns its name.
func writeTemp(path string, data []byte) (string, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return "", err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

// syncDir makes dir's new entries durable; best effort.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}
