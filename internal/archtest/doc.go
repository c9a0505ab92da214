// Package archtest checks the import direction of DESIGN.md with go list.
// It has no non-test code.
package archtest
