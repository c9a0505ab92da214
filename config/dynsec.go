package config

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/mqttd/mqttd/auth/dynsec"
)

// Mosquitto's dynamic-security plugin, built in: `plugin` naming
// mosquitto_dynamic_security.so (any directory) with
// `plugin_opt_config_file FILE` turns on auth/dynsec. Any other plugin is
// refused.

// DynSecPluginName is the base name of the plugin mqttd implements itself.
const DynSecPluginName = "mosquitto_dynamic_security.so"

// DynSec is the configuration of the built-in dynamic-security plugin.
type DynSec struct {
	Plugin     string // the plugin line's path ("" when not configured)
	ConfigFile string // plugin_opt_config_file
	line       string // file:line of the plugin option, for errors
}

// dynsecOption applies `plugin` and the `plugin_opt_` options that follow a
// dynamic-security plugin line.
func (c *Config) dynsecOption(key, rest, where string) error {
	args := strings.Fields(rest)
	if key == "plugin" {
		if len(args) != 1 {
			return fmt.Errorf("plugin needs one path")
		}
		if filepath.Base(args[0]) != DynSecPluginName {
			return fmt.Errorf("plugin: plugins are not supported: %s (only %s is, built in)", args[0], DynSecPluginName)
		}
		if c.PerListenerSettings {
			return fmt.Errorf("plugin %s: per_listener_settings true is not supported with the dynamic-security plugin", args[0])
		}
		if c.DynSec.Plugin != "" {
			return fmt.Errorf("plugin %s: the dynamic-security plugin is already loaded (at %s)", args[0], c.DynSec.line)
		}
		if c.firstSecurity == "" {
			c.firstSecurity = where
		}
		c.DynSec.Plugin, c.DynSec.line = args[0], where
		return nil
	}
	if c.DynSec.Plugin == "" {
		return fmt.Errorf("%s: plugins are not supported", key)
	}
	if key != "plugin_opt_config_file" {
		c.Warnings = append(c.Warnings, fmt.Sprintf("%s: %s is ignored by the dynamic-security plugin", where, key))
		return nil
	}
	if len(args) != 1 {
		return fmt.Errorf("%s needs one path", key)
	}
	c.DynSec.ConfigFile = args[0]
	return nil
}

// isDynsecOption reports whether key is handled by dynsecOption.
func (c *Config) isDynsecOption(key string) bool {
	return key == "plugin" || (strings.HasPrefix(key, "plugin_opt_") && c.DynSec.Plugin != "")
}

// loadDynsec makes the plugin when cfg configures it, reading its file.
// With no password_file (acl_file), its authentication (access) deferrals
// are final, as in Mosquitto when every plugin deferred.
func loadDynsec(cfg *Config) (*dynsec.Plugin, error) {
	if cfg.DynSec.Plugin == "" {
		return nil, nil
	}
	if cfg.DynSec.ConfigFile == "" {
		return nil, fmt.Errorf("%w: %s: plugin %s needs plugin_opt_config_file", ErrInvalid, cfg.DynSec.line, cfg.DynSec.Plugin)
	}
	p, err := dynsec.New(dynsec.Options{ConfigFile: cfg.DynSec.ConfigFile,
		FinalAuthn: cfg.Security.PasswordFile == "", FinalAuthz: cfg.Security.ACLFile == ""})
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalid, cfg.DynSec.line, err)
	}
	return p, nil
}
