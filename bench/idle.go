package bench

import (
	"context"
	"runtime"
	"time"
)

// idle seeds conversations, measures the server before, connects every user,
// lets it settle, measures again, holds, and closes.
func (r *runner) idle(ctx context.Context, rep *Report) error {
	cfg := r.cfg
	plan := seedPlan(ModeIdle, cfg.Users, 0, cfg.ConvsPerUser, cfg.ConvSize, cfg.Seed)
	r.logf("seeding %d conversations of %d members (%d per user)", len(plan), cfg.ConvSize, cfg.ConvsPerUser)
	_, seedDur, err := r.seed(ctx, plan)
	if err != nil {
		return err
	}
	rep.Conversations, rep.SeedSeconds = len(plan), round3(seedDur.Seconds())

	before, err := scrape(ctx, r.http, r.base+"/metrics")
	if err != nil {
		return err
	}
	var procBefore int64
	if cfg.ServerPID > 0 {
		if procBefore, err = procRSS(cfg.ServerPID); err != nil {
			return err
		}
	}
	cpu0, t0 := cpuTime(), time.Now()

	fc := newFrameCounts()
	p := newPool(cfg.Users)
	finish, err := r.openSockets(ctx, p, fc, func(_ *socket, b []byte) { fc.count(b, frameType(b)) }, rep)
	if err != nil {
		return err
	}

	r.logf("settling for %v", cfg.Settle)
	sleep(ctx, cfg.Settle)
	after, err := scrape(ctx, r.http, r.base+"/metrics")
	if err != nil {
		finish()
		return err
	}
	cpu1, t1 := cpuTime(), time.Now()
	n := float64(cfg.Users)
	ir := &IdleReport{SettleSeconds: cfg.Settle.Seconds()}
	ir.RSSBefore, ir.RSSAfter = gauge(before, "process_resident_memory_bytes"), gauge(after, "process_resident_memory_bytes")
	ir.RSSPerSocket = round3(float64(ir.RSSAfter-ir.RSSBefore) / n)
	ir.HeapBefore, ir.HeapAfter = gauge(before, "go_memstats_heap_inuse_bytes"), gauge(after, "go_memstats_heap_inuse_bytes")
	ir.HeapPerSocket = round3(float64(ir.HeapAfter-ir.HeapBefore) / n)
	ir.GoroutinesBefore, ir.GoroutinesAfter = gauge(before, "go_goroutines"), gauge(after, "go_goroutines")
	ir.GoroutinesPerSock = round3(float64(ir.GoroutinesAfter-ir.GoroutinesBefore) / n)
	ir.ServerOpenSockets, _ = after.Sum("inbox_open_sockets")
	if cfg.ServerPID > 0 {
		ir.ProcRSSBefore = procBefore
		if ir.ProcRSSAfter, err = procRSS(cfg.ServerPID); err != nil {
			finish()
			return err
		}
		ir.ProcRSSPerSocket = round3(float64(ir.ProcRSSAfter-ir.ProcRSSBefore) / n)
	}
	ir.ServerCPUPct = serverCPUPct(before, after, t1.Sub(t0), rep.Cores)
	ir.BenchCPUPct = cpuPct(cpu1-cpu0, t1.Sub(t0), rep.Cores)
	rep.Idle = ir

	if cfg.Hold > 0 {
		r.logf("holding %d sockets for %v", cfg.Users, cfg.Hold)
		ir.HoldSeconds = round3(sleep(ctx, cfg.Hold).Seconds())
	}
	finish()
	return nil
}

// sleep waits d or until ctx ends and returns how long it waited.
func sleep(ctx context.Context, d time.Duration) time.Duration {
	start := time.Now()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
	return time.Since(start)
}

func gauge(s Sample, name string) int64 {
	v, _ := s.Get(name)
	return int64(v)
}

// serverCPUPct is the server's CPU use between two scrapes, as a percentage
// of the machine's cores.
func serverCPUPct(before, after Sample, wall time.Duration, cores int) float64 {
	return cpuPct(time.Duration(serverCPUSeconds(before, after)*float64(time.Second)), wall, cores)
}

// delta is how much counter name (all its series) grew between two scrapes.
func delta(before, after Sample, name string) float64 {
	b, _ := before.Sum(name)
	a, _ := after.Sum(name)
	return a - b
}

// serverCPUSeconds is the CPU time the server spent between two scrapes (0
// if it does not expose process_cpu_seconds_total).
func serverCPUSeconds(before, after Sample) float64 {
	b, ok1 := before.Get("process_cpu_seconds_total")
	a, ok2 := after.Get("process_cpu_seconds_total")
	if !ok1 || !ok2 {
		return 0
	}
	return a - b
}

func cpuPct(cpu, wall time.Duration, cores int) float64 {
	if wall <= 0 || cores <= 0 {
		return 0
	}
	return round3(100 * cpu.Seconds() / wall.Seconds() / float64(cores))
}

func runtimeCores() int { return runtime.NumCPU() }
