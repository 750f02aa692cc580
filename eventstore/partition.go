package eventstore

import (
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"
)

// Partitions. With one partition (the default) every event is in the stream
// INBOX under inbox.<scope>..., and an event's id is its stream sequence:
// exactly the layout inbox always had. With N > 1, partition k is the
// stream INBOX-<k> holding the subjects inbox.p<k>.<scope>..., and an
// event's id is seq<<8 | k (ID).
//
// A conversation's events (created, member, msg, typing, read, and the
// lifecycle of its messages) are all in partition Partition(id, N), so they
// keep their order. User profiles, jobs and their statuses are in partition
// 0: they are few, a job id is claimed with an expected-last-sequence on its
// subject (which must always be in the same stream), and a reader that
// needs every profile (a node's directory, a projector owning other
// partitions) reads them from one stream with one filter. inbox.sys events
// (retention) are in the partition they are about.

// MaxPartitions is the most partitions an event id can name (its low 8 bits).
const MaxPartitions = 256

// idBits is how many low bits of an event id name its partition (N > 1).
const idBits = 8

// MaxPartitionSeq is the highest stream sequence of a partition (N > 1)
// whose event id stays within MaxID: 2^45−1.
const MaxPartitionSeq = MaxID >> idBits

// ErrPartitions: the stream holds data written with another number of
// partitions than this process was started with.
var ErrPartitions = errors.New("partition count mismatch")

// Partition is the partition of conversation conv among n: FNV-1a (32 bits)
// of its decimal id, modulo n. It is the hash NATS's own partition() subject
// transform computes over a token, so a server-side mapping
// ("inbox.conv.*.>" -> "...{{partition(n,1)}}...") would place every
// conversation exactly where inbox does. It must never change: it says where
// every stored conversation's events are.
func Partition(conv int64, n int) int {
	if n <= 1 {
		return 0
	}
	var buf [20]byte
	h := fnv.New32a()
	h.Write(strconv.AppendInt(buf[:0], conv, 10))
	return int(h.Sum32() % uint32(n))
}

// ID is the event id of stream sequence seq in partition k of n: seq itself
// with one partition, seq<<8 | k with more. It is what the wire calls id,
// message_id and seq, at most MaxID while seq is at most MaxPartitionSeq.
func ID(n, k int, seq uint64) uint64 {
	if n <= 1 {
		return seq
	}
	return seq<<idBits | uint64(k)
}

// Split is the partition and stream sequence of event id among n partitions.
func Split(n int, id uint64) (k int, seq uint64) {
	if n <= 1 {
		return 0, id
	}
	return int(id & (MaxPartitions - 1)), id >> idBits
}

// StreamNameOf is the stream of partition k of n: INBOX with one partition,
// INBOX-<k> with more.
func StreamNameOf(n, k int) string {
	if n <= 1 {
		return StreamName
	}
	return StreamName + "-" + strconv.Itoa(k)
}

// subjectIn is the stored subject of a subject (or filter) of the inbox.
// layout in partition k of n: itself with one partition, inbox.p<k>.<rest>
// with more.
func subjectIn(n, k int, subject string) string {
	if n <= 1 {
		return subject
	}
	rest, ok := strings.CutPrefix(subject, "inbox.")
	if !ok {
		return subject
	}
	return "inbox.p" + strconv.Itoa(k) + "." + rest
}

// unpartitioned splits a stored subject into its partition token's k and
// the subject without it; a subject without one is in partition 0 (k = -1
// reports a malformed token).
func unpartitioned(subject string) (k int, logical string) {
	rest, ok := strings.CutPrefix(subject, "inbox.p")
	if !ok || rest == "" || rest[0] < '0' || rest[0] > '9' {
		return 0, subject
	}
	tok, tail, ok := strings.Cut(rest, ".")
	if !ok {
		return -1, subject
	}
	k, err := strconv.Atoi(tok)
	if err != nil || k < 0 || k >= MaxPartitions || strconv.Itoa(k) != tok {
		return -1, subject
	}
	return k, "inbox." + tail
}

