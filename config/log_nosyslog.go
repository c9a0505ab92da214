//go:build windows || plan9

package config

import "errors"

// openSyslog fails: this system has no syslog (log to a file instead).
func openSyslog() (sysLogger, error) {
	return nil, errors.New("not available on this system; use log_dest file")
}
