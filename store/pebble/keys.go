package pebble

import (
	"encoding/binary"
	"errors"
)

// Key layout. Every key starts with a one-byte record kind. Client ids are
// length-prefixed (uvarint) so that one client's keys form one contiguous
// range; numbers are big-endian so that iteration order is numeric order.
//
//	s <client id>                                     session
//	u <len><client id> <len><group> <filter>          subscription
//	q <len><client id> <seq:8>                        queue entry
//	i <len><client id> <packet id:2>                  inbound QoS 2 packet id
//	m <message id:8>                                  message
//	r <topic>                                         retained message
//	\x00 format                                       store format version
const (
	kindMeta         byte = 0x00
	kindInbound      byte = 'i'
	kindMessage      byte = 'm'
	kindQueue        byte = 'q'
	kindRetained     byte = 'r'
	kindSession      byte = 's'
	kindSubscription byte = 'u'
)

var formatKey = []byte{kindMeta, 'f', 'o', 'r', 'm', 'a', 't'}

var errBadKey = errors.New("malformed key")

// clientPrefix is kind, length and client id: the start of all of one
// client's keys of that kind.
func clientPrefix(dst []byte, kind byte, clientID string) []byte {
	dst = append(dst, kind)
	dst = binary.AppendUvarint(dst, uint64(len(clientID)))
	return append(dst, clientID...)
}

func sessionKey(clientID string) []byte {
	return append([]byte{kindSession}, clientID...)
}

func subscriptionKey(clientID, group, filter string) []byte {
	k := clientPrefix(make([]byte, 0, 3+len(clientID)+len(group)+len(filter)), kindSubscription, clientID)
	k = binary.AppendUvarint(k, uint64(len(group)))
	k = append(k, group...)
	return append(k, filter...)
}

func queueKey(clientID string, seq uint64) []byte {
	return appendQueueKey(make([]byte, 0, 10+len(clientID)), clientID, seq)
}

// appendQueueKey appends queueKey(clientID, seq) to dst.
func appendQueueKey(dst []byte, clientID string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(clientPrefix(dst, kindQueue, clientID), seq)
}

func inboundKey(clientID string, pid uint16) []byte {
	k := clientPrefix(make([]byte, 0, 4+len(clientID)), kindInbound, clientID)
	return binary.BigEndian.AppendUint16(k, pid)
}

func messageKey(id uint64) []byte { return appendMessageKey(make([]byte, 0, 9), id) }

// appendMessageKey appends messageKey(id) to dst.
func appendMessageKey(dst []byte, id uint64) []byte {
	return binary.BigEndian.AppendUint64(append(dst, kindMessage), id)
}

func retainedKey(topic string) []byte {
	return append([]byte{kindRetained}, topic...)
}

// prefixEnd returns the smallest key greater than every key starting with p.
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		end[i]++
		if end[i] != 0 {
			return end[:i+1]
		}
	}
	return nil // p is all 0xff: no upper bound
}

// splitClient splits a key of a per-client kind after its client id.
func splitClient(k []byte) (clientID, rest []byte, err error) {
	n, w := binary.Uvarint(k[1:])
	if w <= 0 || uint64(len(k)-1-w) < n {
		return nil, nil, errBadKey
	}
	start := 1 + w
	return k[start : start+int(n)], k[start+int(n):], nil
}

// parseSubscriptionRest splits the rest of a subscription key.
func parseSubscriptionRest(rest []byte) (group, filter []byte, err error) {
	n, w := binary.Uvarint(rest)
	if w <= 0 || uint64(len(rest)-w) < n {
		return nil, nil, errBadKey
	}
	return rest[w : w+int(n)], rest[w+int(n):], nil
}
