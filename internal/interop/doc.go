// Package interop holds tests that drive mqttd with third-party MQTT clients
// (Eclipse Paho) from inside go test. It has no non-test code.
package interop
