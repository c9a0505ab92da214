package broker

import (
	"errors"
	"time"

	"github.com/mqttd/mqttd/packet"
)

// handleDisconnect ends the connection without publishing the will
// [MQTT-3.14.4-3]; 5.0 may ask for the will (0x04) and change the session
// expiry ([MQTT-3.14.2-2] bounds the change).
func (c *conn) handleDisconnect(p *packet.Disconnect) error {
	if c.version == packet.V5 {
		if p.Props != nil && p.Props.SessionExpiry != nil {
			s := c.sess
			s.mu.Lock()
			was := s.expiry
			se := *p.Props.SessionExpiry
			if was == 0 && se != 0 {
				s.mu.Unlock()
				return packet.ProtocolError // [MQTT-3.14.2-2]
			}
			switch se {
			case 0:
				s.expiry, s.persistent = 0, false
			case 0xFFFFFFFF:
				s.expiry, s.persistent = -1, true
			default:
				s.expiry, s.persistent = time.Duration(se)*time.Second, true
			}
			s.mu.Unlock()
		}
		if p.ReasonCode == packet.DisconnectWithWill {
			return errDisconnectWithWill
		}
	}
	c.cleanExit = true
	c.will = nil // [MQTT-3.1.2-10]
	return errClientDisconnected
}

var (
	errClientDisconnected = errors.New("broker: client disconnected")
	errDisconnectWithWill = errors.New("broker: client disconnected with will")
)
