package listener

import (
	"crypto/tls"
	"encoding/asn1"
	"encoding/binary"
	"encoding/hex"
	"net"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// connectionStater is implemented by *tls.Conn and by this package's
// WebSocket connections.
type connectionStater interface {
	ConnectionState() tls.ConnectionState
}

// PeerIdentity returns the verified client certificate of a connection
// accepted from a TLS or WebSocket-over-TLS listener: its first common name
// (mosquitto's use_identity_as_username) and its subject in the RFC 2253 form
// OpenSSL prints with XN_FLAG_RFC2253 (mosquitto's use_subject_as_username).
// ok is false for plain connections and for clients that sent no
// certificate. commonName is "" when the certificate has no usable CN (none,
// or one holding a NUL byte); callers that use it as a username must then
// refuse the client, as mosquitto does.
func PeerIdentity(c net.Conn) (commonName, subject string, ok bool) {
	cs, isTLS := connectionState(c)
	if !isTLS || !cs.HandshakeComplete || len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return "", "", false
	}
	leaf := cs.VerifiedChains[0][0]
	cn, subject, err := formatSubject(leaf.RawSubject)
	if err != nil {
		// crypto/x509 parsed this subject during verification, so this
		// cannot happen; fall back to Go's rendering rather than fail.
		return leaf.Subject.CommonName, leaf.Subject.String(), true
	}
	return cn, subject, true
}

// connectionState finds the TLS state of c, looking through wrappers that
// expose NetConn (as *tls.Conn itself does for its transport).
func connectionState(c net.Conn) (tls.ConnectionState, bool) {
	for range 8 {
		if s, ok := c.(connectionStater); ok {
			return s.ConnectionState(), true
		}
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		c = u.NetConn()
	}
	return tls.ConnectionState{}, false
}

type attributeTypeAndValue struct {
	Type  asn1.ObjectIdentifier
	Value asn1.RawValue
}

// relativeNameSET is one RDN; the SET suffix makes encoding/asn1 expect a SET.
type relativeNameSET []attributeTypeAndValue

// shortNames are OpenSSL's short names for attribute types (XN_FLAG_FN_SN).
var shortNames = map[string]string{
	"2.5.4.3":                    "CN",
	"2.5.4.4":                    "SN",
	"2.5.4.5":                    "serialNumber",
	"2.5.4.6":                    "C",
	"2.5.4.7":                    "L",
	"2.5.4.8":                    "ST",
	"2.5.4.9":                    "street",
	"2.5.4.10":                   "O",
	"2.5.4.11":                   "OU",
	"2.5.4.12":                   "title",
	"2.5.4.13":                   "description",
	"2.5.4.15":                   "businessCategory",
	"2.5.4.17":                   "postalCode",
	"2.5.4.41":                   "name",
	"2.5.4.42":                   "GN",
	"2.5.4.43":                   "initials",
	"2.5.4.44":                   "generationQualifier",
	"2.5.4.46":                   "dnQualifier",
	"2.5.4.65":                   "pseudonym",
	"2.5.4.97":                   "organizationIdentifier",
	"1.2.840.113549.1.9.1":       "emailAddress",
	"0.9.2342.19200300.100.1.1":  "UID",
	"0.9.2342.19200300.100.1.25": "DC",
	"1.3.6.1.4.1.311.60.2.1.1":   "jurisdictionL",
	"1.3.6.1.4.1.311.60.2.1.2":   "jurisdictionST",
	"1.3.6.1.4.1.311.60.2.1.3":   "jurisdictionC",
}

const oidCommonName = "2.5.4.3"

// ASN.1 string tags encoding/asn1 has no names for.
const (
	tagVisibleString   = 26
	tagUniversalString = 28
)

