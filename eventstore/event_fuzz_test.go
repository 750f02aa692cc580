package eventstore_test

import (
	"errors"
	"testing"

	"inbox/eventstore"
)

// FuzzDecode: no input panics the decoder, every failure is an ErrBadEvent, and
// whatever decodes encodes back to something that decodes to the same bytes.
func FuzzDecode(f *testing.F) {
	seeds := []struct{ subject, data string }{
		{"inbox.conv.1.msg", `{"v":1,"type":"msg","at":"2025-01-15T10:30:00Z","conversation_id":1,"sender_id":"a","sender_name":"A","sender_avatar":null,"message":"hi","msg_type":"TEXT"}`},
		{"inbox.conv.1.created", `{"v":1,"type":"created","at":"2025-01-15T10:30:00Z","conversation_id":1,"members":[{"user_id":"a","role":"client"}]}`},
		{"inbox.conv.1.read", `{"v":1,"type":"read","at":"2025-01-15T10:30:00Z","conversation_id":1,"user_id":"a","up_to":3,"message_ids":[2,3]}`},
		{"inbox.user.a.profile", `{"v":1,"type":"profile","at":"2025-01-15T10:30:00Z","user_id":"a","name":"A","avatar":null}`},
		{"inbox.job.2.status", `{"v":1,"type":"status","at":"2025-01-15T10:30:00Z","job_id":2,"status":"ok","detail":{"x":[1]}}`},
		{"inbox.conv.1.msg", `{"v":2}`},
		{"inbox.conv.x.msg", `{}`},
	}
	for _, s := range seeds {
		f.Add(s.subject, []byte(s.data))
	}
	f.Fuzz(func(t *testing.T, subject string, data []byte) {
		e, err := eventstore.Decode(subject, data)
		if err != nil {
			if !errors.Is(err, eventstore.ErrBadEvent) {
				t.Fatalf("error %v is not an ErrBadEvent", err)
			}
			return
		}
		enc, err := eventstore.Encode(e)
		if err != nil {
			t.Fatalf("decoded event does not encode: %v", err)
		}
		back, err := eventstore.Decode(e.Subject(), enc)
		if err != nil {
			t.Fatalf("re-encoded event does not decode: %v\n%s", err, enc)
		}
		enc2, _ := eventstore.Encode(back)
		if string(enc2) != string(enc) {
			t.Fatalf("round trip differs:\n%s\n%s", enc, enc2)
		}
	})
}
