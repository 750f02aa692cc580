package node_test

import (
	"context"
	"testing"

	"inbox/chat"
	"inbox/eventstore"
)

// TestAppendMetrics: every append the domain service makes is counted by kind
// and result, and the acknowledged ones are timed.
func TestAppendMetrics(t *testing.T) {
	n := rtStart(t, rtNATS(t), "n1", nil)
	rtCreate(t, 1, []string{"a", "b"}, n)
	ctx := context.Background()
	if _, err := n.Service().Send(ctx, chat.Sender{UserID: "a"}, chat.SendRequest{ConversationID: 1, Text: "hi"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := n.Service().CreateConversation(ctx, 1, []eventstore.Member{{UserID: "a", Role: eventstore.RoleMember}}); chat.CodeOf(err) != chat.CodeConflict {
		t.Fatalf("second create of 1: %v, want conflict", err)
	}
	families, err := n.Metrics().Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	appends := map[string]float64{}
	var timed uint64
	for _, f := range families {
		for _, m := range f.GetMetric() {
			switch f.GetName() {
			case "inbox_appends_total":
				var kind, result string
				for _, l := range m.GetLabel() {
					switch l.GetName() {
					case "kind":
						kind = l.GetValue()
					case "result":
						result = l.GetValue()
					}
				}
				appends[kind+"/"+result] += m.GetCounter().GetValue()
			case "inbox_append_seconds":
				timed += m.GetHistogram().GetSampleCount()
			}
		}
	}
	want := map[string]float64{"created/ok": 1, "msg/ok": 1, "created/exists": 1}
	for k, v := range want {
		if appends[k] != v {
			t.Errorf("inbox_appends_total %s = %v, want %v (all: %v)", k, appends[k], v, appends)
		}
	}
	if timed != 2 {
		t.Errorf("inbox_append_seconds counted %d appends, want the 2 acknowledged", timed)
	}
}
