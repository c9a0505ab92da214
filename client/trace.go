package client

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/mqttd/mqttd/packet"
)

// trace logs one packet at debug level, in the words of mosquitto's -d
// lines: "sending PUBLISH (d0, q1, r0, m3, 'a/b', ... (5 bytes))", with
// the attributes dir ("send" or "recv"), packet (its type), conn (the
// connection's number) and client_id. It is a no-op unless the logger has
// debug enabled (checked once, at Dial).
func (c *Client) trace(dir string, cn *connState, p packet.Packet) {
	if !c.tracing {
		return
	}
	verb := "sending"
	if dir == "recv" {
		verb = "received"
	}
	c.mu.Lock()
	id := c.clientID
	c.mu.Unlock()
	c.log.LogAttrs(context.Background(), slog.LevelDebug, verb+" "+summary(p, c.version, dir == "recv"),
		slog.String("dir", dir), slog.String("packet", p.Type().String()), slog.Uint64("conn", cn.gen),
		slog.String("client_id", id))
}

// summary describes p in one line, word for word as mosquitto's clients
// do in their debug output (recv: a packet received), e.g. "PUBLISH (d0,
// q1, r0, m3, 'a/b', ... (5 bytes))" or "PUBACK (Mid: 3, RC:0)".
func summary(p packet.Packet, v packet.Version, recv bool) string {
	switch p := p.(type) {
	case *packet.Connack:
		return fmt.Sprintf("CONNACK (%d)", connackCode(p, v))
	case *packet.Publish:
		return fmt.Sprintf("PUBLISH (d%d, q%d, r%d, m%d, '%s', ... (%d bytes))",
			b2i(p.Dup), p.QoS, b2i(p.Retain), p.PacketID, p.Topic, len(p.Payload))
	case *packet.Puback:
		if recv {
			return fmt.Sprintf("PUBACK (Mid: %d, RC:%d)", p.PacketID, p.ReasonCode)
		}
		return fmt.Sprintf("PUBACK (m%d, rc%d)", p.PacketID, p.ReasonCode)
	case *packet.Pubrec:
		if recv {
			return fmt.Sprintf("PUBREC (Mid: %d)", p.PacketID)
		}
		return fmt.Sprintf("PUBREC (m%d, rc%d)", p.PacketID, p.ReasonCode)
	case *packet.Pubrel:
		if recv {
			return fmt.Sprintf("PUBREL (Mid: %d)", p.PacketID)
		}
		return fmt.Sprintf("PUBREL (m%d)", p.PacketID)
	case *packet.Pubcomp:
		if recv {
			return fmt.Sprintf("PUBCOMP (Mid: %d, RC:%d)", p.PacketID, p.ReasonCode)
		}
		return fmt.Sprintf("PUBCOMP (m%d)", p.PacketID)
	case *packet.Subscribe:
		s := fmt.Sprintf("SUBSCRIBE (Mid: %d", p.PacketID)
		for _, sub := range p.Subscriptions {
			s += fmt.Sprintf(", Topic: %s, QoS: %d, Options: 0x%02x", sub.Filter, sub.QoS, subOptions(sub))
		}
		return s + ")"
	case *packet.Unsubscribe:
		s := fmt.Sprintf("UNSUBSCRIBE (Mid: %d", p.PacketID)
		for _, f := range p.Filters {
			s += ", Topic: " + f
		}
		return s + ")"
	case *packet.Disconnect:
		if recv || p.ReasonCode != packet.Success {
			return fmt.Sprintf("DISCONNECT (%d)", p.ReasonCode)
		}
	case *packet.Auth:
		return fmt.Sprintf("AUTH (%d)", p.ReasonCode)
	}
	return p.Type().String() // CONNECT, SUBACK, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT
}

// subOptions is the v5 subscription options byte without the QoS.
func subOptions(s packet.Subscription) byte {
	var b byte
	if s.NoLocal {
		b |= 0x04
	}
	if s.RetainAsPublished {
		b |= 0x08
	}
	return b | s.RetainHandling<<4
}

func connackCode(p *packet.Connack, v packet.Version) int {
	if v != packet.V5 {
		return int(p.ReasonCode.V3Connack())
	}
	return int(p.ReasonCode)
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
