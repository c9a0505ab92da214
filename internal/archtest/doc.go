// Package archtest checks the packages' import directions (packet and topic
// import only the standard library, client never imports broker, ...) with
// go list.
// It has no non-test code.
package archtest
