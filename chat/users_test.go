package chat

import (
	"slices"
	"testing"

	"inbox/eventstore"
)

func TestDirectoryUsers(t *testing.T) {
	d := NewDirectory()
	d.Seed(eventstore.Cursor{1},
		map[int64][]eventstore.Member{1: {{UserID: "bob", Role: eventstore.RoleMember}, {UserID: "alice", Role: eventstore.RoleMember}}},
		map[string]Profile{"carol": {Name: "Carol"}, "alice": {Name: "Alice"}},
		map[int64][]string{7: {"dave"}})
	if got, want := d.Users(), []string{"alice", "bob", "carol", "dave"}; !slices.Equal(got, want) {
		t.Errorf("Users() = %v, want %v", got, want)
	}
}