// formatSubject renders a DER Name as OpenSSL's X509_NAME_print_ex with
// XN_FLAG_RFC2253 does: RDNs last to first joined by ',', multi-valued RDNs
// joined by '+', short attribute names, values escaped per RFC 2253 with
// control characters and non-ASCII bytes (of the UTF-8 form) as \XX, and
// unknown attribute types or value types as '#' and the hex of the DER value.
// It also returns the first CN in certificate order.
func formatSubject(rawSubject []byte) (commonName, subject string, err error) {
	var rdns []relativeNameSET
	if _, err := asn1.Unmarshal(rawSubject, &rdns); err != nil {
		return "", "", err
	}
	cnFound := false
	var b strings.Builder
	for i := len(rdns) - 1; i >= 0; i-- {
		if i != len(rdns)-1 {
			b.WriteByte(',')
		}
		// OpenSSL reverses the flat list of entries, so the values of a
		// multi-valued RDN come out last to first as well.
		for j := len(rdns[i]) - 1; j >= 0; j-- {
			atv := rdns[i][j]
			if j != len(rdns[i])-1 {
				b.WriteByte('+')
			}
			oid := atv.Type.String()
			name, known := shortNames[oid]
			if !known {
				name = oid
			}
			b.WriteString(name)
			b.WriteByte('=')
			text, isString := decodeDirectoryString(atv.Value)
			if !known || !isString {
				b.WriteByte('#')
				b.WriteString(strings.ToUpper(hex.EncodeToString(atv.Value.FullBytes)))
			} else {
				writeEscaped2253(&b, text)
			}
		}
	}
	// The first CN in certificate order, as X509_NAME_get_index_by_NID finds it.
	for _, rdn := range rdns {
		for _, atv := range rdn {
			if cnFound || atv.Type.String() != oidCommonName {
				continue
			}
			cnFound = true
			if text, ok := decodeDirectoryString(atv.Value); ok && !strings.ContainsRune(text, 0) {
				commonName = text
			}
		}
	}
	return commonName, b.String(), nil
}

// decodeDirectoryString returns the UTF-8 text of a string-typed ASN.1 value.
func decodeDirectoryString(v asn1.RawValue) (string, bool) {
	if v.Class != asn1.ClassUniversal {
		return "", false
	}
	switch v.Tag {
	case asn1.TagUTF8String, asn1.TagPrintableString, asn1.TagIA5String, asn1.TagNumericString,
		tagVisibleString:
		if !utf8.Valid(v.Bytes) {
			return "", false
		}
		return string(v.Bytes), true
	case asn1.TagT61String: // OpenSSL reads T61String as Latin-1
		r := make([]rune, len(v.Bytes))
		for i, c := range v.Bytes {
			r[i] = rune(c)
		}
		return string(r), true
	case asn1.TagBMPString:
		if len(v.Bytes)%2 != 0 {
			return "", false
		}
		u := make([]uint16, len(v.Bytes)/2)
		for i := range u {
			u[i] = binary.BigEndian.Uint16(v.Bytes[2*i:])
		}
		return string(utf16.Decode(u)), true
	case tagUniversalString: // UTF-32BE
		if len(v.Bytes)%4 != 0 {
			return "", false
		}
		r := make([]rune, len(v.Bytes)/4)
		for i := range r {
			r[i] = rune(binary.BigEndian.Uint32(v.Bytes[4*i:]))
		}
		return string(r), true
	}
	return "", false
}

// writeEscaped2253 writes s escaped as OpenSSL's ASN1_STRFLGS_RFC2253 does.
func writeEscaped2253(b *strings.Builder, s string) {
	const hexDigits = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c < 0x20 || c == 0x7f || c >= 0x80:
			b.WriteByte('\\')
			b.WriteByte(hexDigits[c>>4])
			b.WriteByte(hexDigits[c&0xf])
		case strings.IndexByte(`,+"\<>;`, c) >= 0,
			i == 0 && (c == '#' || c == ' '),
			i == len(s)-1 && c == ' ':
			b.WriteByte('\\')
			b.WriteByte(c)
		default:
			b.WriteByte(c)
		}
	}
}
