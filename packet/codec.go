package packet

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
	"unsafe"
)

// ErrEncode is wrapped by every error Encode and AppendHeader return: the
// packet holds a value that cannot be put on the wire (QoS above 2, a string
// longer than 65535 bytes, a property the packet may not carry, ...).
var ErrEncode = errors.New("packet: cannot encode")

// MaxStringLen is the longest UTF-8 string or binary data field: its length
// is a two-byte integer.
const MaxStringLen = 65535

// VarintLen returns how many bytes AppendVarint uses for v (1 to 4), or 0 if v
// is larger than MaxRemainingLength.
func VarintLen(v uint32) int {
	switch {
	case v < 1<<7:
		return 1
	case v < 1<<14:
		return 2
	case v < 1<<21:
		return 3
	case v <= MaxRemainingLength:
		return 4
	}
	return 0
}

// AppendVarint appends v as a variable byte integer. v must not exceed
// MaxRemainingLength; larger values are the caller's bug and are truncated to
// their low 28 bits (callers validate with VarintLen first).
func AppendVarint(dst []byte, v uint32) []byte {
	v &= MaxRemainingLength
	for v >= 0x80 {
		dst = append(dst, byte(v)|0x80)
		v >>= 7
	}
	return append(dst, byte(v))
}

// ReadVarint reads one variable byte integer. A fifth byte, or an encoding
// longer than necessary, is malformed [MQTT-1.5.5-1]. An io.EOF before the
// first byte is returned untouched; one after it becomes io.ErrUnexpectedEOF.
func ReadVarint(r io.ByteReader) (uint32, error) {
	v, problem, err := readVarint(r)
	if problem != "" {
		return 0, fmt.Errorf("packet: variable byte integer %s: %w", problem, MalformedPacket)
	}
	return v, err
}

// readVarint returns a non-empty problem when the encoding is malformed.
func readVarint(r io.ByteReader) (v uint32, problem string, err error) {
	for i := 0; i < 4; i++ {
		b, err := r.ReadByte()
		if err != nil {
			if i > 0 && errors.Is(err, io.EOF) {
				return 0, "", io.ErrUnexpectedEOF
			}
			return 0, "", err
		}
		v |= uint32(b&0x7F) << (7 * i)
		if b < 0x80 {
			if b == 0 && i > 0 { // [MQTT-1.5.5-1] minimal number of bytes
				return 0, "not minimally encoded", nil
			}
			return v, "", nil
		}
	}
	return 0, "longer than 4 bytes", nil
}

// ReadFixedHeader reads the first byte and the remaining length. io.EOF at the
// very first byte passes through untouched (the peer closed between packets);
// EOF later is io.ErrUnexpectedEOF. It does not check the type or the flags:
// Decode does.
func ReadFixedHeader(r io.ByteReader) (FixedHeader, error) {
	b, err := r.ReadByte()
	if err != nil {
		return FixedHeader{}, err
	}
	rem, problem, err := readVarint(r)
	if problem != "" {
		return FixedHeader{}, fmt.Errorf("packet: %s: remaining length %s: %w", Type(b>>4), problem, MalformedPacket)
	}
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return FixedHeader{}, err
	}
	return FixedHeader{Type: Type(b >> 4), Flags: b & 0x0F, Remaining: int(rem)}, nil
}

// AppendFixedHeader appends the first byte (type and flags) and the remaining
// length. remaining must be between 0 and MaxRemainingLength.
func AppendFixedHeader(dst []byte, t Type, flags byte, remaining int) []byte {
	dst = append(dst, byte(t)<<4|flags&0x0F)
	return AppendVarint(dst, uint32(remaining))
}

// Size returns the total encoded size of a packet whose remaining length is
// remaining: fixed header plus remaining.
func Size(remaining int) int {
	return 1 + VarintLen(uint32(remaining)) + remaining
}

