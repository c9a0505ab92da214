//go:build unix

package main

import "syscall"

// raiseFileLimit lifts the soft limit on open files to the hard limit, for
// runs with many connections.
func raiseFileLimit() {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil && l.Cur < l.Max {
		l.Cur = l.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l) // best effort: the run reports connect errors if short
	}
}
