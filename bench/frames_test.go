package bench

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

func TestMessageFrameRoundTrip(t *testing.T) {
	b := appendMessageFrame(nil, 123, 2, 7, 41, 1700000000123456789)
	var in struct {
		ConversationID int64  `json:"conversation_id"`
		Message        string `json:"message"`
		Type           string `json:"type"`
		ClientMsgID    string `json:"client_msg_id"`
	}
	if err := json.Unmarshal(b, &in); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	if in.ConversationID != 123 || in.Type != "TEXT" {
		t.Fatalf("frame = %+v", in)
	}
	step, seq, nanos, ok := parseMessageText(in.Message)
	if !ok || step != 2 || seq != 41 || nanos != 1700000000123456789 {
		t.Fatalf("parseMessageText(%q) = %d %d %d %v", in.Message, step, seq, nanos, ok)
	}
	step, conv, seq, nanos, ok := parseClientMsgID(in.ClientMsgID)
	if !ok || step != 2 || conv != 7 || seq != 41 || nanos != 1700000000123456789 {
		t.Fatalf("parseClientMsgID(%q) = %d %d %d %d %v", in.ClientMsgID, step, conv, seq, nanos, ok)
	}
	for _, bad := range []string{"", "hello", "b:", "b:1:2", "b:x:2:3", "b:1:2:3:4"} {
		if _, _, _, ok := parseMessageText(bad); ok {
			t.Errorf("parseMessageText(%q) accepted", bad)
		}
	}
	for _, bad := range []string{"", "c-1", "b1-2-3", "bx-1-2-3"} {
		if _, _, _, _, ok := parseClientMsgID(bad); ok {
			t.Errorf("parseClientMsgID(%q) accepted", bad)
		}
	}
}

func TestFrameType(t *testing.T) {
	for in, want := range map[string]string{
		`{"type":"ACK","client_msg_id":"c-1"}`:       "ACK",
		`{"type": "PRESENCE","user_id":"u"}`:         "PRESENCE",
		`{"id":1,"message":"x","type":"TEXT"}`:       "TEXT",
		`{"conversation_id":1}`:                      "?",
		`{"type":12}`:                                "?",
		`{"type":"` + strings.Repeat("x", 40) + `"}`: "?",
	} {
		if got := frameType([]byte(in)); got != want {
			t.Errorf("frameType(%s) = %q, want %q", in, got, want)
		}
	}
}

func TestSeedPlan(t *testing.T) {
	fan := seedPlan(ModeFanout, 10, 5, 0, 2, 1)
	if len(fan) != 5 || !slices.Equal(fan[0], []int{0, 1}) || !slices.Equal(fan[4], []int{8, 9}) {
		t.Fatalf("fanout plan = %v", fan)
	}
	for _, tc := range []struct{ users, per, size int }{{50, 10, 2}, {51, 3, 2}, {23, 4, 5}, {7, 2, 8}} {
		plan := seedPlan(ModeIdle, tc.users, 0, tc.per, tc.size, 42)
		count := make([]int, tc.users)
		for _, conv := range plan {
			if len(conv) < 2 || len(conv) > maxMembers {
				t.Fatalf("%+v: conversation of %d members", tc, len(conv))
			}
			seen := map[int]bool{}
			for _, u := range conv {
				if seen[u] {
					t.Fatalf("%+v: user %d twice in %v", tc, u, conv)
				}
				seen[u] = true
				count[u]++
			}
		}
		for u, n := range count {
			if n != tc.per {
				t.Fatalf("%+v: user %d in %d conversations", tc, u, n)
			}
		}
	}
	if p := seedPlan(ModeIdle, 10, 0, 0, 2, 1); p != nil {
		t.Fatalf("no conversations wanted, got %v", p)
	}
}

func TestParseRamp(t *testing.T) {
	r, err := ParseRamp("2k, 5000,7.5k")
	if err != nil || !slices.Equal(r, []float64{2000, 5000, 7500}) {
		t.Fatalf("ParseRamp = %v, %v", r, err)
	}
	if r, _ := ParseRamp("auto"); !slices.Equal(r, DefaultRamp) {
		t.Fatalf("auto = %v", r)
	}
	for _, bad := range []string{"x", "1,-2", "0"} {
		if _, err := ParseRamp(bad); err == nil {
			t.Errorf("ParseRamp(%q) accepted", bad)
		}
	}
}

