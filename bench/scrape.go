package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
)

// Sample is one scrape of the server's /metrics: series (name plus labels,
// exactly as exposed) to value.
type Sample map[string]float64

// Get returns the value of the unlabelled series name.
func (s Sample) Get(name string) (float64, bool) {
	v, ok := s[name]
	return v, ok
}

// Sum adds every series of metric name, whatever its labels.
func (s Sample) Sum(name string) (float64, bool) {
	var sum float64
	found := false
	for k, v := range s {
		if k == name || (strings.HasPrefix(k, name) && len(k) > len(name) && k[len(name)] == '{') {
			sum += v
			found = true
		}
	}
	return sum, found
}

// ParseMetrics reads the Prometheus text exposition format, keeping every
// sample line; comments and malformed lines are skipped.
func ParseMetrics(r io.Reader) (Sample, error) {
	s := Sample{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		// The series ends at the last space outside braces; a timestamp may follow the value.
		end := strings.LastIndexByte(line, '}')
		rest := line
		series := ""
		if end >= 0 {
			series, rest = line[:end+1], strings.TrimSpace(line[end+1:])
		} else {
			i := strings.IndexAny(line, " \t")
			if i < 0 {
				continue
			}
			series, rest = line[:i], strings.TrimSpace(line[i:])
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			continue
		}
		s[series] = v
	}
	return s, sc.Err()
}

// scrape fetches and parses url (the server's /metrics).
func scrape(ctx context.Context, c *http.Client, url string) (Sample, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape %s: %s", url, resp.Status)
	}
	s, err := ParseMetrics(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	return s, nil
}

// procRSS reads VmRSS of process pid from /proc, in bytes.
func procRSS(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read server RSS: %w", err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest) // "12345 kB"
			if len(f) >= 1 {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				if err != nil {
					return 0, fmt.Errorf("read server RSS: %q: %w", line, err)
				}
				return kb * 1024, nil
			}
		}
	}
	return 0, fmt.Errorf("read server RSS: no VmRSS in /proc/%d/status", pid)
}
