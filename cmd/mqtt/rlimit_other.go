//go:build !unix

package main

// raiseFileLimit has nothing to raise on this system.
func raiseFileLimit() {}
