package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
)

// Report is everything one run measured. It is printed as a table for people
// and as one JSON line for machines.
type Report struct {
	Mode          string  `json:"mode"`
	URL           string  `json:"url"`
	Users         int     `json:"users"`
	Conversations int     `json:"conversations"`
	UserPrefix    string  `json:"user_prefix"`
	Cores         int     `json:"cores"`
	SourceAddrs   int     `json:"source_addrs"`
	FileLimit     uint64  `json:"file_limit"`
	SeedSeconds   float64 `json:"seed_s"`

	Sockets        int              `json:"sockets"`       // opened
	ConnectSeconds float64          `json:"connect_s"`     // opening all of them
	ConnectPerSec  float64          `json:"connect_per_s"` // sockets opened per second
	CloseSeconds   float64          `json:"close_s"`       // closing all of them
	AliveAtEnd     int              `json:"alive_at_end"`  // still open before the bench closed them
	FramesIn       int64            `json:"frames_in"`     // every text frame received
	BytesIn        int64            `json:"bytes_in"`      // their payload bytes
	FramesByType   map[string]int64 `json:"frames_by_type,omitempty"`
	Disconnects    map[string]int64 `json:"disconnects"` // sockets the server closed, by close code

	Idle *IdleReport `json:"idle,omitempty"`

	Fanout    *StepReport  `json:"fanout,omitempty"` // the single run, or the best passing ramp step
	Ramp      []StepReport `json:"ramp,omitempty"`
	MaxRateOK float64      `json:"max_rate_ok,omitempty"` // highest ramp rate that passed
	RampP99MS float64      `json:"ramp_p99_ms,omitempty"`

	Overload *OverloadReport `json:"overload,omitempty"`
}

// IdleReport is the memory cost of idle sockets on the server.
type IdleReport struct {
	RSSBefore         int64   `json:"rss_before"`
	RSSAfter          int64   `json:"rss_after"`
	RSSPerSocket      float64 `json:"rss_per_socket"`
	HeapBefore        int64   `json:"heap_inuse_before,omitempty"`
	HeapAfter         int64   `json:"heap_inuse_after,omitempty"`
	HeapPerSocket     float64 `json:"heap_inuse_per_socket,omitempty"`
	GoroutinesBefore  int64   `json:"goroutines_before,omitempty"`
	GoroutinesAfter   int64   `json:"goroutines_after,omitempty"`
	GoroutinesPerSock float64 `json:"goroutines_per_socket,omitempty"`
	ProcRSSBefore     int64   `json:"proc_rss_before,omitempty"`
	ProcRSSAfter      int64   `json:"proc_rss_after,omitempty"`
	ProcRSSPerSocket  float64 `json:"proc_rss_per_socket,omitempty"`
	ServerOpenSockets float64 `json:"server_open_sockets"` // inbox_open_sockets after connecting
	SettleSeconds     float64 `json:"settle_s"`
	HoldSeconds       float64 `json:"hold_s"`
	ServerCPUPct      float64 `json:"server_cpu_pct"`
	BenchCPUPct       float64 `json:"bench_cpu_pct"`
}

