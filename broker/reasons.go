package broker

import (
	"errors"
	"strings"

	"github.com/mqttd/mqttd/packet"
)

// reasonProps returns properties carrying a Reason String for a v5 client
// that did not set Request Problem Information to 0 [MQTT-3.1.2-29], and
// only when it keeps the packet within the client's Maximum Packet Size
// [MQTT-3.4.2-2] (a reason string never makes an ack larger than 64 bytes
// plus the text).
func (c *conn) reasonProps(text string) *packet.Properties {
	if text == "" || c.version != packet.V5 || !c.problemInfo {
		return nil
	}
	if c.maxOutSize > 0 && len(text)+16 > int(c.maxOutSize) {
		return nil
	}
	return &packet.Properties{ReasonString: text}
}

// reasonText is the human explanation of err beyond its reason code, or ""
// for the broker's own self-explanatory errors (take-over, keep alive,
// shutdown) and bare reason codes.
func reasonText(err error, rc packet.ReasonCode) string {
	if err == nil || errors.Is(err, errTakenOver) || errors.Is(err, errKeepAlive) || errors.Is(err, errShuttingDown) {
		return ""
	}
	var parts []string
	for line := range strings.SplitSeq(err.Error(), "\n") {
		if line != "" && line != rc.Error() {
			parts = append(parts, line)
		}
	}
	return strings.Join(parts, ": ")
}