func TestParseMetrics(t *testing.T) {
	text := `# HELP process_resident_memory_bytes Resident memory size in bytes.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 4.5056e+07
process_cpu_seconds_total 12.5
inbox_frames_out_total{type="ACK"} 10
inbox_frames_out_total{type="MESSAGE"} 32 1700000000000
go_goroutines 42
broken line here
`
	s, err := ParseMetrics(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := s.Get("process_resident_memory_bytes"); v != 45056000 {
		t.Errorf("rss = %v", v)
	}
	if v, ok := s.Sum("inbox_frames_out_total"); !ok || v != 42 {
		t.Errorf("frames out = %v %v", v, ok)
	}
	if _, ok := s.Get("inbox_frames_out_total"); ok {
		t.Error("labelled series read as unlabelled")
	}
	if v, _ := s.Get("go_goroutines"); v != 42 {
		t.Errorf("goroutines = %v", v)
	}
}

func TestJudge(t *testing.T) {
	ok := StepReport{RateTarget: 1000, RateAchieved: 990, Counts: Counts{Sent: 100}, Latency: Percentiles{P99: 10}}
	if pass, why := judge(ok, 50e6, defaultKeepUp); !pass {
		t.Fatalf("judge = %v %s", pass, why)
	}
	for name, mod := range map[string]func(*StepReport){
		"lost":   func(s *StepReport) { s.Lost = 1 },
		"slow":   func(s *StepReport) { s.Latency.P99 = 51 },
		"errors": func(s *StepReport) { s.Errors = map[string]int64{"rate_limited": 1} },
		"behind": func(s *StepReport) { s.RateAchieved = 900 },
		"none":   func(s *StepReport) { s.Sent = 0 },
	} {
		s := ok
		mod(&s)
		if pass, _ := judge(s, 50e6, defaultKeepUp); pass {
			t.Errorf("%s: passed", name)
		}
	}
}

func TestJudgeOverload(t *testing.T) {
	cfg := Config{RampP99: 50e6, OverloadP99: 1e9, FeedLagBound: 2e9, RecoverAfter: 5e9}
	ok := OverloadReport{Sent: 100, Accepted: 60, Shed: 40, AcceptedLatency: Percentiles{P99: 900}, FeedLagMaxS: 1.5, FeedLagSamples: 10,
		RecoveryLatency: Percentiles{P99: 40}}
	if pass, why := judgeOverload(&ok, cfg); !pass {
		t.Fatalf("judge = %v %s", pass, why)
	}
	for name, mod := range map[string]func(*OverloadReport){
		"accepted lost":    func(o *OverloadReport) { o.AcceptedLost = 1 },
		"duplicated":       func(o *OverloadReport) { o.Duplicated = 1 },
		"unanswered":       func(o *OverloadReport) { o.Unanswered = 1 },
		"error without id": func(o *OverloadReport) { o.ErrorsWithoutID = 1 },
		"slow accepted":    func(o *OverloadReport) { o.AcceptedLatency.P99 = 1001 },
		"feed lag":         func(o *OverloadReport) { o.FeedLagMaxS = 2.1 },
		"slow recovery":    func(o *OverloadReport) { o.RecoveryLatency.P99 = 51 },
		"shed recovering":  func(o *OverloadReport) { o.RecoveryShed = 1 },
		"nothing sent":     func(o *OverloadReport) { o.Sent = 0 },
	} {
		o := ok
		mod(&o)
		if pass, _ := judgeOverload(&o, cfg); pass {
			t.Errorf("%s: passed", name)
		}
	}
	// Without samples (a server without the gauge), the lag is not judged.
	o := ok
	o.FeedLagMaxS, o.FeedLagSamples = 0, 0
	if pass, why := judgeOverload(&o, cfg); !pass {
		t.Fatalf("no samples: %s", why)
	}
}
