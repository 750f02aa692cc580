package chat

import "time"

// SetClock replaces the service's clock and, if rand is not nil, its random
// source (tests).
func (s *Service) SetClock(now func() time.Time, rand func() float64) {
	s.now = now
	if rand != nil {
		s.rand = rand
	}
}
