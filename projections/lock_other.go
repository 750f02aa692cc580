//go:build !unix

package projections

// Locked reports whether another process holds a lock on path. Without flock
// it cannot tell, and reports false.
func Locked(path string) bool { return false }
