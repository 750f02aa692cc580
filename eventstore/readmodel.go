package eventstore

import "strconv"

// Subjects of the read model as a service (inboxd --role projector and
// edge; package readmodel): a request to partition k's read model goes to
// inbox.rm.<k>.<op>, answered by the projector that holds the partition's
// lease; the unread counts a projector computes go to
// inbox.unread.<conversation>. Neither is captured by a stream.

// ReadModelSubject is the subject of operation op on partition k's read model.
func ReadModelSubject(k int, op string) string {
	return "inbox.rm." + strconv.Itoa(k) + "." + op
}

// ReadModelEndpoint is the subject a projector serving partition k listens on.
func ReadModelEndpoint(k int) string { return "inbox.rm." + strconv.Itoa(k) + ".*" }

// AllReadModels matches every read-model request.
const AllReadModels = "inbox.rm.>"

// UnreadSubject is where a projector publishes the unread counts of
// conversation conv that a batch changed.
func UnreadSubject(conv int64) string { return "inbox.unread." + strconv.FormatInt(conv, 10) }

// AllUnread matches every conversation's unread counts.
const AllUnread = "inbox.unread.*"
