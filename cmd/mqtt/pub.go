package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/mqttd/mqttd/client"
	"github.com/mqttd/mqttd/packet"
)

// syncWriter serialises writes from the client's goroutines and ours.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// publishProps returns the -D publish properties for v5, or nil.
func (c *config) publishPropsOrNil() *packet.Properties {
	if c.version != packet.V5 || reflect.ValueOf(c.publishProps).IsZero() {
		return nil
	}
	p := c.publishProps
	return &p
}

// disconnect ends the session politely, with the -D disconnect properties.
func disconnect(cl *client.Client, c *config, dbg *debugLog) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if c.version == packet.V5 && !reflect.ValueOf(c.disconnectProps).IsZero() {
		p := c.disconnectProps
		return cl.DisconnectWith(ctx, &packet.Disconnect{Props: &p})
	}
	return cl.Disconnect(ctx)
}

// readPayload returns the single message of -m, -f, -s or -n.
func readPayload(c *config, stdin io.Reader) ([]byte, error) {
	switch c.msgMode {
	case msgArg:
		return c.message, nil
	case msgFile:
		b, err := os.ReadFile(c.file)
		if err != nil {
			return nil, &exitError{code: 1, msg: fmt.Sprintf("Error: Unable to read file %s: %v.", c.file, unwrapPath(err))}
		}
		return b, nil
	case msgStdin:
		b, err := io.ReadAll(stdin)
		if err != nil {
			return nil, fmt.Errorf("reading stdin: %w", err)
		}
		return b, nil
	}
	return nil, nil
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// runPub is mqtt pub: mosquitto_pub's behaviour.
func runPub(ctx context.Context, c *config, stdin io.Reader, stdout, stderr io.Writer) error {
	var payload []byte
	if c.msgMode != msgLines {
		var err error
		if payload, err = readPayload(c, stdin); err != nil {
			return err
		}
	}
	o, err := c.clientOptions()
	if err != nil {
		return err
	}
	out := &syncWriter{w: stdout}
	dbg := &debugLog{on: c.debug, w: out, err: stderr}
	cl, err := dial(ctx, c, o, dbg)
	if err != nil {
		return err
	}
	defer cl.Close()

	po := client.PublishOptions{QoS: c.qos, Retain: c.retain, Props: c.publishPropsOrNil()}
	var (
		mu    sync.Mutex
		first error
		wg    sync.WaitGroup
	)
	publish := func(p []byte) error {
		wg.Add(1)
		err := cl.PublishAsync(ctx, c.topics[0], p, po, func(err error) {
			defer wg.Done()
			if err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
				return
			}
		})
		if err != nil {
			wg.Done()
			return err
		}
		return nil
	}

	switch {
	case c.msgMode == msgLines:
		err = publishLines(ctx, stdin, publish)
	default:
		n := max(c.repeat, 1)
		for i := 0; i < n && err == nil; i++ {
			if err = publish(payload); err != nil {
				break
			}
			if i+1 < n {
				wg.Wait()
				if c.repeatDelay > 0 {
					select {
					case <-time.After(c.repeatDelay):
					case <-ctx.Done():
						err = ctx.Err()
					}
				}
			}
		}
	}
	wg.Wait()
	if err == nil {
		err = first
	}
	if err != nil {
		return &exitError{code: 1, msg: "Error: " + strings.TrimPrefix(err.Error(), "client: ")}
	}
	if err := disconnect(cl, c, dbg); err != nil {
		return &exitError{code: 1, msg: "Error: " + strings.TrimPrefix(err.Error(), "client: ")}
	}
	return nil
}

// publishLines sends each line of r (without its line ending) as a message,
// as mosquitto_pub -l does.
func publishLines(ctx context.Context, r io.Reader, publish func([]byte) error) error {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			line = []byte(strings.TrimRight(string(line), "\r\n"))
			if perr := publish(line); perr != nil {
				return perr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading stdin: %w", err)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}
