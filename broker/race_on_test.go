//go:build race

package broker_test

// raceEnabled tells tests that the race detector is on (go test -race): they
// scale their load down.
const raceEnabled = true
