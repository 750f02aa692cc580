// Package cluster holds inbox's multi-node and crash tests: two inboxd nodes
// on a real three-server JetStream cluster (cross-node chat, resume across
// nodes, a NATS server killed under load, a dropped NATS connection) and an
// inboxd child process killed with SIGKILL under load and restarted. It has
// no code of its own.
package cluster