// Read reads one whole packet from r and decodes it as protocol version v (v
// is ignored for CONNECT). If maxSize > 0, a packet whose total size (fixed
// header and remaining length) exceeds maxSize is rejected with an error
// wrapping PacketTooLarge before its body is read or allocated; the stream is
// then positioned inside that packet and the connection must be closed. The
// body gets its own allocation, which the returned packet owns.
func Read(r *bufio.Reader, v Version, maxSize int) (Packet, error) {
	fh, err := ReadFixedHeader(r)
	if err != nil {
		return nil, err
	}
	if maxSize > 0 {
		if n := Size(fh.Remaining); n > maxSize {
			return nil, fmt.Errorf("packet: %s: size %d exceeds maximum %d: %w", fh.Type, n, maxSize, PacketTooLarge)
		}
	}
	var body []byte
	if fh.Remaining > 0 {
		body = make([]byte, fh.Remaining)
		if _, err := io.ReadFull(r, body); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, fmt.Errorf("packet: %s: reading body: %w", fh.Type, err)
		}
	}
	return Decode(fh, body, v)
}

// Write encodes p as protocol version v and writes it with a single call to
// w.Write.
func Write(w io.Writer, p Packet, v Version) error {
	buf, err := p.Encode(nil, v)
	if err != nil {
		return err
	}
	_, err = w.Write(buf)
	return err
}

// requiredFlags holds the fixed header flags each type must carry in 3.1.1
// and 5.0 [MQTT-2.2.2-1] (v5 [MQTT-2.1.3-1]); PUBLISH has its own flags.
var requiredFlags = [16]byte{PUBREL: 0b0010, SUBSCRIBE: 0b0010, UNSUBSCRIBE: 0b0010}

// Decode decodes a packet body; len(body) must equal fh.Remaining. v is the
// connection's protocol version, ignored for CONNECT, which carries its own.
//
// Decode does not copy: strings and byte slices of the result (a PUBLISH's
// Topic and Payload, a CONNECT's ClientID and Password, property values...)
// alias body, so the caller hands body over and must never modify or reuse it.
// Byte slices are capped at their length, so appending to one never writes
// into body. Empty byte slices decode as nil, and properties whose values are
// all empty (or that are absent) decode as a nil *Properties, so that decoding
// what Encode wrote gives an equal packet.
//
// Errors wrap a ReasonCode (MalformedPacket or ProtocolError as MQTT 5 assigns
// them; use errors.As) and say what is wrong. A CONNECT with an unknown
// protocol level returns the partly decoded *Connect (ProtocolName and
// Version set) with an error wrapping UnsupportedProtocolVersion [MQTT-3.1.2-2].
func Decode(fh FixedHeader, body []byte, v Version) (Packet, error) {
	if len(body) != fh.Remaining {
		return nil, fmt.Errorf("packet: %s: body is %d bytes, remaining length is %d: %w", fh.Type, len(body), fh.Remaining, MalformedPacket)
	}
	if fh.Type == CONNECT {
		if fh.Flags != 0 { // [MQTT-2.2.2-1], [MQTT-2.2.2-2] (v5 [MQTT-2.1.3-1])
			return nil, fmt.Errorf("packet: CONNECT: reserved flags %04b: %w", fh.Flags, MalformedPacket)
		}
		return decodeConnect(body)
	}
	if fh.Type == 0 || fh.Type > AUTH || (fh.Type == AUTH && v != V5) {
		return nil, fmt.Errorf("packet: reserved packet type %d: %w", byte(fh.Type), MalformedPacket)
	}
	if v < V31 || v > V5 {
		return nil, fmt.Errorf("packet: %s: unknown protocol version %d: %w", fh.Type, byte(v), ProtocolError)
	}
	// MQTT 3.1 defines no reserved-flag rule (its PUBREL, SUBSCRIBE and
	// UNSUBSCRIBE may carry DUP), so flags are checked for 3.1.1 and 5.0 only.
	if fh.Type != PUBLISH && v != V31 && fh.Flags != requiredFlags[fh.Type] {
		// [MQTT-2.2.2-1], [MQTT-2.2.2-2] (v5 [MQTT-2.1.3-1]); PUBREL [MQTT-3.6.1-1],
		// SUBSCRIBE [MQTT-3.8.1-1], UNSUBSCRIBE [MQTT-3.10.1-1].
		return nil, fmt.Errorf("packet: %s: reserved flags %04b, want %04b: %w", fh.Type, fh.Flags, requiredFlags[fh.Type], MalformedPacket)
	}
	d := decoder{b: body, t: fh.Type}
	switch fh.Type {
	case CONNACK:
		return decodeConnack(&d, v)
	case PUBLISH:
		return decodePublish(&d, fh.Flags, v)
	case PUBACK, PUBREC, PUBREL, PUBCOMP:
		return decodeAck(&d, v)
	case SUBSCRIBE:
		return decodeSubscribe(&d, v)
	case SUBACK:
		return decodeSuback(&d, v)
	case UNSUBSCRIBE:
		return decodeUnsubscribe(&d, v)
	case UNSUBACK:
		return decodeUnsuback(&d, v)
	case PINGREQ, PINGRESP:
		if len(body) != 0 {
			return nil, d.malformed("remaining length %d, want 0", len(body))
		}
		if fh.Type == PINGREQ {
			return &Pingreq{}, nil
		}
		return &Pingresp{}, nil
	case DISCONNECT:
		return decodeDisconnect(&d, v)
	default: // AUTH
		return decodeAuth(&d)
	}
}

