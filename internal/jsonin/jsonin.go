// Package jsonin decodes the JSON clients send, HTTP bodies and socket frames,
// strictly and with errors a client can act on. It uses
// github.com/go-json-experiment/json, the module that mirrors the API of
// Go's encoding/json/v2 (only an experiment in Go 1.26), so that:
//   - object member names match struct tags exactly (encoding/json matches
//     "MESSAGE" to the field tagged "message");
//   - invalid UTF-8 is an error (encoding/json replaces it with U+FFFD);
//   - a member named twice is an error (encoding/json keeps the last).
//
// Every error is an *Error whose message names the field and what is wrong,
// e.g. `field "conversation_id" must be an integer, not a JSON string`.
package jsonin

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// Unknown says what a member that no struct field names does.
type Unknown bool

const (
	IgnoreUnknown Unknown = false // skipped: frontends may send extras
	RejectUnknown Unknown = true  // an error naming it
)

// Error is a decoding error. Msg is for the client; Err is the cause (for a
// Read, the reader's error, e.g. *http.MaxBytesError).
type Error struct {
	Msg string
	Err error
}

func (e *Error) Error() string { return e.Msg }
func (e *Error) Unwrap() error { return e.Err }

// Unmarshal decodes data, exactly one JSON value and optional whitespace,
// into v, a pointer.
func Unmarshal(data []byte, v any, unknown Unknown) error {
	var err error
	if unknown == RejectUnknown {
		err = json.Unmarshal(data, v, json.RejectUnknownMembers(true))
	} else {
		err = json.Unmarshal(data, v)
	}
	if err != nil {
		return describe(data, err)
	}
	return nil
}

// Read decodes all of r as Unmarshal does.
func Read(r io.Reader, v any, unknown Unknown) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return &Error{Msg: "reading the body: " + err.Error(), Err: err}
	}
	return Unmarshal(data, v, unknown)
}

// describe turns a decoding error into an *Error a client can read.
func describe(data []byte, err error) error {
	var (
		sem *json.SemanticError
		syn *jsontext.SyntacticError
	)
	switch {
	case len(bytes.TrimSpace(data)) == 0:
		return &Error{Msg: "empty, want a JSON object", Err: err}
	case !utf8.Valid(data):
		return &Error{Msg: fmt.Sprintf("not valid UTF-8 at byte %d", invalidUTF8At(data)), Err: err}
	case errors.As(err, &syn):
		return syntaxError(data, syn)
	case errors.As(err, &sem):
		return semanticError(sem)
	}
	return &Error{Msg: "not valid JSON", Err: err}
}

func syntaxError(data []byte, syn *jsontext.SyntacticError) *Error {
	if errors.Is(syn.Err, jsontext.ErrDuplicateName) {
		return &Error{Msg: fmt.Sprintf("field %q appears twice", fieldPath(syn.JSONPointer)), Err: syn}
	}
	if errors.Is(syn.Err, io.ErrUnexpectedEOF) {
		return &Error{Msg: "not valid JSON: it ends too early", Err: syn}
	}
	// One complete value followed by something other than whitespace.
	dec := jsontext.NewDecoder(bytes.NewReader(data))
	if _, err := dec.ReadValue(); err == nil {
		return &Error{Msg: fmt.Sprintf("data after the JSON value, at byte %d", syn.ByteOffset), Err: syn}
	}
	return &Error{Msg: fmt.Sprintf("not valid JSON at byte %d: %s", syn.ByteOffset, syn.Err), Err: syn}
}

func semanticError(sem *json.SemanticError) *Error {
	field := fieldPath(sem.JSONPointer)
	switch {
	case errors.Is(sem.Err, json.ErrUnknownName):
		return &Error{Msg: fmt.Sprintf("unknown field %q", field), Err: sem}
	case sem.GoType == nil:
		return &Error{Msg: "not valid JSON", Err: sem}
	}
	want := goKind(sem.GoType)
	got := jsonKind(sem.JSONKind)
	if sem.JSONKind == '0' && len(sem.JSONValue) > 0 {
		got = truncate(string(sem.JSONValue), 32)
		if errors.Is(sem.Err, strconv.ErrRange) {
			got += " (out of range)"
		}
	}
	if field == "" {
		return &Error{Msg: fmt.Sprintf("want %s, not %s", want, got), Err: sem}
	}
	return &Error{Msg: fmt.Sprintf("field %q must be %s, not %s", field, want, got), Err: sem}
}

// fieldPath writes a JSON pointer the way a client names a field:
// /members/0/user_id is members[0].user_id.
func fieldPath(p jsontext.Pointer) string {
	var b strings.Builder
	for tok := range p.Tokens() {
		if _, err := strconv.ParseUint(tok, 10, 64); err == nil && b.Len() > 0 {
			b.WriteString("[" + tok + "]")
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(truncate(tok, 64))
	}
	return b.String()
}

// goKind names what a Go type holds the way a JSON client thinks of it.
func goKind(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a non-negative integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Struct, reflect.Map:
		return "a JSON object"
	}
	return "another type"
}

// jsonKind names a JSON value's kind.
func jsonKind(k jsontext.Kind) string {
	switch k {
	case 'n':
		return "JSON null"
	case 't', 'f':
		return "a JSON boolean"
	case '"':
		return "a JSON string"
	case '0':
		return "a JSON number"
	case '{':
		return "a JSON object"
	case '[':
		return "a JSON array"
	}
	return "another JSON value"
}

// invalidUTF8At is the offset of the first byte that is not valid UTF-8.
func invalidUTF8At(p []byte) int {
	for i := 0; i < len(p); {
		r, n := utf8.DecodeRune(p[i:])
		if r == utf8.RuneError && n <= 1 {
			return i
		}
		i += n
	}
	return len(p)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
