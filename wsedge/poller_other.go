//go:build !linux

package wsedge

import "errors"

// poller is Linux-only (epoll); elsewhere every socket has a reader goroutine.
type poller struct{}

type pollReg struct{}

func (pollReg) canWrite() bool                      { return false }
func (pollReg) tryWritev([]frame) (int, int, error) { return 0, 0, errors.ErrUnsupported }

func newPoller(*Hub) (*poller, error) { return nil, errors.New("no epoll on this system") }

func (*poller) add(*conn) error { return errors.ErrUnsupported }
func (*poller) run()            {}
func (*poller) close()          {}
