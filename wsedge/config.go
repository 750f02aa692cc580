package wsedge

import "time"

// Config bounds what one socket may cost and do. Zero fields get the defaults
// below (see withDefaults, the one place they are set).
type Config struct {
	// MaxFrameBytes is the largest client message, all fragments together;
	// a larger one closes the socket with 1009. Message text is limited
	// separately, in characters, by chat.Limits (ERROR too_large).
	MaxFrameBytes int
	// QueueFrames is how many frames may wait to be written to one socket;
	// one more and the socket is closed with 4013 as a slow consumer.
	QueueFrames int
	// SyncBufferFrames is how many live frames a resuming socket buffers
	// while it catches up; one more closes it with 4013.
	SyncBufferFrames int
	// MaxSocketsPerUser is how many sockets one user may hold on this node;
	// the next upgrade is refused with HTTP 429 (code rate_limited).
	MaxSocketsPerUser int
	// RatePerSecond and RateBurst limit the frames a client may send on
	// one socket; over the limit a frame is answered with ERROR
	// rate_limited and not acted on.
	RatePerSecond float64
	RateBurst     int
	// RateStrikes rate-limited frames in a row close the socket with 1008.
	RateStrikes int
	// PingInterval is how often the server pings every socket; a socket
	// that sends nothing (not even a pong) for two intervals is closed.
	PingInterval time.Duration
	// WriteTimeout bounds one write to a socket.
	WriteTimeout time.Duration
	// CloseGrace is how long a socket waits for the client's close frame
	// after the server sent its own.
	CloseGrace time.Duration
	// ResumeTimeout bounds the stream read of one catch-up.
	ResumeTimeout time.Duration
	// MaxResumeFilters is the most subject filters one catch-up read uses;
	// a user in more conversations is caught up from an unfiltered read,
	// filtered in memory.
	MaxResumeFilters int
	// Presence, if set, hears of a user's first socket opening and last
	// closing on this node.
	Presence Presence

	goroutineReaders bool // tests: read every socket on its own goroutine, not the poller
}

// Defaults for zero Config fields.
const (
	DefaultMaxFrameBytes     = 64 << 10
	DefaultQueueFrames       = 256
	DefaultSyncBufferFrames  = 1024
	DefaultMaxSocketsPerUser = 16
	DefaultRatePerSecond     = 20
	DefaultRateBurst         = 40
	DefaultRateStrikes       = 20
	DefaultPingInterval      = 25 * time.Second
	DefaultWriteTimeout      = 10 * time.Second
	DefaultCloseGrace        = 2 * time.Second
	DefaultResumeTimeout     = 30 * time.Second
	DefaultMaxResumeFilters  = 64
)

func (c Config) withDefaults() Config {
	set := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	setD := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	set(&c.MaxFrameBytes, DefaultMaxFrameBytes)
	set(&c.QueueFrames, DefaultQueueFrames)
	set(&c.SyncBufferFrames, DefaultSyncBufferFrames)
	set(&c.MaxSocketsPerUser, DefaultMaxSocketsPerUser)
	set(&c.RateBurst, DefaultRateBurst)
	set(&c.RateStrikes, DefaultRateStrikes)
	set(&c.MaxResumeFilters, DefaultMaxResumeFilters)
	if c.RatePerSecond <= 0 {
		c.RatePerSecond = DefaultRatePerSecond
	}
	setD(&c.PingInterval, DefaultPingInterval)
	setD(&c.WriteTimeout, DefaultWriteTimeout)
	setD(&c.CloseGrace, DefaultCloseGrace)
	setD(&c.ResumeTimeout, DefaultResumeTimeout)
	return c
}
