package bench

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"
)

// OverloadReport is an overload run: more offered than the server can take
// (--msg-rate for --duration), then a drop to a normal rate. A server that
// sheds at the door refuses part of it with an ERROR and delivers what it
// accepted in time; one that does not falls behind without bound.
type OverloadReport struct {
	OfferedRate     float64          `json:"offered_rate"` // messages per second offered
	Sent            int64            `json:"sent"`
	Accepted        int64            `json:"accepted"`       // acknowledged
	AcceptedPerS    float64          `json:"accepted_per_s"` // acknowledged per second of sending
	Shed            int64            `json:"shed"`           // refused with an ERROR carrying their client_msg_id
	ShedByCode      map[string]int64 `json:"shed_by_code,omitempty"`
	ErrorsWithoutID int64            `json:"errors_without_id"` // ERRORs that named no message sent
	Unanswered      int64            `json:"unanswered"`        // neither acknowledged nor refused
	AcceptedLost    int64            `json:"accepted_lost"`     // deliveries of acknowledged messages that never came
	Duplicated      int64            `json:"duplicated"`
	// Latency of the accepted messages sent after the warm-up, send to delivery.
	AcceptedLatency Percentiles `json:"accepted_latency_ms"`
	// The server's inbox_feed_lag_seconds, sampled every feedLagEvery from
	// the start of the overload to the end of the drain (0 samples: the
	// server does not expose it).
	FeedLagMaxS    float64 `json:"feed_lag_max_s"`
	FeedLagSamples int     `json:"feed_lag_samples"`
	// The recovery: RecoverRate offered right after the overload; its
	// messages sent from RecoverAfter on are measured.
	RecoverRate     float64     `json:"recover_rate"`
	RecoverAfterS   float64     `json:"recover_after_s"`
	RecoveryLatency Percentiles `json:"recovery_latency_ms"`
	RecoveryShed    int64       `json:"recovery_shed"` // measured recovery messages refused
	Pass            bool        `json:"pass"`
	Fail            string      `json:"fail,omitempty"`
	Note            string      `json:"note,omitempty"`

	Offered  StepReport `json:"offered_step"`  // every figure of the overload
	Recovery StepReport `json:"recovery_step"` // and of the recovery
}

// feedLagEvery is how often an overload run reads the server's feed lag.
const feedLagEvery = 250 * time.Millisecond

// overload seeds and connects as fan-out does, offers cfg.Rate for the
// warm-up and cfg.Duration, drops at once to cfg.RecoverRate for
// cfg.RecoverAfter plus cfg.RecoverFor, waits for the deliveries, and
// judges both phases.
func (r *runner) overload(ctx context.Context, rep *Report) error {
	cfg := r.cfg
	f, p, plan, ids, finish, err := r.connectFanout(ctx, rep)
	if err != nil {
		return err
	}
	defer finish()
	sleep(ctx, cfg.Settle)

	lagCtx, stopLag := context.WithCancel(ctx)
	var lag feedLagSampler
	var lagDone sync.WaitGroup
	lagDone.Go(func() { lag.run(lagCtx, r) })

	r.logf("overload: %.0f msg/s for %v (warm-up %v)", cfg.Rate, cfg.Duration, cfg.Warmup)
	over, err := r.send(ctx, f, p, plan, ids, cfg.Rate, cfg.Warmup, cfg.Duration)
	if err != nil {
		stopLag()
		return err
	}
	r.logf("recovery: %.0f msg/s for %v, measured after %v", cfg.RecoverRate, cfg.RecoverFor, cfg.RecoverAfter)
	rec, err := r.send(ctx, f, p, plan, ids, cfg.RecoverRate, cfg.RecoverAfter, cfg.RecoverFor)
	if err != nil {
		stopLag()
		return err
	}
	drainEnd := r.drain(ctx, cfg.Drain, over, rec)
	stopLag()
	lagDone.Wait()
	offered, err := r.account(ctx, f, over, drainEnd)
	if err != nil {
		return err
	}
	recovery, err := r.account(ctx, f, rec, drainEnd)
	if err != nil {
		return err
	}
	o := &OverloadReport{
		OfferedRate: cfg.Rate, Sent: offered.Sent, Accepted: offered.Acked, Shed: offered.Refused, ShedByCode: offered.Errors,
		Unanswered: offered.Unanswered + recovery.Unanswered, AcceptedLost: offered.AckedLost + recovery.AckedLost,
		Duplicated: offered.Duplicated + recovery.Duplicated, AcceptedLatency: offered.Latency,
		FeedLagMaxS: round3(lag.max), FeedLagSamples: lag.samples,
		RecoverRate: cfg.RecoverRate, RecoverAfterS: cfg.RecoverAfter.Seconds(), RecoveryLatency: recovery.Latency, RecoveryShed: recovery.RefusedMeasured,
		Offered: offered, Recovery: recovery,
	}
	if d := over.sendEnd.Sub(over.t0).Seconds(); d > 0 {
		o.AcceptedPerS = round3(float64(o.Accepted) / d)
	}
	for _, s := range []StepReport{offered, recovery} {
		for _, n := range s.Errors {
			o.ErrorsWithoutID += n
		}
		o.ErrorsWithoutID -= s.Refused
	}
	o.Pass, o.Fail = judgeOverload(o, cfg)
	if o.Shed == 0 {
		o.Note = "nothing was shed: the offered rate did not overload the server (or it does not shed)"
	}
	if ctx.Err() != nil {
		o.Pass, o.Fail = false, "interrupted"
	}
	rep.Overload = o
	return nil
}

