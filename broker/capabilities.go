package broker

import (
	"github.com/mqttd/mqttd/packet"
)

// MQTT 5 capabilities: what CONNACK advertises (MQTT 5.0 section 3.2.2.3).

func optBool(p *bool) bool { return p == nil || *p }

func (o *Options) retainAvailable() bool { return optBool(o.RetainAvailable) }

// maxQoS is the highest QoS the server accepts and grants.
func (o *Options) maxQoS() byte {
	if o.MaxQoS == nil || *o.MaxQoS > 2 {
		return 2
	}
	return *o.MaxQoS
}

// capabilityProps fills the CONNACK properties that advertise what the
// server supports. Each is sent only when it differs from the value its
// absence means, so a default server's CONNACK carries none of them.
func (o *Options) capabilityProps(p *packet.Properties) {
	if o.MaxTopicAlias > 0 {
		p.TopicAliasMaximum = packet.Ptr(uint16(o.MaxTopicAlias)) // [MQTT-3.2.2-17]
	}
	if o.ReceiveMaximum < 65535 {
		// The inbound window, enforced by checkReceiveMax [MQTT-3.3.4-7]:
		// max_inflight_messages by default, as Mosquitto advertises it.
		p.ReceiveMaximum = packet.Ptr(uint16(o.ReceiveMaximum)) // MQTT 5.0 section 3.2.2.3.3
	}
	if q := o.maxQoS(); q < 2 {
		p.MaximumQoS = packet.Ptr(q) // [MQTT-3.2.2-9]
	}
	if !o.retainAvailable() {
		p.RetainAvailable = packet.Ptr[byte](0)
	}
	if !optBool(o.WildcardSubAvailable) {
		p.WildcardSubAvailable = packet.Ptr[byte](0)
	}
	if !optBool(o.SubIDAvailable) {
		p.SubIDAvailable = packet.Ptr[byte](0)
	}
	if !optBool(o.SharedSubAvailable) {
		p.SharedSubAvailable = packet.Ptr[byte](0)
	}
	if o.MaxPacketSize < maxPacketSize {
		p.MaximumPacketSize = packet.Ptr(uint32(o.MaxPacketSize))
	}
}
