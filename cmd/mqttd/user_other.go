//go:build !unix

package main

import (
	"log/slog"

	"github.com/mqttd/mqttd/config"
)

// switchUser has nothing to do on this system: there is no root to leave,
// and the user option is Mosquitto's unix option.
func switchUser(cfg *config.Config, _ string, log *slog.Logger) error {
	if cfg.User != "" {
		log.Warn("the user option is not applied on this system", "user", cfg.User)
	}
	return nil
}