// judgeOverload says whether an overload run passed: accepted messages were
// delivered, exactly once and in time; every send was answered, every
// refusal named its message; the feed never fell far behind; and once the
// load dropped, latency came back to the ramp bound.
func judgeOverload(o *OverloadReport, cfg Config) (bool, string) {
	var why []string
	if o.Sent == 0 {
		why = append(why, "nothing sent")
	}
	if o.AcceptedLost > 0 {
		why = append(why, fmt.Sprintf("%d deliveries of accepted messages lost", o.AcceptedLost))
	}
	if o.Duplicated > 0 {
		why = append(why, fmt.Sprintf("%d deliveries duplicated", o.Duplicated))
	}
	if o.Unanswered > 0 {
		why = append(why, fmt.Sprintf("%d sends neither acknowledged nor refused", o.Unanswered))
	}
	if o.ErrorsWithoutID > 0 {
		why = append(why, fmt.Sprintf("%d ERRORs without their client_msg_id", o.ErrorsWithoutID))
	}
	if o.AcceptedLatency.P99 > ms(cfg.OverloadP99) {
		why = append(why, fmt.Sprintf("accepted p99 %.0f ms > %.0f ms", o.AcceptedLatency.P99, ms(cfg.OverloadP99)))
	}
	if o.FeedLagSamples > 0 && o.FeedLagMaxS > cfg.FeedLagBound.Seconds() {
		why = append(why, fmt.Sprintf("feed lag reached %.2f s > %v", o.FeedLagMaxS, cfg.FeedLagBound))
	}
	if o.RecoveryLatency.P99 > ms(cfg.RampP99) {
		why = append(why, fmt.Sprintf("recovery p99 %.1f ms > %.0f ms %v after the drop", o.RecoveryLatency.P99, ms(cfg.RampP99), cfg.RecoverAfter))
	}
	if o.RecoveryShed > 0 {
		why = append(why, fmt.Sprintf("%d sends refused %v after the drop", o.RecoveryShed, cfg.RecoverAfter))
	}
	return len(why) == 0, strings.Join(why, "; ")
}

// feedLagSampler reads the server's inbox_feed_lag_seconds every
// feedLagEvery and keeps the highest.
type feedLagSampler struct {
	max     float64
	samples int
}

func (s *feedLagSampler) run(ctx context.Context, r *runner) {
	t := time.NewTicker(feedLagEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		m, err := scrape(ctx, r.http, r.base+"/metrics")
		if err != nil {
			continue
		}
		if v, ok := m.Get("inbox_feed_lag_seconds"); ok {
			s.max = max(s.max, v)
			s.samples++
		}
	}
}
