package auth_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"inbox/auth"
)

func TestAdminToken(t *testing.T) {
	const token = "s3cret-admin-token-0123456789"
	a, err := auth.NewAdminToken(token)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		header    string
		withError error
	}{
		{name: "right", header: "Bearer " + token},
		{name: "right, any case", header: "BEARER " + token},
		{name: "missing", header: "", withError: auth.ErrUnauthorized},
		{name: "empty bearer", header: "Bearer ", withError: auth.ErrUnauthorized},
		{name: "other scheme", header: "Basic " + token, withError: auth.ErrUnauthorized},
		{name: "bare token", header: token, withError: auth.ErrUnauthorized},
		{name: "wrong", header: "Bearer nope", withError: auth.ErrForbidden},
		{name: "prefix", header: "Bearer " + token[:len(token)-1], withError: auth.ErrForbidden},
		{name: "longer", header: "Bearer " + token + "x", withError: auth.ErrForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/api/admin/conversations", nil)
			if tt.header != "" {
				r.Header.Set("Authorization", tt.header)
			}
			err := a.Check(r)
			if !errors.Is(err, tt.withError) {
				t.Fatalf("Check error = %v, want %v", err, tt.withError)
			}
			if tt.withError == auth.ErrUnauthorized && errors.Is(err, auth.ErrForbidden) ||
				tt.withError == auth.ErrForbidden && errors.Is(err, auth.ErrUnauthorized) {
				t.Fatalf("Check error %v wraps both ErrUnauthorized and ErrForbidden", err)
			}
		})
	}
}

// TestShortAdminTokenRefused: an admin token shorter than 24 characters
// (issue 15, item 9) is refused with one line naming the variable and the
// minimum, never the token; 24 characters are enough.
func TestShortAdminTokenRefused(t *testing.T) {
	for _, token := range []string{"", "xyzzy", strings.Repeat("x", auth.MinAdminTokenLen-1), strings.Repeat("é", auth.MinAdminTokenLen-1)} {
		_, err := auth.NewAdminToken(token)
		if err == nil {
			t.Fatalf("NewAdminToken(%q) succeeded, want an error", token)
		}
		if msg := err.Error(); !strings.Contains(msg, "INBOX_ADMIN_TOKEN") || !strings.Contains(msg, "at least 24") ||
			strings.Contains(msg, "\n") || token != "" && strings.Contains(msg, token) {
			t.Fatalf("NewAdminToken(%q) error = %q, want one line naming INBOX_ADMIN_TOKEN and the minimum, not the token", token, msg)
		}
	}
	if _, err := auth.NewAdminToken(strings.Repeat("x", auth.MinAdminTokenLen)); err != nil {
		t.Fatalf("a %d-character token: %v", auth.MinAdminTokenLen, err)
	}
}