// ValidUTF8 reports whether s is a well-formed MQTT UTF-8 string: valid UTF-8
// without surrogate code points [MQTT-1.5.4-1] (3.1.1 [MQTT-1.5.3-1]) and
// without U+0000 [MQTT-1.5.4-2] (3.1.1 [MQTT-1.5.3-2]).
func ValidUTF8(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == 0 {
			return false
		}
		if c >= utf8.RuneSelf {
			// Go's decoder rejects surrogates and overlong forms.
			rest := s[i:]
			if !utf8.ValidString(rest) {
				return false
			}
			for j := 0; j < len(rest); j++ {
				if rest[j] == 0 {
					return false
				}
			}
			return true
		}
	}
	return true
}

// decoder reads fields from a packet body. The first failure is kept in err;
// later reads return zero values, so callers check err once per step.
type decoder struct {
	b   []byte
	off int
	t   Type
	err error
}

func (d *decoder) malformed(format string, args ...any) error {
	return d.fail(MalformedPacket, format, args...)
}

func (d *decoder) protocol(format string, args ...any) error {
	return d.fail(ProtocolError, format, args...)
}

func (d *decoder) fail(rc ReasonCode, format string, args ...any) error {
	err := fmt.Errorf("packet: %s: %s: %w", d.t, fmt.Sprintf(format, args...), rc)
	if d.err == nil {
		d.err = err
	}
	return err
}

func (d *decoder) remaining() int { return len(d.b) - d.off }

func (d *decoder) truncated(field string) {
	if d.err == nil {
		d.malformed("%s: truncated", field)
	}
}

func (d *decoder) byte(field string) byte {
	if d.err != nil || d.off >= len(d.b) {
		d.truncated(field)
		return 0
	}
	c := d.b[d.off]
	d.off++
	return c
}

func (d *decoder) uint16(field string) uint16 {
	if d.err != nil || len(d.b)-d.off < 2 {
		d.truncated(field)
		return 0
	}
	v := binary.BigEndian.Uint16(d.b[d.off:])
	d.off += 2
	return v
}

func (d *decoder) uint32(field string) uint32 {
	if d.err != nil || len(d.b)-d.off < 4 {
		d.truncated(field)
		return 0
	}
	v := binary.BigEndian.Uint32(d.b[d.off:])
	d.off += 4
	return v
}

