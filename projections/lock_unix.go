//go:build unix

package projections

import (
	"errors"
	"os"
	"syscall"
)

// Locked reports whether another process holds an flock on path (inboxd
// locks <data>/inboxd.lock while it runs). A missing file is not locked.
func Locked(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if err != nil {
		return errors.Is(err, syscall.EWOULDBLOCK)
	}
	syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return false
}