// StepReport is one fan-out run at one target rate.
type StepReport struct {
	RateTarget    float64 `json:"rate_target"`
	RateAchieved  float64 `json:"rate_achieved"` // messages sent per second
	WarmupSeconds float64 `json:"warmup_s"`
	Seconds       float64 `json:"duration_s"`
	DrainSeconds  float64 `json:"drain_s"`
	Counts
	Stale         int64       `json:"stale"` // deliveries of an earlier ramp step's messages
	DeliveredPerS float64     `json:"delivered_per_s"`
	Latency       Percentiles `json:"latency_ms"`
	AckLatency    Percentiles `json:"ack_latency_ms"`
	SendLag       Percentiles `json:"send_lag_ms"`               // actual write time behind schedule
	Slowest       []Window    `json:"slowest_windows,omitempty"` // the 100 ms windows of arrival with the slowest deliveries, after warm-up
	BenchCPUPct   float64     `json:"bench_cpu_pct"`
	ServerCPUPct  float64     `json:"server_cpu_pct"`
	// CPU-seconds each process spent over the step (warm-up to the end of
	// the drain), and per delivery (a message arriving at one member's
	// socket), in microseconds: the cost of a delivered message, which
	// unlike a share of the machine can be compared between two builds run
	// at the same rate.
	ServerCPUSeconds     float64 `json:"server_cpu_s"`
	BenchCPUSeconds      float64 `json:"bench_cpu_s"`
	ServerCPUPerDelivery float64 `json:"server_cpu_us_per_delivery"`
	BenchCPUPerDelivery  float64 `json:"bench_cpu_us_per_delivery"`
	// ServerFramesPerWrite is the frames the server wrote per system call
	// (inbox_frames_out_total over inbox_socket_writes_total; 0 if it does
	// not count its writes).
	ServerFramesPerWrite float64 `json:"server_frames_per_write,omitempty"`
	ServerRSS            int64   `json:"server_rss,omitempty"`
	TypingSockets        int     `json:"typing_sockets,omitempty"` // sockets storming TYPING during the step
	TypingSent           int64   `json:"typing_sent,omitempty"`    // TYPING frames they sent
	TypingPerS           float64 `json:"typing_per_s,omitempty"`
	TypingFailed         int64   `json:"typing_failed,omitempty"` // writes that failed
	Pass                 bool    `json:"pass"`
	Fail                 string  `json:"fail,omitempty"` // why it did not pass
}

// WriteJSON writes the report as one JSON line.
func (r *Report) WriteJSON(w io.Writer) error {
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	_, err = w.Write(append(data, '\n'))
	return err
}