func (d *decoder) varint(field string) uint32 {
	if d.err != nil {
		return 0
	}
	var v uint32
	for i := 0; i < 4; i++ {
		if d.off >= len(d.b) {
			d.truncated(field)
			return 0
		}
		c := d.b[d.off]
		d.off++
		v |= uint32(c&0x7F) << (7 * i)
		if c < 0x80 {
			if c == 0 && i > 0 { // [MQTT-1.5.5-1]
				d.malformed("%s: variable byte integer not minimally encoded", field)
				return 0
			}
			return v
		}
	}
	d.malformed("%s: variable byte integer longer than 4 bytes", field)
	return 0
}

// binary reads two-byte-length-prefixed binary data, aliasing the body. An
// empty field is nil.
func (d *decoder) binary(field string) []byte {
	n := int(d.uint16(field))
	if d.err != nil {
		return nil
	}
	if len(d.b)-d.off < n {
		d.malformed("%s: length %d runs past the end of the packet", field, n)
		return nil
	}
	if n == 0 {
		return nil
	}
	b := d.b[d.off : d.off+n : d.off+n]
	d.off += n
	return b
}

// string reads a UTF-8 string, aliasing the body, and checks it is well
// formed [MQTT-1.5.4-1], [MQTT-1.5.4-2] (3.1.1 [MQTT-1.5.3-1], [MQTT-1.5.3-2]).
func (d *decoder) string(field string) string {
	b := d.binary(field)
	if len(b) == 0 {
		return ""
	}
	s := unsafe.String(&b[0], len(b))
	if !ValidUTF8(s) {
		d.malformed("%s: not well-formed UTF-8 or contains U+0000", field)
		return ""
	}
	return s
}

// rest returns the unread bytes (nil when none), capped at their length.
func (d *decoder) rest() []byte {
	if d.off >= len(d.b) {
		return nil
	}
	b := d.b[d.off:len(d.b):len(d.b)]
	d.off = len(d.b)
	return b
}

// end fails unless the whole body was consumed.
func (d *decoder) end() error {
	if d.err == nil && d.off != len(d.b) {
		d.malformed("%d unexpected trailing bytes", len(d.b)-d.off)
	}
	return d.err
}

// packetID reads a packet identifier, which must be non-zero [MQTT-2.3.1-1]
// (v5 [MQTT-2.2.1-3]).
func (d *decoder) packetID() uint16 {
	id := d.uint16("packet identifier")
	if d.err == nil && id == 0 {
		d.protocol("packet identifier 0") // [MQTT-2.3.1-1]
	}
	return id
}

// encoder helpers

func encodeErr(t Type, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrEncode, t, fmt.Sprintf(format, args...))
}

func checkVersion(t Type, v Version) error {
	if v < V31 || v > V5 {
		return encodeErr(t, "unknown protocol version %d", byte(v))
	}
	return nil
}

func checkRemaining(t Type, n int) error {
	if n > MaxRemainingLength {
		return fmt.Errorf("%w: %s: remaining length %d exceeds %d: %w", ErrEncode, t, n, MaxRemainingLength, PacketTooLarge)
	}
	return nil
}

func checkString(t Type, field string, n int) error {
	if n > MaxStringLen {
		return encodeErr(t, "%s: %d bytes exceeds %d", field, n, MaxStringLen)
	}
	return nil
}

func appendUint16(dst []byte, v uint16) []byte { return append(dst, byte(v>>8), byte(v)) }

func appendUint32(dst []byte, v uint32) []byte {
	return append(dst, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

func appendString(dst []byte, s string) []byte {
	dst = appendUint16(dst, uint16(len(s)))
	return append(dst, s...)
}

func appendBinary(dst []byte, b []byte) []byte {
	dst = appendUint16(dst, uint16(len(b)))
	return append(dst, b...)
}
