// Package e2e holds tests that use inbox the way a newcomer does: they build
// the inboxd and inbox binaries, run them as child processes on loopback
// ports with a temporary data folder, and follow the commands README.md shows
// (wscat, curl, the nats CLI), read from README.md itself so that the README
// stays true. It has no code outside its tests.
package e2e
