package chat

import (
	"maps"
	"slices"
)

// Users lists every user the directory knows: members of a conversation or
// a job, and users with a profile; sorted.
func (d *Directory) Users() []string {
	d.mu.RLock()
	defer d.mu.RUnlock()
	set := make(map[string]struct{}, len(d.users)+len(d.profile))
	for u := range d.users {
		set[u] = struct{}{}
	}
	for u := range d.profile {
		set[u] = struct{}{}
	}
	for _, ms := range d.jobs {
		for u := range ms {
			set[u] = struct{}{}
		}
	}
	return slices.Sorted(maps.Keys(set))
}