// WriteTable writes the report for people.
func (r *Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k string, format string, args ...any) {
		fmt.Fprintf(tw, "%s\t"+format+"\n", append([]any{k}, args...)...)
	}
	row("mode", "%s against %s (%d cores, %d source addresses)", r.Mode, r.URL, r.Cores, r.SourceAddrs)
	row("users / conversations", "%d / %d (prefix %s), seeded in %.1fs", r.Users, r.Conversations, r.UserPrefix, r.SeedSeconds)
	row("sockets", "%d opened in %.1fs (%.0f/s), %d alive at end, closed in %.1fs", r.Sockets, r.ConnectSeconds, r.ConnectPerSec, r.AliveAtEnd, r.CloseSeconds)
	row("frames in", "%d (%s)%s", r.FramesIn, bytesStr(float64(r.BytesIn)), typesStr(r.FramesByType))
	row("server disconnects", "%s", mapStr(r.Disconnects))
	if i := r.Idle; i != nil {
		row("server RSS", "%s -> %s: %s per socket", bytesStr(float64(i.RSSBefore)), bytesStr(float64(i.RSSAfter)), bytesStr(i.RSSPerSocket))
		if i.HeapAfter > 0 {
			row("server heap in use", "%s -> %s: %s per socket", bytesStr(float64(i.HeapBefore)), bytesStr(float64(i.HeapAfter)), bytesStr(i.HeapPerSocket))
		}
		if i.GoroutinesAfter > 0 {
			row("server goroutines", "%d -> %d: %.2f per socket", i.GoroutinesBefore, i.GoroutinesAfter, i.GoroutinesPerSock)
		}
		if i.ProcRSSAfter > 0 {
			row("server VmRSS (/proc)", "%s -> %s: %s per socket", bytesStr(float64(i.ProcRSSBefore)), bytesStr(float64(i.ProcRSSAfter)), bytesStr(i.ProcRSSPerSocket))
		}
		row("server open sockets", "%.0f", i.ServerOpenSockets)
		row("cpu while connecting", "server %.1f%%, bench %.1f%% of the machine", i.ServerCPUPct, i.BenchCPUPct)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	steps := r.Ramp
	if len(steps) == 0 && r.Fanout != nil {
		steps = []StepReport{*r.Fanout}
	}
	if o := r.Overload; o != nil {
		steps = []StepReport{o.Offered, o.Recovery}
	}
	if len(steps) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "rate\tsent/s\tsent\tacked\tdelivered\tdeliv/s\texpected\tlost\tdup\tooo\tp50ms\tp90ms\tp99ms\tmaxms\tack p99\tlag p99\tsrv cpu%\tbench cpu%\tsrv µs/deliv\tbench µs/deliv\terrors\tresult\t")
		for _, s := range steps {
			result := "ok"
			if !s.Pass {
				result = "FAIL: " + s.Fail
			}
			fmt.Fprintf(tw, "%.0f\t%.0f\t%d\t%d\t%d\t%.0f\t%d\t%d\t%d\t%d\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.1f\t%.1f\t%.1f\t%.1f\t%s\t%s\t\n",
				s.RateTarget, s.RateAchieved, s.Sent, s.Acked, s.Delivered, s.DeliveredPerS, s.Expected, s.Lost, s.Duplicated, s.OutOfOrder,
				s.Latency.P50, s.Latency.P90, s.Latency.P99, s.Latency.Max, s.AckLatency.P99, s.SendLag.P99,
				s.ServerCPUPct, s.BenchCPUPct, s.ServerCPUPerDelivery, s.BenchCPUPerDelivery, mapStr(s.Errors), result)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		for _, s := range steps {
			if len(s.Slowest) > 0 {
				parts := make([]string, len(s.Slowest))
				for i, w := range s.Slowest {
					parts[i] = fmt.Sprintf("+%.1fs %.0f ms", w.AtS, w.MaxMS)
				}
				fmt.Fprintf(w, "slowest 100 ms windows at %.0f msg/s (after warm-up; slowest delivery): %s\n", s.RateTarget, strings.Join(parts, ", "))
			}
			if s.TypingSockets > 0 {
				fmt.Fprintf(w, "typing storm at %.0f msg/s: %d sockets sent %d TYPING starts (%.0f/s, %d failed)\n",
					s.RateTarget, s.TypingSockets, s.TypingSent, s.TypingPerS, s.TypingFailed)
			}
		}
		for _, s := range steps {
			if s.ServerFramesPerWrite > 0 {
				fmt.Fprintf(w, "server at %.0f msg/s: %.2f frames per write\n", s.RateTarget, s.ServerFramesPerWrite)
			}
		}
		if o := r.Overload; o != nil {
			fmt.Fprintf(w, "overload at %.0f msg/s: %d sent, %d accepted (%.0f/s), %d shed %s, %d unanswered, %d accepted deliveries lost, %d duplicated\n",
				o.OfferedRate, o.Sent, o.Accepted, o.AcceptedPerS, o.Shed, mapStr(o.ShedByCode), o.Unanswered, o.AcceptedLost, o.Duplicated)
			fmt.Fprintf(w, "accepted messages: p50 %.1f ms, p99 %.1f ms, max %.1f ms; feed lag at most %.2f s (%d samples)\n",
				o.AcceptedLatency.P50, o.AcceptedLatency.P99, o.AcceptedLatency.Max, o.FeedLagMaxS, o.FeedLagSamples)
			fmt.Fprintf(w, "recovery at %.0f msg/s, measured from %.0fs after the drop: p99 %.1f ms, %d refused\n",
				o.RecoverRate, o.RecoverAfterS, o.RecoveryLatency.P99, o.RecoveryShed)
			result := "ok"
			if !o.Pass {
				result = "FAIL: " + o.Fail
			}
			fmt.Fprintf(w, "overload run: %s\n", result)
			if o.Note != "" {
				fmt.Fprintf(w, "note: %s\n", o.Note)
			}
		}
		if len(r.Ramp) > 0 {
			if r.MaxRateOK > 0 {
				fmt.Fprintf(w, "highest rate with p99 <= %.0f ms and no loss: %.0f msg/s\n", r.RampP99MS, r.MaxRateOK)
			} else {
				fmt.Fprintf(w, "no rate passed (p99 <= %.0f ms and no loss)\n", r.RampP99MS)
			}
		}
	}
	return nil
}

func bytesStr(b float64) string {
	neg := ""
	if b < 0 {
		neg, b = "-", -b
	}
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%s%.2f GiB", neg, b/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%s%.1f MiB", neg, b/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%s%.1f KiB", neg, b/(1<<10))
	}
	return fmt.Sprintf("%s%.0f B", neg, b)
}

func mapStr(m map[string]int64) string {
	if len(m) == 0 {
		return "none"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return strings.Join(parts, ",")
}

func typesStr(m map[string]int64) string {
	if len(m) == 0 {
		return ""
	}
	return " " + mapStr(m)
}
