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
	// rate_limited and not acted on. RateBurst defaults to twice
	// RatePerSecond.
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
	// ResumeTimeout bounds the stream reads of one catch-up page.
	ResumeTimeout time.Duration
	// MaxResumeFilters is the most subject filters one catch-up read uses;
	// a user in more conversations is caught up from several reads, each
	// with a share of the filters, merged in stream order.
	MaxResumeFilters int
	// ResumePageEvents and ResumePageBytes bound one page of a catch-up:
	// the events one read takes from the stream, and the bytes of the
	// frames sent. A longer catch-up ends its page with SYNCED "more": true
	// and the client resumes from there (docs/protocol.md).
	ResumePageEvents int
	ResumePageBytes  int
	// ResumeBudgetBytes and ResumeBudgetRate are one socket's catch-up
	// allowance, a bucket of bytes refilled at ResumeBudgetRate per second
	// up to ResumeBudgetBytes. A catch-up draws what it sent (and a little
	// for each event and read); a RESUME while the bucket is empty is
	// answered with ERROR rate_limited.
	ResumeBudgetBytes int
	ResumeBudgetRate  float64
	// TokenGrace is how long a socket outlives its token: TokenGrace before
	// the token expires the socket gets TOKEN_EXPIRING, and TokenGrace after,
	// unless a REFRESH came, it is closed with 4001.
	TokenGrace time.Duration

	goroutineReaders bool             // tests: read every socket on its own goroutine, not the poller
	now              func() time.Time // tests: the clock of the catch-up budget
}

// Defaults for zero Config fields.
const (
	DefaultMaxFrameBytes     = 64 << 10
	DefaultQueueFrames       = 256
	DefaultSyncBufferFrames  = 1024
	DefaultMaxSocketsPerUser = 16
	DefaultRatePerSecond     = 20
	DefaultRateStrikes       = 20
	DefaultPingInterval      = 25 * time.Second
	DefaultWriteTimeout      = 10 * time.Second
	DefaultCloseGrace        = 2 * time.Second
	DefaultResumeTimeout     = 30 * time.Second
	DefaultMaxResumeFilters  = 64
	DefaultResumePageEvents  = 1000
	DefaultResumePageBytes   = 1 << 20
	DefaultResumeBudgetBytes = 8 << 20
	DefaultResumeBudgetRate  = 256 << 10
	DefaultTokenGrace        = 30 * time.Second
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
	set(&c.RateStrikes, DefaultRateStrikes)
	set(&c.MaxResumeFilters, DefaultMaxResumeFilters)
	set(&c.ResumePageEvents, DefaultResumePageEvents)
	set(&c.ResumePageBytes, DefaultResumePageBytes)
	set(&c.ResumeBudgetBytes, DefaultResumeBudgetBytes)
	if c.RatePerSecond <= 0 {
		c.RatePerSecond = DefaultRatePerSecond
	}
	set(&c.RateBurst, max(1, int(2*c.RatePerSecond)))
	if c.ResumeBudgetRate <= 0 {
		c.ResumeBudgetRate = DefaultResumeBudgetRate
	}
	setD(&c.PingInterval, DefaultPingInterval)
	setD(&c.WriteTimeout, DefaultWriteTimeout)
	setD(&c.CloseGrace, DefaultCloseGrace)
	setD(&c.ResumeTimeout, DefaultResumeTimeout)
	setD(&c.TokenGrace, DefaultTokenGrace)
	if c.now == nil {
		c.now = time.Now
	}
	return c
}
