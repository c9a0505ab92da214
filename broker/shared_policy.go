package broker

// SharedSubPolicy picks the member of a shared subscription group that gets
// a message.
type SharedSubPolicy int

const (
	// SharedRoundRobin takes the members in turn (the default).
	SharedRoundRobin SharedSubPolicy = iota
	// SharedRandom takes a member at random.
	SharedRandom
	// SharedHashClientID takes the member chosen by a hash of the
	// publisher's client id: one publisher's messages go to one member while
	// the group does not change.
	SharedHashClientID
)
