//go:build wip

package broker_test

import "testing"

// Known to fail now and then (once in the -race run of .ci/run on 2 cores;
// 6 runs in a row passed): after a kill -9 a QoS 2 publisher's messages can
// reach the online subscriber out of order ("cq2: got 191 after 189", then
// 190). No duplicate or loss was seen since the deliveries wait for the
// store (before that it failed 3 runs in 3 with QoS 2 twice); the order
// after a restart is not yet right. Run with:
// go test -tags wip -run TestCrashOrderOnlineSubscriber ./broker

// TestCrashOrderOnlineSubscriber_MQTT_4_3_3_2: the kill -9 test with the
// persistent subscriber online during the stream and the kills. A QoS 1/2
// message routed to the online subscriber is written to it only once the
// publisher's store batch holding the message and its queue entry is
// applied (session.holdsFor, conn.releaseHeld), and PUBREL only once its
// "PUBREL sent" state is stored: otherwise the subscriber's acknowledgement
// puts a queue entry naming a message the store does not hold yet (the
// batch is refused), or the publisher's late batch puts back an entry the
// subscriber already completed, and a restart re-sends a QoS 2 message
// that was delivered (QoS 2 twice).
func TestCrashOrderOnlineSubscriber_MQTT_4_3_3_2(t *testing.T) {
	crashOrder(t, true)
}
