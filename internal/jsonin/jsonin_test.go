package jsonin

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

type member struct {
	UserID string `json:"user_id"`
}

type body struct {
	ID      int64           `json:"id"`
	Since   *uint64         `json:"since"`
	Message *string         `json:"message"`
	IDs     []int64         `json:"message_ids"`
	Members []member        `json:"members"`
	Detail  json.RawMessage `json:"detail"`
	On      bool            `json:"on"`
}

func TestUnmarshalErrors(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		unknown  Unknown
		says     string // "": no error
	}{
		{name: "ok", in: `{"id": 5, "message": "hi", "message_ids": [1, 2], "detail": {"a": [1]}, "extra": {"x": 1}}`},
		{name: "field names match exactly", in: `{"MESSAGE": "x", "Id": 3}`},
		{name: "upper-case name is unknown when rejecting", in: `{"MESSAGE": "x"}`, unknown: RejectUnknown, says: `unknown field "MESSAGE"`},
		{name: "invalid UTF-8 in a value", in: "{\"message\": \"a\xff\"}", says: "not valid UTF-8 at byte 14"},
		{name: "invalid UTF-8 in a name", in: "{\"m\xc3\": 1}", says: "not valid UTF-8 at byte 3"},
		{name: "duplicate name", in: `{"message": "a", "message": "b"}`, says: `field "message" appears twice`},
		{name: "string for an integer", in: `{"id": "5"}`, says: `field "id" must be an integer, not a JSON string`},
		{name: "fraction for an integer", in: `{"id": 1.5}`, says: `field "id" must be an integer, not 1.5`},
		{name: "integer out of range", in: `{"id": 9223372036854775808}`, says: `field "id" must be an integer, not 9223372036854775808 (out of range)`},
		{name: "negative for an unsigned", in: `{"since": -1}`, says: `field "since" must be a non-negative integer, not -1`},
		{name: "array element", in: `{"message_ids": [1, "2"]}`, says: `field "message_ids[1]" must be an integer, not a JSON string`},
		{name: "nested field", in: `{"members": [{"user_id": 7}]}`, says: `field "members[0].user_id" must be a string, not a JSON number`},
		{name: "object for an array", in: `{"members": {"user_id": "a"}}`, says: `field "members" must be an array, not a JSON object`},
		{name: "string for a boolean", in: `{"on": "yes"}`, says: `field "on" must be a boolean, not a JSON string`},
		{name: "nested unknown", in: `{"members": [{"user_id": "a", "admin": true}]}`, unknown: RejectUnknown, says: `unknown field "members[0].admin"`},
		{name: "array at the top", in: `[1]`, says: "want a JSON object, not a JSON array"},
		{name: "empty", in: " \n", says: "empty, want a JSON object"},
		{name: "truncated", in: `{"message": `, says: "not valid JSON: it ends too early"},
		{name: "syntax", in: `{"message" "x"}`, says: "not valid JSON at byte 11: invalid character"},
		{name: "trailing data", in: `{"id": 1} {}`, says: "data after the JSON value, at byte 10"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var v body
			err := Unmarshal([]byte(tc.in), &v, tc.unknown)
			switch {
			case tc.says == "" && err != nil:
				t.Fatalf("error %v", err)
			case tc.says == "":
				return
			case err == nil:
				t.Fatalf("no error, want %q", tc.says)
			case !strings.Contains(err.Error(), tc.says):
				t.Fatalf("error %q, want it to say %q", err, tc.says)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("%T is not an *Error", err)
			}
		})
	}
}

// TestReadKeepsTheReadersError: a body over http.MaxBytesReader's limit is
// told apart from bad JSON.
func TestReadKeepsTheReadersError(t *testing.T) {
	rec := httptest.NewRecorder()
	r := http.MaxBytesReader(rec, io.NopCloser(strings.NewReader(`{"message": "`+strings.Repeat("x", 100)+`"}`)), 10)
	var v body
	err := Read(r, &v, RejectUnknown)
	var mbe *http.MaxBytesError
	if !errors.As(err, &mbe) || mbe.Limit != 10 {
		t.Fatalf("error %v, want a MaxBytesError", err)
	}
}
