package pebble

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/mqttd/mqttd/packet"
	"github.com/mqttd/mqttd/store"
)

// Value layouts (uv = uvarint; times are Unix milliseconds, 0 = zero time):
//
//	session       version:1 expiry:uv disconnectedAt:uv usernameLen:uv username
//	              [listenerLen:uv listener, when version has bit 0x80]
//	              willDelay:uv (0 = no will, 1 = will without delay, d+2 = delay d)
//	              [will as a v5 PUBLISH: QoS, retain, topic, properties, payload]
//	subscription  options:1 (qos | nl<<2 | rap<<3 | rh<<4) subID:uv
//	queue entry   flags:1 (qos | state<<2 | retain<<4) messageID:uv packetID:uv
//	              count:uv subID:uv...
//	message       received:uv expiry:uv publish (v5 PUBLISH encoding)
//	retained      id:uv received:uv expiry:uv publish
//	inbound       empty

var errBadValue = errors.New("malformed value")

func appendTime(dst []byte, t time.Time) []byte {
	if t.IsZero() {
		return append(dst, 0)
	}
	return binary.AppendUvarint(dst, uint64(max(t.UnixMilli(), 1)))
}

func readTime(b []byte) (time.Time, []byte, error) {
	v, n := binary.Uvarint(b)
	if n <= 0 {
		return time.Time{}, nil, errBadValue
	}
	if v == 0 {
		return time.Time{}, b[n:], nil
	}
	return time.UnixMilli(int64(v)), b[n:], nil
}

func readUvarint(b []byte) (uint64, []byte, error) {
	v, n := binary.Uvarint(b)
	if n <= 0 {
		return 0, nil, errBadValue
	}
	return v, b[n:], nil
}

// decodePublish decodes a complete v5 PUBLISH. The result aliases b.
func decodePublish(b []byte) (*packet.Publish, error) {
	r := bytes.NewReader(b)
	fh, err := packet.ReadFixedHeader(r)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errBadValue, err)
	}
	body := b[len(b)-r.Len():]
	if fh.Type != packet.PUBLISH || fh.Remaining != len(body) {
		return nil, fmt.Errorf("%w: not a complete PUBLISH", errBadValue)
	}
	p, err := packet.Decode(fh, body, packet.V5)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errBadValue, err)
	}
	pub, ok := p.(*packet.Publish)
	if !ok {
		return nil, fmt.Errorf("%w: decoded %T", errBadValue, p)
	}
	return pub, nil
}

var errUnloadable = errors.New("PUBLISH that the codec encodes but would not decode back")

func appendMessage(dst []byte, m *store.Message) ([]byte, error) {
	// Refuse now what Load would reject as damage later.
	if p := m.Publish; p.Topic == "" || (p.Dup && p.QoS == 0) {
		return dst, errUnloadable
	}
	dst = appendTime(dst, m.Received)
	dst = appendTime(dst, m.Expiry)
	return m.Publish.Encode(dst, packet.V5)
}

// decodeMessage decodes a message value; the result aliases b.
func decodeMessage(id uint64, b []byte) (*store.Message, error) {
	m := &store.Message{ID: id}
	var err error
	if m.Received, b, err = readTime(b); err != nil {
		return nil, err
	}
	if m.Expiry, b, err = readTime(b); err != nil {
		return nil, err
	}
	if m.Publish, err = decodePublish(b); err != nil {
		return nil, err
	}
	return m, nil
}

func appendRetained(dst []byte, m *store.Message) ([]byte, error) {
	return appendMessage(binary.AppendUvarint(dst, m.ID), m)
}

func decodeRetained(b []byte) (*store.Message, error) {
	id, b, err := readUvarint(b)
	if err != nil {
		return nil, err
	}
	return decodeMessage(id, b)
}

// sessionHasListener is set in a session record's version byte when a
// listener name follows the user name (protocol versions are below it).
const sessionHasListener = 0x80

func appendSession(dst []byte, s *store.Session) ([]byte, error) {
	if s.Version&sessionHasListener != 0 {
		return nil, fmt.Errorf("store: session version %d out of range", s.Version)
	}
	v := byte(s.Version)
	if s.Listener != "" {
		v |= sessionHasListener
	}
	dst = append(dst, v)
	dst = binary.AppendUvarint(dst, uint64(s.ExpiryInterval))
	dst = appendTime(dst, s.DisconnectedAt)
	dst = binary.AppendUvarint(dst, uint64(len(s.Username)))
	dst = append(dst, s.Username...)
	if s.Listener != "" {
		dst = binary.AppendUvarint(dst, uint64(len(s.Listener)))
		dst = append(dst, s.Listener...)
	}
	w := s.Will
	if w == nil {
		return append(dst, 0), nil
	}
	pub := &packet.Publish{QoS: w.QoS, Retain: w.Retain, Topic: w.Topic, Payload: w.Payload}
	if w.QoS > 0 {
		pub.PacketID = 1 // required on the wire; not part of the will
	}
	if w.Props != nil && w.Props.WillDelay != nil {
		dst = binary.AppendUvarint(dst, uint64(*w.Props.WillDelay)+2)
	} else {
		dst = append(dst, 1)
	}
	if w.Props != nil {
		props := *w.Props
		props.WillDelay = nil // not a PUBLISH property
		pub.Props = &props
	}
	return pub.Encode(dst, packet.V5)
}

