//go:build unix && !linux

package e2e

import (
	"errors"
	"os"
	"runtime"
	"syscall"
)

func openPTY() (master, tty *os.File, err error) {
	return nil, nil, errors.New("the test opens pseudo-terminals on Linux only, not " + runtime.GOOS)
}

func ttyAttr() *syscall.SysProcAttr { return nil }
