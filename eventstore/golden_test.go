package eventstore_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"inbox/eventstore"
)

// kinds are the event kinds, each with a golden file.
var kinds = []eventstore.Kind{
	eventstore.KindCreated, eventstore.KindMember, eventstore.KindMessage, eventstore.KindTyping,
	eventstore.KindRead, eventstore.KindProfile, eventstore.KindJob, eventstore.KindStatus,
	eventstore.KindEdit, eventstore.KindDelete, eventstore.KindReact, eventstore.KindErase, eventstore.KindExpire,
}

// goldenEvent is one stored v1 event of ../testdata/events/<kind>.json.
type goldenEvent struct {
	Subject string          `json:"subject"`
	Payload json.RawMessage `json:"payload"`
}

// readGolden reads ../testdata/events/<kind>.json, each payload compacted to
// the bytes Encode writes.
func readGolden(t testing.TB, kind eventstore.Kind) []goldenEvent {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "testdata", "events", string(kind)+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var evs []goldenEvent
	if err := json.Unmarshal(data, &evs); err != nil {
		t.Fatalf("testdata/events/%s.json: %v", kind, err)
	}
	for i := range evs {
		var b bytes.Buffer
		if err := json.Compact(&b, evs[i].Payload); err != nil {
			t.Fatal(err)
		}
		evs[i].Payload = b.Bytes()
	}
	return evs
}

// v1 is a version 1 header of kind k created at s.
func v1(k eventstore.Kind, s string) eventstore.Header {
	return eventstore.Header{V: 1, Type: k, At: ts(s)}
}

func ts(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t
}

func ptr(s string) *string { return &s }

// goldenEvents are the Go values of ../testdata/events, in file order. The
// files are the v1 wire format: never rewrite them to match the code. A
// change of shape is a new schema version, read next to v1.
var goldenEvents = map[eventstore.Kind][]eventstore.Event{
	eventstore.KindCreated: {
		&eventstore.Created{Header: v1(eventstore.KindCreated, "2025-01-15T10:30:00Z"), ConversationID: 7, Members: []eventstore.Member{
			{UserID: "alice", Role: eventstore.RoleClient}, {UserID: "bob", Role: eventstore.RoleWorker}}},
	},
	eventstore.KindMember: {
		&eventstore.MemberChanged{Header: v1(eventstore.KindMember, "2025-01-15T10:31:00Z"), ConversationID: 7, Op: eventstore.OpAdd, UserID: "carol", Role: eventstore.RoleMember},
		&eventstore.MemberChanged{Header: v1(eventstore.KindMember, "2025-01-15T10:32:00Z"), ConversationID: 7, Op: eventstore.OpRemove, UserID: "carol"},
	},
	eventstore.KindMessage: {
		&eventstore.Message{Header: v1(eventstore.KindMessage, "2025-01-15T10:30:00Z"), ConversationID: 7, SenderID: "alice", SenderName: "Alice Doe",
			SenderAvatar: ptr("https://example.com/alice.png"), Text: "Hello", MsgType: eventstore.TypeText, ClientMsgID: "c-1"},
		&eventstore.Message{Header: v1(eventstore.KindMessage, "2025-01-15T10:30:05Z"), ConversationID: 7, SenderID: "bob", SenderName: "bob", Text: "Hi Alice", MsgType: eventstore.TypeText},
		&eventstore.Message{Header: v1(eventstore.KindMessage, "2025-01-15T10:30:10Z"), ConversationID: 7, SenderID: eventstore.SystemSender, Text: "This conversation is recorded", MsgType: eventstore.TypeSystem},
	},
	eventstore.KindTyping: {
		&eventstore.Typing{Header: v1(eventstore.KindTyping, "2025-01-15T10:30:01Z"), ConversationID: 7, UserID: "bob", IsTyping: true, ExpiresAt: ts("2025-01-15T10:30:06.5Z")},
		&eventstore.Typing{Header: v1(eventstore.KindTyping, "2025-01-15T10:30:03Z"), ConversationID: 7, UserID: "bob"},
	},
	eventstore.KindRead: {
		&eventstore.Read{Header: v1(eventstore.KindRead, "2025-01-15T10:30:20Z"), ConversationID: 7, UserID: "bob", UpTo: 12},
		&eventstore.Read{Header: v1(eventstore.KindRead, "2025-01-15T10:30:21Z"), ConversationID: 7, UserID: "alice", MessageIDs: []int64{13, 14}},
	},
	eventstore.KindProfile: {
		&eventstore.Profile{Header: v1(eventstore.KindProfile, "2025-01-15T10:29:00Z"), UserID: "alice", Name: "Alice Doe", Avatar: ptr("https://example.com/alice.png")},
		&eventstore.Profile{Header: v1(eventstore.KindProfile, "2025-01-15T10:29:30Z"), UserID: "bob", Name: "Bob"},
	},
	eventstore.KindJob: {
		&eventstore.Job{Header: v1(eventstore.KindJob, "2025-01-15T11:00:00Z"), JobID: 42, Members: []string{"alice", "bob"}},
	},
	eventstore.KindStatus: {
		&eventstore.JobStatus{Header: v1(eventstore.KindStatus, "2025-01-15T11:05:00Z"), JobID: 42, Status: "running", Detail: json.RawMessage(`{"step":1,"of":3}`)},
		&eventstore.JobStatus{Header: v1(eventstore.KindStatus, "2025-01-15T11:09:00Z"), JobID: 42, Status: "done"},
	},
	eventstore.KindEdit: {
		&eventstore.Edit{Header: v1(eventstore.KindEdit, "2025-01-15T10:31:00Z"), ConversationID: 7, MessageID: 6, UserID: "alice", Text: "Hello, Bob", ClientMsgID: "e-1"},
		&eventstore.Edit{Header: v1(eventstore.KindEdit, "2025-01-15T10:32:00Z"), ConversationID: 7, MessageID: 8, UserID: eventstore.SystemSender, Text: "[removed by a moderator]"},
	},
	eventstore.KindDelete: {
		&eventstore.Delete{Header: v1(eventstore.KindDelete, "2025-01-15T10:33:00Z"), ConversationID: 7, MessageID: 6, UserID: "alice", ClientMsgID: "d-1"},
	},
	eventstore.KindReact: {
		&eventstore.React{Header: v1(eventstore.KindReact, "2025-01-15T10:34:00Z"), ConversationID: 7, MessageID: 8, UserID: "bob", Emoji: "👍", On: true, ClientMsgID: "r-1"},
		&eventstore.React{Header: v1(eventstore.KindReact, "2025-01-15T10:35:00Z"), ConversationID: 7, MessageID: 8, UserID: "bob", Emoji: "👍"},
	},
	eventstore.KindErase: {
		&eventstore.Erased{Header: v1(eventstore.KindErase, "2025-01-16T09:00:00Z"), ConversationID: 7, MessageID: 8, SenderID: "alice",
			MsgType: eventstore.TypeText, SentAt: ts("2025-01-15T10:30:05Z"), Seqs: []uint64{8, 11}},
		&eventstore.ProfileErased{Header: v1(eventstore.KindErase, "2025-01-16T09:00:01Z"), UserID: "alice", Seqs: []uint64{2, 5}},
	},
	eventstore.KindExpire: {
		&eventstore.Expired{Header: v1(eventstore.KindExpire, "2025-03-01T00:00:00Z"), Before: 1200},
	},
}

