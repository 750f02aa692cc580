// Package logring keeps a process's last warnings and errors in memory, for
// the operator view: Ring.Handler wraps an slog.Handler, passes every record
// on unchanged, and copies those at slog.LevelWarn and above into a ring of
// fixed size.
package logring

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"
	"unicode/utf8"
)

// MaxValue bounds the length of one attribute value kept in the ring.
const MaxValue = 512

// Entry is one kept log record.
type Entry struct {
	Time    time.Time         `json:"time"`
	Level   string            `json:"level"`
	Message string            `json:"message"`
	Attrs   map[string]string `json:"attrs,omitempty"` // group members as "group.key"
}

// Ring holds the last records at warn level and above. It is safe for
// concurrent use.
type Ring struct {
	mu    sync.Mutex
	buf   []Entry
	next  int // where the next entry goes once buf is full
	total uint64
}

// New returns a ring that keeps the last size records (at least 1).
func New(size int) *Ring {
	return &Ring{buf: make([]Entry, 0, max(size, 1))}
}

// Entries returns the kept records, oldest first.
func (r *Ring) Entries() []Entry {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append(slices.Clone(r.buf[r.next:]), r.buf[:r.next]...)
}

// Total is how many records the ring was given, kept or since overwritten.
func (r *Ring) Total() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.total
}

func (r *Ring) add(e Entry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.total++
	if len(r.buf) < cap(r.buf) {
		r.buf = append(r.buf, e)
		return
	}
	r.buf[r.next] = e
	r.next = (r.next + 1) % len(r.buf)
}

// Handler returns a handler that passes records to next and keeps the
// warnings and errors in r, whatever next's level.
func (r *Ring) Handler(next slog.Handler) slog.Handler {
	return &handler{ring: r, next: next}
}

type handler struct {
	ring   *Ring
	next   slog.Handler
	attrs  []kv   // from WithAttrs, already qualified by their groups
	prefix string // the open groups, "a.b."
}

type kv struct{ k, v string }

func (h *handler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn || h.next.Enabled(ctx, l)
}

func (h *handler) Handle(ctx context.Context, rec slog.Record) error {
	if rec.Level >= slog.LevelWarn {
		e := Entry{Time: rec.Time, Level: rec.Level.String(), Message: rec.Message}
		if n := len(h.attrs) + rec.NumAttrs(); n > 0 {
			e.Attrs = make(map[string]string, n)
			for _, a := range h.attrs {
				e.Attrs[a.k] = a.v
			}
			rec.Attrs(func(a slog.Attr) bool {
				flatten(h.prefix, a, func(k, v string) { e.Attrs[k] = v })
				return true
			})
		}
		h.ring.add(e)
	}
	if !h.next.Enabled(ctx, rec.Level) {
		return nil
	}
	return h.next.Handle(ctx, rec)
}

func (h *handler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.attrs = slices.Clone(h.attrs)
	for _, a := range as {
		flatten(h.prefix, a, func(k, v string) { c.attrs = append(c.attrs, kv{k, v}) })
	}
	c.next = h.next.WithAttrs(as)
	return &c
}

func (h *handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	c := *h
	c.prefix = h.prefix + name + "."
	c.next = h.next.WithGroup(name)
	return &c
}

// flatten calls fn with each leaf of a, its key qualified by prefix and its
// groups, its value as text of at most MaxValue bytes.
func flatten(prefix string, a slog.Attr, fn func(k, v string)) {
	v := a.Value.Resolve()
	if v.Kind() == slog.KindGroup {
		if a.Key != "" {
			prefix += a.Key + "."
		}
		for _, g := range v.Group() {
			flatten(prefix, g, fn)
		}
		return
	}
	if a.Key == "" {
		return
	}
	s := v.String()
	if len(s) > MaxValue {
		i := MaxValue
		for i > 0 && !utf8.RuneStart(s[i]) {
			i--
		}
		s = s[:i] + "…"
	}
	fn(prefix+a.Key, s)
}
