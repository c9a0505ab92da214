// Command mqttd is the MQTT broker.
//
//	mqttd [-c FILE] [-p PORT] [-v] [--test-config]
//
// Without a configuration file it listens on 127.0.0.1:1883 and allows
// anonymous clients (Mosquitto 2.0's local-only mode).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/config"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "devel"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func usage(w io.Writer) {
	fmt.Fprintf(w, `mqttd is an MQTT 3.1, 3.1.1 and 5.0 broker.

Usage: mqttd [-c config_file] [-p port] [-v] [--test-config]

 -c, --config-file : read configuration from a file (mosquitto.conf syntax).
 -p, --port        : listen on this port (may be repeated).
 -v, --verbose     : log every event, including debug ones.
     --test-config : check the configuration file and exit.
 -h, --help        : this help.
`)
}

func run(args []string, stdout, stderr io.Writer) int {
	var (
		file       string
		ports      []int
		verbose    bool
		testConfig bool
	)
	for i := 0; i < len(args); i++ {
		a := args[i]
		next := func() (string, bool) {
			if i+1 >= len(args) {
				fmt.Fprintf(stderr, "mqttd: %s needs a value\n", a)
				return "", false
			}
			i++
			return args[i], true
		}
		switch a {
		case "-c", "--config-file":
			v, ok := next()
			if !ok {
				return 1
			}
			file = v
		case "-p", "--port":
			v, ok := next()
			if !ok {
				return 1
			}
			p, err := strconv.Atoi(v)
			if err != nil || p < 1 || p > 65535 {
				fmt.Fprintf(stderr, "mqttd: invalid port %q\n", v)
				return 1
			}
			ports = append(ports, p)
		case "-v", "--verbose":
			verbose = true
		case "--test-config":
			testConfig = true
		case "-h", "--help":
			usage(stdout)
			return 0
		default:
			fmt.Fprintf(stderr, "mqttd: unknown option %q (see mqttd --help)\n", a)
			return 1
		}
	}

	cfg := config.Default()
	if file != "" {
		var err error
		if cfg, err = config.Load(file); err != nil {
			fmt.Fprintf(stderr, "mqttd: %v\n", err)
			return 3
		}
	}
	if testConfig {
		if file == "" {
			fmt.Fprintln(stderr, "mqttd: --test-config needs -c FILE")
			return 1
		}
		fmt.Fprintf(stdout, "%s: configuration OK\n", file)
		return 0
	}
	for _, p := range ports {
		cfg.AddPort(p)
	}

	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	opts := cfg.Broker
	opts.Logger = logger
	opts.Version = "mqttd version " + version
	if cfg.Persistence {
		logger.Warn("persistence is not available in this build yet; sessions live in memory")
	}

	srv := broker.New(opts)
	var listeners []net.Listener
	for _, l := range cfg.Listeners {
		ln, err := net.Listen("tcp", l.Addr())
		if err != nil {
			for _, o := range listeners {
				o.Close()
			}
			fmt.Fprintf(stderr, "mqttd: %v\n", err)
			return 1
		}
		listeners = append(listeners, ln)
	}
	logger.Info("mqttd starting", "version", version)

	var wg sync.WaitGroup
	errs := make(chan error, len(listeners))
	for _, ln := range listeners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(ln); err != nil && !errors.Is(err, broker.ErrServerClosed) {
				errs <- err
			}
		}()
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	status := 0
	select {
	case s := <-sig:
		logger.Info("shutting down", "signal", s.String())
	case err := <-errs:
		logger.Error("listener failed", "err", err)
		status = 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		logger.Error("shutdown", "err", err)
		status = 1
	}
	wg.Wait()
	return status
}