// TestGoldenEvents: every v1 event kind decodes from its golden file to the
// expected value and encodes back to the golden bytes, so renaming,
// retyping, reordering or dropping a field fails here.
func TestGoldenEvents(t *testing.T) {
	if len(goldenEvents) != len(kinds) {
		t.Fatalf("goldenEvents has %d kinds, want %d: a new kind needs a golden file", len(goldenEvents), len(kinds))
	}
	for _, kind := range kinds {
		t.Run(string(kind), func(t *testing.T) {
			files := readGolden(t, kind)
			want := goldenEvents[kind]
			if len(files) != len(want) {
				t.Fatalf("testdata/events/%s.json holds %d events, the test expects %d", kind, len(files), len(want))
			}
			for i, g := range files {
				got, err := eventstore.Decode(g.Subject, g.Payload)
				if err != nil {
					t.Fatalf("event %d: decode: %v", i, err)
				}
				if !reflect.DeepEqual(got, want[i]) {
					t.Errorf("event %d decodes to\n%#v\nwant\n%#v", i, got, want[i])
				}
				if got.Kind() != kind || want[i].Subject() != g.Subject {
					t.Errorf("event %d: kind %s, subject %s; the file says %s on %s", i, got.Kind(), want[i].Subject(), kind, g.Subject)
				}
				enc, err := eventstore.Encode(want[i])
				if err != nil {
					t.Fatalf("event %d: encode: %v", i, err)
				}
				if !bytes.Equal(enc, g.Payload) {
					t.Errorf("event %d encodes to\n%s\nthe golden file has\n%s", i, enc, g.Payload)
				}
			}
		})
	}
}
