//go:build !mosquitto

package client

import (
	"testing"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
)

// startBroker runs an mqttd broker for the test (see broker_mosquitto_test.go
// for running the same tests against Mosquitto with -tags mosquitto).
// takeoverDisconnect: the broker sends a v5 DISCONNECT (session taken over)
// to a client whose session another connection takes.
const takeoverDisconnect = true

func startBroker(t testing.TB, opts ...func(*broker.Options)) *brokertest.Server {
	t.Helper()
	return brokertest.Start(t, opts...)
}
