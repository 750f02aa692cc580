package bench

import (
	"errors"
	"testing"
)

func TestCheckLoopbackURL(t *testing.T) {
	tests := []struct {
		name      string
		url       string
		withError error // nil: accepted
		anyError  bool
	}{
		{name: "default", url: "http://127.0.0.1:8000"},
		{name: "other 127", url: "http://127.4.5.6:8000/"},
		{name: "localhost", url: "http://localhost:8000"},
		{name: "localhost upper", url: "http://LOCALHOST:8000"},
		{name: "ipv6 loopback", url: "http://[::1]:8000"},
		{name: "v4-mapped loopback", url: "http://[::ffff:127.0.0.1]:8000"},
		{name: "https", url: "https://127.0.0.1:8443"},
		{name: "private", url: "http://10.0.0.1:8000", withError: ErrNotLoopback},
		{name: "private 192", url: "http://192.168.1.10:8000", withError: ErrNotLoopback},
		{name: "public", url: "http://8.8.8.8", withError: ErrNotLoopback},
		{name: "any", url: "http://0.0.0.0:8000", withError: ErrNotLoopback},
		{name: "ipv6 any", url: "http://[::]:8000", withError: ErrNotLoopback},
		{name: "name", url: "http://example.com:8000", withError: ErrNotLoopback},
		{name: "localhost lookalike", url: "http://localhost.example.com", withError: ErrNotLoopback},
		{name: "127 as name prefix", url: "http://127.0.0.1.nip.io", withError: ErrNotLoopback},
		{name: "zone", url: "http://[::1%25eth0]:8000", withError: ErrNotLoopback},
		{name: "ws scheme", url: "ws://127.0.0.1:8000", anyError: true},
		{name: "no host", url: "http:///x", anyError: true},
		{name: "garbage", url: "::", anyError: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := CheckLoopbackURL(tc.url)
			switch {
			case tc.withError != nil:
				if !errors.Is(err, tc.withError) {
					t.Fatalf("CheckLoopbackURL(%q) = %v, want %v", tc.url, err, tc.withError)
				}
			case tc.anyError:
				if err == nil {
					t.Fatalf("CheckLoopbackURL(%q) accepted", tc.url)
				}
			case err != nil:
				t.Fatalf("CheckLoopbackURL(%q) = %v", tc.url, err)
			}
		})
	}
}

func TestParseSourceAddrs(t *testing.T) {
	ips, err := ParseSourceAddrs("127.0.0.2, 127.0.0.3,::1")
	if err != nil || len(ips) != 3 || ips[0].String() != "127.0.0.2" || ips[2].String() != "::1" {
		t.Fatalf("ParseSourceAddrs = %v, %v", ips, err)
	}
	for _, bad := range []string{"10.0.0.2", "127.0.0.2,192.168.0.1", "", "localhost", "x"} {
		if _, err := ParseSourceAddrs(bad); err == nil {
			t.Errorf("ParseSourceAddrs(%q) accepted", bad)
		}
	}
	if got := DefaultSourceAddrs("127.0.0.1"); len(got) != 8 || got[0].String() != "127.0.0.2" {
		t.Errorf("DefaultSourceAddrs(127.0.0.1) = %v", got)
	}
	if got := DefaultSourceAddrs("::1"); len(got) != 1 || got[0].String() != "::1" {
		t.Errorf("DefaultSourceAddrs(::1) = %v", got)
	}
}
