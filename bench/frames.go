package bench

import (
	"bytes"
	"strconv"
	"strings"
	"sync"
)

// typeCounter counts frames by their type field.
type typeCounter struct {
	mu sync.Mutex
	m  map[string]int64
}

func newTypeCounter() *typeCounter { return &typeCounter{m: map[string]int64{}} }

func (c *typeCounter) add(t string) {
	c.mu.Lock()
	c.m[t]++
	c.mu.Unlock()
}

func (c *typeCounter) snapshot() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int64, len(c.m))
	for k, v := range c.m {
		out[k] = v
	}
	return out
}

// frameType finds the top-level "type" value of a server frame without a full
// decode ("?" if there is none). Good enough for counting: server frames
// carry no nested "type" key before the top-level one except in message
// text, which is JSON-escaped.
func frameType(b []byte) string {
	i := bytes.Index(b, []byte(`"type":`))
	if i < 0 {
		return "?"
	}
	rest := bytes.TrimLeft(b[i+len(`"type":`):], " ")
	if len(rest) == 0 || rest[0] != '"' {
		return "?"
	}
	end := bytes.IndexByte(rest[1:], '"')
	if end < 0 || end > 32 {
		return "?"
	}
	return string(rest[1 : 1+end])
}

// appendMessageFrame appends the client frame sending a bench message: its
// text carries the ramp step, the per-conversation sequence number and the
// send time, and so does its client_msg_id.
func appendMessageFrame(b []byte, convID int64, step, conv, seq int, sentNanos int64) []byte {
	b = append(b, `{"conversation_id":`...)
	b = strconv.AppendInt(b, convID, 10)
	b = append(b, `,"message":"b:`...)
	b = strconv.AppendInt(b, int64(step), 10)
	b = append(b, ':')
	b = strconv.AppendInt(b, int64(seq), 10)
	b = append(b, ':')
	b = strconv.AppendInt(b, sentNanos, 10)
	b = append(b, `","type":"TEXT","client_msg_id":"`...)
	b = appendClientMsgID(b, step, conv, seq, sentNanos)
	return append(b, `"}`...)
}

func appendClientMsgID(b []byte, step, conv, seq int, sentNanos int64) []byte {
	b = append(b, 'b')
	b = strconv.AppendInt(b, int64(step), 10)
	b = append(b, '-')
	b = strconv.AppendInt(b, int64(conv), 10)
	b = append(b, '-')
	b = strconv.AppendInt(b, int64(seq), 10)
	b = append(b, '-')
	return strconv.AppendInt(b, sentNanos, 10)
}

// parseMessageText parses "b:<step>:<seq>:<nanos>".
func parseMessageText(s string) (step, seq int, nanos int64, ok bool) {
	rest, ok := strings.CutPrefix(s, "b:")
	if !ok {
		return 0, 0, 0, false
	}
	return parse3(rest, ':')
}

// parseClientMsgID parses "b<step>-<conv>-<seq>-<nanos>".
func parseClientMsgID(s string) (step, conv, seq int, nanos int64, ok bool) {
	rest, ok := strings.CutPrefix(s, "b")
	if !ok {
		return 0, 0, 0, 0, false
	}
	i := strings.IndexByte(rest, '-')
	if i < 0 {
		return 0, 0, 0, 0, false
	}
	st, err := strconv.Atoi(rest[:i])
	if err != nil {
		return 0, 0, 0, 0, false
	}
	conv, seq, nanos, ok = parse3(rest[i+1:], '-')
	return st, conv, seq, nanos, ok
}

func parse3(s string, sep byte) (a, b int, c int64, ok bool) {
	i := strings.IndexByte(s, sep)
	if i < 0 {
		return 0, 0, 0, false
	}
	j := strings.IndexByte(s[i+1:], sep)
	if j < 0 {
		return 0, 0, 0, false
	}
	j += i + 1
	var err1, err2, err3 error
	a, err1 = strconv.Atoi(s[:i])
	b, err2 = strconv.Atoi(s[i+1 : j])
	c, err3 = strconv.ParseInt(s[j+1:], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return 0, 0, 0, false
	}
	return a, b, c, true
}
