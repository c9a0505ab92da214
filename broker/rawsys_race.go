//go:build race

package broker

// raceBuild is true in race builds (rawsys_linux.go).
const raceBuild = true