// partitionOfSubject is the partition an inbox. subject (or filter) of
// the unpartitioned layout belongs to among n: a conversation's by its id,
// a user's or job's 0; ok is false when it can be in any (a wildcard in
// place of the conversation id, inbox.sys, inbox.>).
func partitionOfSubject(n int, subject string) (k int, ok bool) {
	if n <= 1 {
		return 0, true
	}
	parts := strings.Split(subject, ".")
	if len(parts) < 3 || parts[0] != "inbox" {
		return 0, false
	}
	switch parts[1] {
	case "user", "job":
		return 0, true
	case "conv":
		id, err := strconv.ParseInt(parts[2], 10, 64)
		if err != nil {
			return 0, false
		}
		return Partition(id, n), true
	}
	return 0, false
}

// Cursor is a position in every partition: Cursor[k] is the last stream
// sequence of partition k that was read or applied (0: none). Its length is
// the number of partitions. A resuming client holds it as a string (String,
// ParseCursor).
type Cursor []uint64

// NewCursor is the cursor at the start of n partitions.
func NewCursor(n int) Cursor { return make(Cursor, max(n, 1)) }

// Clone is a copy of c.
func (c Cursor) Clone() Cursor { return slices.Clone(c) }

// ID is the event id of c's position in partition k.
func (c Cursor) ID(k int) uint64 { return ID(len(c), k, c[k]) }

// Covers reports whether the event with id is at or before c in its partition.
func (c Cursor) Covers(id uint64) bool {
	k, seq := Split(len(c), id)
	return k < len(c) && seq <= c[k]
}

// Advance moves c to the event with id in its partition, if that is later.
func (c Cursor) Advance(id uint64) {
	if k, seq := Split(len(c), id); k < len(c) && seq > c[k] {
		c[k] = seq
	}
}

// Behind is how many sequences c is behind last, over every partition.
func (c Cursor) Behind(last Cursor) uint64 {
	var n uint64
	for k := range min(len(c), len(last)) {
		n += last[k] - min(last[k], c[k])
	}
	return n
}

// Reaches reports whether c is at or past o in every partition.
func (c Cursor) Reaches(o Cursor) bool {
	for k := range o {
		if k >= len(c) || c[k] < o[k] {
			return false
		}
	}
	return true
}

// Max moves c to o wherever o is later.
func (c Cursor) Max(o Cursor) {
	for k := range min(len(c), len(o)) {
		c[k] = max(c[k], o[k])
	}
}

// String is c as a client sends it back to resume: the event id of each
// partition's position (ID), comma-separated, partition 0 first. With one
// partition it is the plain stream sequence ("794"), as it always was.
func (c Cursor) String() string {
	b := make([]byte, 0, 8*len(c))
	for k := range c {
		if k > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendUint(b, c.ID(k), 10)
	}
	return string(b)
}

// maxCursorLen bounds a cursor string: MaxPartitions ids of at most 16 digits.
const maxCursorLen = MaxPartitions * 17

// ParseCursor reads a cursor of n partitions from its string: event ids,
// comma-separated, in any order, each naming its partition (Split). A
// partition named twice takes the later position; one not named is read
// from its start. So a plain stream sequence is the whole cursor of one
// partition, and with more a client can build its cursor from the seq of
// the events it got. Each id must be at most MaxID and name a partition
// below n.
func ParseCursor(s string, n int) (Cursor, error) {
	n = max(n, 1)
	if s == "" {
		return nil, errors.New("empty cursor")
	}
	if len(s) > maxCursorLen {
		return nil, fmt.Errorf("cursor of %d bytes (at most %d)", len(s), maxCursorLen)
	}
	c := NewCursor(n)
	for tok := range strings.SplitSeq(s, ",") {
		id, err := strconv.ParseUint(strings.TrimSpace(tok), 10, 64)
		if err != nil || id > MaxID {
			return nil, fmt.Errorf("cursor entry %q is not an event id (an integer from 0 to %d)", tok, uint64(MaxID))
		}
		k, seq := Split(n, id)
		if k >= n {
			return nil, fmt.Errorf("cursor entry %d names partition %d; the stream has %d", id, k, n)
		}
		c[k] = max(c[k], seq)
	}
	return c, nil
}
