// Command mqtt is the MQTT command-line client of mqttd:
//
//	mqtt pub   publish, with the flags and behaviour of mosquitto_pub
//	mqtt sub   subscribe and print, as mosquitto_sub (including -F formats)
//	mqtt rr    request/response, as mosquitto_rr
//	mqtt bench load scenarios against any MQTT broker
//
// Bad flags and connection failures print one line on stderr and exit with
// a non-zero status: 1, or the CONNACK code when the broker refuses the
// connection, or 27 when -W times out.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// exitTimeout is mosquitto_sub's exit status when -W expires.
const exitTimeout = 27

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const mainUsage = `mqtt is an MQTT client with the flags of mosquitto_pub, mosquitto_sub and mosquitto_rr.

Usage: mqtt pub   -t topic {-m message | -f file | -s | -l | -n} [options]
       mqtt sub   -t topic [-t topic ...] [-v] [-F format] [-C count] [-W secs] [options]
       mqtt rr    -t topic -e response-topic {-m message | -f file | -s | -n} [options]
       mqtt bench {fanin|fanout|pairs|shared|conns|latency} [options]

Run 'mqtt <command> --help' for the options of a command.
`

// run executes one command line and returns the exit status.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, mainUsage)
		return 1
	}
	cmd := args[0]
	switch cmd {
	case "-h", "--help", "help":
		fmt.Fprint(stdout, mainUsage)
		return 0
	case "pub", "sub", "rr", "bench":
	default:
		fmt.Fprintf(stderr, "Error: Unknown command '%s' (pub, sub, rr or bench). Use 'mqtt --help' to see usage.\n", cmd)
		return 1
	}
	c, err := parseArgs(cmd, args[1:])
	if errors.Is(err, errHelp) {
		fmt.Fprint(stdout, helpText[cmd])
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s Use 'mqtt %s --help' to see usage.\n", err, cmd)
		return 1
	}
	switch cmd {
	case "pub":
		err = runPub(ctx, c, stdin, stdout, stderr)
	case "sub":
		err = runSub(ctx, c, stdout, stderr)
	case "rr":
		err = runRR(ctx, c, stdin, stdout, stderr)
	case "bench":
		err = runBench(ctx, c, stdout, stderr)
	}
	return exitStatus(err, c.quiet, stderr)
}

// exitStatus prints err (unless quiet) and maps it to an exit status.
func exitStatus(err error, quiet bool, stderr io.Writer) int {
	if err == nil {
		return 0
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintln(stderr, ue.msg)
		return 1
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if !quiet && ee.msg != "" {
			fmt.Fprintln(stderr, ee.msg)
		}
		return ee.code
	}
	if !quiet {
		fmt.Fprintf(stderr, "Error: %v\n", err)
	}
	return 1
}
