//go:build !linux

package listener

// keepAliveInherited is false where accepted connections are not known to
// inherit the listening socket's keep-alive: Go sets it on each of them.
const keepAliveInherited = false

func setListenKeepAlive(uintptr) error { return nil }
