//go:build !windows && !plan9

package config

import "log/syslog"

// openSyslog connects to the system logger as facility daemon, tag mqttd.
func openSyslog() (sysLogger, error) {
	return syslog.New(syslog.LOG_INFO|syslog.LOG_DAEMON, "mqttd")
}
