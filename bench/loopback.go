package bench

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
)

// ErrNotLoopback: the target or a source address is not on this machine's
// loopback. The load generator never sends traffic anywhere else.
var ErrNotLoopback = errors.New("not a loopback address")

// CheckLoopbackURL parses rawURL (http or https) and returns it if its host is
// localhost, an address in 127.0.0.0/8, or ::1. Names other than localhost are
// refused without being resolved.
func CheckLoopbackURL(rawURL string) (*url.URL, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("parse --url %q: %w", rawURL, err)
	}
	switch u.Scheme {
	case "http", "https":
	default:
		return nil, fmt.Errorf("--url %q: scheme must be http or https", rawURL)
	}
	host := u.Hostname()
	if host == "" {
		return nil, fmt.Errorf("--url %q: no host", rawURL)
	}
	if !IsLoopbackHost(host) {
		return nil, fmt.Errorf("--url %q: host %q is %w (only 127.0.0.0/8, ::1 and localhost are allowed)", rawURL, host, ErrNotLoopback)
	}
	return u, nil
}

// IsLoopbackHost reports whether host (no port; IPv6 without brackets) is
// "localhost" or a literal loopback address.
func IsLoopbackHost(host string) bool {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if host == "localhost" {
		return true
	}
	addr, err := netip.ParseAddr(host)
	if err != nil || addr.Zone() != "" {
		return false
	}
	return addr.Unmap().IsLoopback()
}

// ParseSourceAddrs parses a comma-separated list of loopback IP addresses to
// bind outgoing sockets to. Every entry must be a loopback literal.
func ParseSourceAddrs(list string) ([]net.IP, error) {
	var ips []net.IP
	for _, s := range strings.Split(list, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		addr, err := netip.ParseAddr(strings.Trim(s, "[]"))
		if err != nil {
			return nil, fmt.Errorf("--source-addrs: %q is not an IP address", s)
		}
		if !addr.Unmap().IsLoopback() || addr.Zone() != "" {
			return nil, fmt.Errorf("--source-addrs: %q is %w", s, ErrNotLoopback)
		}
		ips = append(ips, net.IP(addr.Unmap().AsSlice()))
	}
	if len(ips) == 0 {
		return nil, errors.New("--source-addrs: no address given")
	}
	return ips, nil
}

// DefaultSourceAddrs returns the source addresses used when none are given:
// 127.0.0.2 to 127.0.0.9 for an IPv4 target (each source address has its own
// ~28k ephemeral ports), ::1 for an IPv6 one. host is a literal address.
func DefaultSourceAddrs(host string) []net.IP {
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return nil
	}
	if addr.Unmap().Is4() {
		ips := make([]net.IP, 0, 8)
		for i := 2; i <= 9; i++ {
			ips = append(ips, net.IPv4(127, 0, 0, byte(i)).To4())
		}
		return ips
	}
	return []net.IP{net.IPv6loopback}
}
