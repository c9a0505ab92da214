package main

import (
	"strconv"
	"strings"

	"github.com/mqttd/mqttd/packet"
)

// propKind is the value type of a property named on the command line.
type propKind int

const (
	kindByte propKind = iota
	kindU16
	kindU32
	kindVarint
	kindString
	kindBinary
	kindPair
)

// propSpec is one MQTT v5 property as mosquitto's -D names it, with the
// commands that may carry it.
type propSpec struct {
	kind  propKind
	cmds  string
	apply func(p *packet.Properties, s string, n uint64)
}

var propSpecs = map[string]propSpec{
	"payload-format-indicator": {kindByte, "publish will", func(p *packet.Properties, _ string, n uint64) { p.PayloadFormat = packet.Ptr(byte(n)) }},
	"message-expiry-interval":  {kindU32, "publish will", func(p *packet.Properties, _ string, n uint64) { p.MessageExpiry = packet.Ptr(uint32(n)) }},
	"content-type":             {kindString, "publish will", func(p *packet.Properties, s string, _ uint64) { p.ContentType = s }},
	"response-topic":           {kindString, "publish will", func(p *packet.Properties, s string, _ uint64) { p.ResponseTopic = s }},
	"correlation-data":         {kindBinary, "publish will", func(p *packet.Properties, s string, _ uint64) { p.CorrelationData = []byte(s) }},
	"subscription-identifier":  {kindVarint, "subscribe", func(p *packet.Properties, _ string, n uint64) { p.SubscriptionIDs = []uint32{uint32(n)} }},
	"session-expiry-interval":  {kindU32, "connect disconnect", func(p *packet.Properties, _ string, n uint64) { p.SessionExpiry = packet.Ptr(uint32(n)) }},
	"authentication-method":    {kindString, "connect", func(p *packet.Properties, s string, _ uint64) { p.AuthMethod = s }},
	"authentication-data":      {kindBinary, "connect", func(p *packet.Properties, s string, _ uint64) { p.AuthData = []byte(s) }},
	"request-problem-information": {kindByte, "connect", func(p *packet.Properties, _ string, n uint64) {
		p.RequestProblemInfo = packet.Ptr(byte(n))
	}},
	"request-response-information": {kindByte, "connect", func(p *packet.Properties, _ string, n uint64) {
		p.RequestResponseInfo = packet.Ptr(byte(n))
	}},
	"will-delay-interval": {kindU32, "will", func(p *packet.Properties, _ string, n uint64) { p.WillDelay = packet.Ptr(uint32(n)) }},
	"receive-maximum":     {kindU16, "connect", func(p *packet.Properties, _ string, n uint64) { p.ReceiveMaximum = packet.Ptr(uint16(n)) }},
	"topic-alias-maximum": {kindU16, "connect", func(p *packet.Properties, _ string, n uint64) { p.TopicAliasMaximum = packet.Ptr(uint16(n)) }},
	"maximum-packet-size": {kindU32, "connect", func(p *packet.Properties, _ string, n uint64) { p.MaximumPacketSize = packet.Ptr(uint32(n)) }},
	"topic-alias":         {kindU16, "publish", func(p *packet.Properties, _ string, n uint64) { p.TopicAlias = packet.Ptr(uint16(n)) }},
	"user-property":       {kindPair, "connect publish subscribe unsubscribe disconnect will", nil},
}

// parseProperty handles "-D command identifier value" and "-D command
// user-property name value" with args being what follows -D. It returns how
// many arguments it consumed.
func parseProperty(c *config, args []string) (int, error) {
	if len(args) < 3 {
		return 0, usagef("Error: -D argument given but not enough values specified (command identifier value).")
	}
	command, ident := strings.ToLower(args[0]), strings.ToLower(args[1])
	var dst *packet.Properties
	switch command {
	case "connect":
		dst = &c.connectProps
	case "publish":
		dst = &c.publishProps
	case "subscribe":
		dst = &c.subscribeProps
	case "unsubscribe":
		dst = &c.unsubscribeProps
	case "disconnect":
		dst = &c.disconnectProps
	case "will":
		dst = &c.willProps
	default:
		return 0, usagef("Error: Invalid command %s given in -D argument.", args[0])
	}
	spec, ok := propSpecs[ident]
	if !ok {
		return 0, usagef("Error: Invalid property name %s given in -D argument.", args[1])
	}
	if !strings.Contains(" "+spec.cmds+" ", " "+command+" ") {
		return 0, usagef("Error: %s property not allowed for %s in -D argument.", args[1], args[0])
	}
	c.propsUsed = true
	if spec.kind == kindPair {
		if len(args) < 4 {
			return 0, usagef("Error: -D %s user-property needs a name and a value.", args[0])
		}
		dst.User = append(dst.User, packet.UserProperty{Key: args[2], Value: args[3]})
		return 4, nil
	}
	v := args[2]
	var n uint64
	var max uint64
	switch spec.kind {
	case kindByte:
		max = 0xFF
	case kindU16:
		max = 0xFFFF
	case kindU32:
		max = 0xFFFFFFFF
	case kindVarint:
		max = packet.MaxRemainingLength
	}
	if max != 0 {
		var err error
		n, err = strconv.ParseUint(v, 10, 64)
		if err != nil || n > max || (spec.kind == kindVarint && n == 0) {
			return 0, usagef("Error: Invalid value %s for property %s in -D argument.", v, args[1])
		}
	}
	spec.apply(dst, v, n)
	return 3, nil
}