func decodeSession(clientID string, b []byte) (*store.Session, error) {
	if len(b) < 1 {
		return nil, errBadValue
	}
	hasListener := b[0]&sessionHasListener != 0
	s := &store.Session{ClientID: clientID, Version: packet.Version(b[0] &^ sessionHasListener)}
	b = b[1:]
	exp, b, err := readUvarint(b)
	if err != nil || exp > uint64(store.NeverExpire) {
		return nil, errBadValue
	}
	s.ExpiryInterval = uint32(exp)
	if s.DisconnectedAt, b, err = readTime(b); err != nil {
		return nil, err
	}
	n, b, err := readUvarint(b)
	if err != nil || uint64(len(b)) < n {
		return nil, errBadValue
	}
	s.Username, b = string(b[:n]), b[n:]
	if hasListener {
		// Records written before the listener was stored have none: it
		// decodes as "" (unknown).
		n, b, err = readUvarint(b)
		if err != nil || uint64(len(b)) < n {
			return nil, errBadValue
		}
		s.Listener, b = string(b[:n]), b[n:]
	}
	delay, b, err := readUvarint(b)
	if err != nil || delay > uint64(store.NeverExpire)+2 {
		return nil, errBadValue
	}
	if delay == 0 {
		if len(b) != 0 {
			return nil, errBadValue
		}
		return s, nil
	}
	pub, err := decodePublish(b)
	if err != nil {
		return nil, err
	}
	s.Will = &packet.Will{Topic: pub.Topic, Payload: pub.Payload, QoS: pub.QoS, Retain: pub.Retain, Props: pub.Props}
	if delay >= 2 {
		if s.Will.Props == nil {
			s.Will.Props = &packet.Properties{}
		}
		s.Will.Props.WillDelay = packet.Ptr(uint32(delay - 2))
	}
	return s, nil
}

func appendSubscription(dst []byte, s *store.Subscription) []byte {
	o := s.Sub.QoS & 3
	if s.Sub.NoLocal {
		o |= 1 << 2
	}
	if s.Sub.RetainAsPublished {
		o |= 1 << 3
	}
	o |= (s.Sub.RetainHandling & 3) << 4
	dst = append(dst, o)
	return binary.AppendUvarint(dst, uint64(s.SubID))
}

func decodeSubscription(clientID, group, filter string, b []byte) (*store.Subscription, error) {
	if len(b) < 2 {
		return nil, errBadValue
	}
	o := b[0]
	id, rest, err := readUvarint(b[1:])
	if err != nil || len(rest) != 0 || id > 0xFFFFFFFF {
		return nil, errBadValue
	}
	return &store.Subscription{
		ClientID: clientID,
		Group:    group,
		SubID:    uint32(id),
		Sub: packet.Subscription{
			Filter:            filter,
			QoS:               o & 3,
			NoLocal:           o&(1<<2) != 0,
			RetainAsPublished: o&(1<<3) != 0,
			RetainHandling:    (o >> 4) & 3,
		},
	}, nil
}

func appendQueueEntry(dst []byte, e *store.QueueEntry) []byte {
	f := e.QoS&3 | byte(e.State&3)<<2
	if e.Retain {
		f |= 1 << 4
	}
	dst = append(dst, f)
	dst = binary.AppendUvarint(dst, e.MessageID)
	dst = binary.AppendUvarint(dst, uint64(e.PacketID))
	dst = binary.AppendUvarint(dst, uint64(len(e.SubIDs)))
	for _, id := range e.SubIDs {
		dst = binary.AppendUvarint(dst, uint64(id))
	}
	return dst
}

// queueEntryMessageID reads only the message id of a queue entry value.
func queueEntryMessageID(b []byte) (uint64, error) {
	if len(b) < 2 {
		return 0, errBadValue
	}
	id, _, err := readUvarint(b[1:])
	return id, err
}

func decodeQueueEntry(clientID string, seq uint64, b []byte) (*store.QueueEntry, error) {
	if len(b) < 1 {
		return nil, errBadValue
	}
	f := b[0]
	e := &store.QueueEntry{ClientID: clientID, Seq: seq, QoS: f & 3, State: store.QueueState(f>>2) & 3,
		Retain: f&(1<<4) != 0}
	var err error
	if e.MessageID, b, err = readUvarint(b[1:]); err != nil {
		return nil, err
	}
	pid, b, err := readUvarint(b)
	if err != nil || pid > 0xFFFF {
		return nil, errBadValue
	}
	e.PacketID = uint16(pid)
	n, b, err := readUvarint(b)
	if err != nil || n > uint64(len(b)) {
		return nil, errBadValue
	}
	if n > 0 {
		e.SubIDs = make([]uint32, n)
		for i := range e.SubIDs {
			var id uint64
			if id, b, err = readUvarint(b); err != nil || id > 0xFFFFFFFF {
				return nil, errBadValue
			}
			e.SubIDs[i] = uint32(id)
		}
	}
	if len(b) != 0 {
		return nil, errBadValue
	}
	return e, nil
}
