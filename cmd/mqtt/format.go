package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/mqttd/mqttd/client"
	"github.com/mqttd/mqttd/internal/strftime"
)

// fmtItem is one piece of a compiled -F format string.
type fmtItem struct {
	kind  byte   // 'L' literal, '%' parameter, '@' strftime, 'N' nanoseconds
	lit   string // literal text
	conv  byte   // parameter or strftime conversion character
	left  bool   // '-' flag: left aligned
	zero  bool   // '0' flag: zero padded
	width int
	prec  int // -1 = none
}

// validConv are the % parameters mosquitto_sub knows.
const validConv = "%ACDEFIjJlmPpqRrStUxX"

// compileFormat parses an -F format string, with mosquitto_sub's rules and
// error messages: % parameters with optional '-', '0', width and .precision;
// @X strftime conversions and @N nanoseconds; \ escapes.
func compileFormat(s string) ([]fmtItem, error) {
	var items []fmtItem
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			items = append(items, fmtItem{kind: 'L', lit: lit.String()})
			lit.Reset()
		}
	}
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '%':
			it := fmtItem{kind: '%', prec: -1}
			i++
			if i < len(s) && s[i] == '-' {
				it.left = true
				i++
			}
			if i < len(s) && s[i] == '0' {
				it.zero = true
				i++
			}
			for i < len(s) && s[i] >= '0' && s[i] <= '9' {
				it.width = it.width*10 + int(s[i]-'0')
				i++
			}
			if i < len(s) && s[i] == '.' {
				i++
				it.prec = 0
				for i < len(s) && s[i] >= '0' && s[i] <= '9' {
					it.prec = it.prec*10 + int(s[i]-'0')
					i++
				}
			}
			if i >= len(s) {
				return nil, usagef("Error: Incomplete format specifier.")
			}
			if !strings.ContainsRune(validConv, rune(s[i])) {
				return nil, usagef("Error: Invalid format specifier '%c'.", s[i])
			}
			it.conv = s[i] // with '-', '0' still pads blank fields, as in mosquitto_sub
			if it.conv == '%' {
				lit.WriteByte('%')
				continue
			}
			flush()
			items = append(items, it)
		case '@':
			i++
			if i >= len(s) {
				return nil, usagef("Error: Incomplete format specifier.")
			}
			switch s[i] {
			case '@':
				lit.WriteByte('@')
			case 'N':
				flush()
				items = append(items, fmtItem{kind: 'N'})
			default:
				flush()
				items = append(items, fmtItem{kind: '@', conv: s[i]})
			}
		case '\\':
			i++
			if i >= len(s) {
				return nil, usagef("Error: Incomplete escape specifier.")
			}
			e, ok := escapes[s[i]]
			if !ok {
				return nil, usagef("Error: Invalid escape specifier '%c'.", s[i])
			}
			lit.WriteByte(e)
		default:
			lit.WriteByte(s[i])
		}
	}
	flush()
	return items, nil
}

var escapes = map[byte]byte{'\\': '\\', '0': 0, 'a': '\a', 'e': 0x1b, 'n': '\n', 'r': '\r', 't': '\t', 'v': '\v'}

// printer writes received messages as mosquitto_sub does: the payload, or
// "topic payload" with -v, or the -F format; a newline unless -N.
type printer struct {
	items   []fmtItem
	format  bool
	verbose bool
	eol     bool
	errOut  io.Writer // for "payload is not valid JSON" complaints
	now     func() time.Time
}

func newPrinter(c *config, errOut io.Writer) (*printer, error) {
	p := &printer{verbose: c.verbose, eol: c.eol, errOut: errOut, now: time.Now}
	if c.formatSet {
		items, err := compileFormat(c.format)
		if err != nil {
			return nil, err
		}
		p.items, p.format = items, true
	}
	return p, nil
}

// print appends the output for m to buf.
func (p *printer) print(buf *bytes.Buffer, m *client.Message) {
	if p.format {
		p.formatted(buf, m, p.now())
		if p.eol {
			buf.WriteByte('\n')
		}
		return
	}
	if p.verbose {
		if len(m.Payload) > 0 {
			buf.WriteString(m.Topic)
			buf.WriteByte(' ')
			buf.Write(m.Payload)
			if p.eol {
				buf.WriteByte('\n')
			}
		} else if p.eol {
			buf.WriteString(m.Topic)
			buf.WriteString(" (null)\n")
		}
		return
	}
	if len(m.Payload) > 0 {
		buf.Write(m.Payload)
		if p.eol {
			buf.WriteByte('\n')
		}
	}
}

func (p *printer) formatted(buf *bytes.Buffer, m *client.Message, now time.Time) {
	for _, it := range p.items {
		switch it.kind {
		case 'L':
			buf.WriteString(it.lit)
		case 'N':
			fmt.Fprintf(buf, "%09d", now.Nanosecond())
		case '@':
			buf.WriteString(strftime.Conv(it.conv, now))
		case '%':
			p.param(buf, it, m, now)
		}
	}
}

func (p *printer) param(buf *bytes.Buffer, it fmtItem, m *client.Message, now time.Time) {
	props := m.Props
	switch it.conv {
	case 'A':
		if props != nil && props.TopicAlias != nil {
			padInt(buf, int64(*props.TopicAlias), it)
		} else {
			blank(buf, it, it.zero)
		}
	case 'C':
		if props != nil && props.ContentType != "" {
			padStr(buf, props.ContentType, it)
		} else {
			blank(buf, it, false)
		}
	case 'D':
		if props != nil {
			buf.Write(props.CorrelationData)
		}
	case 'E':
		if props != nil && props.MessageExpiry != nil {
			padInt(buf, int64(int32(*props.MessageExpiry)), it)
		} else {
			blank(buf, it, it.zero)
		}
	case 'F':
		if props != nil && props.PayloadFormat != nil {
			padInt(buf, int64(*props.PayloadFormat), it)
		} else {
			blank(buf, it, it.zero)
		}
	case 'I':
		padStr(buf, now.Format("2006-01-02T15:04:05-0700"), it)
	case 'j':
		writeJSON(buf, m, now, true)
	case 'J':
		var tmp bytes.Buffer
		if !writeJSON(&tmp, m, now, false) {
			fmt.Fprintf(p.errOut, "Error: Message payload is not valid JSON on topic %s.\n", m.Topic)
			return
		}
		buf.Write(tmp.Bytes())
	case 'l':
		padInt(buf, int64(len(m.Payload)), it)
	case 'm':
		padInt(buf, int64(m.PacketID), it)
	case 'P':
		if props != nil {
			for i, u := range props.User {
				if i > 0 {
					buf.WriteByte(' ')
				}
				buf.WriteString(u.Key)
				buf.WriteByte(':')
				buf.WriteString(u.Value)
			}
		}
	case 'p':
		writePayload(buf, m.Payload, 0, it)
	case 'q':
		buf.WriteByte('0' + m.QoS)
	case 'R':
		if props != nil && props.ResponseTopic != "" {
			padStr(buf, props.ResponseTopic, it)
		}
	case 'r':
		if m.Retain {
			buf.WriteByte('1')
		} else {
			buf.WriteByte('0')
		}
	case 'S':
		if props != nil && len(props.SubscriptionIDs) > 0 {
			padInt(buf, int64(int32(props.SubscriptionIDs[0])), it)
		} else {
			blank(buf, it, it.zero)
		}
	case 't':
		padStr(buf, m.Topic, it)
	case 'U':
		fmt.Fprintf(buf, "%d.%09d", now.Unix(), now.Nanosecond())
	case 'x':
		writePayload(buf, m.Payload, 1, it)
	case 'X':
		writePayload(buf, m.Payload, 2, it)
	}
}

func blank(buf *bytes.Buffer, it fmtItem, zero bool) {
	pad := byte(' ')
	if zero {
		pad = '0'
	}
	for range it.width {
		buf.WriteByte(pad)
	}
}

func padInt(buf *bytes.Buffer, v int64, it fmtItem) {
	s := strconv.FormatInt(v, 10)
	if it.width == 0 || len(s) >= it.width {
		buf.WriteString(s)
		return
	}
	n := it.width - len(s)
	switch {
	case it.left:
		buf.WriteString(s)
		buf.WriteString(strings.Repeat(" ", n))
	case it.zero:
		if v < 0 {
			buf.WriteByte('-')
			s = s[1:]
		}
		buf.WriteString(strings.Repeat("0", n))
		buf.WriteString(s)
	default:
		buf.WriteString(strings.Repeat(" ", n))
		buf.WriteString(s)
	}
}

// padStr pads to the field width and cuts to the precision, as printf's %*.*s.
func padStr(buf *bytes.Buffer, s string, it fmtItem) {
	if it.prec >= 0 && len(s) > it.prec {
		s = s[:it.prec]
	}
	n := it.width - len(s)
	if n > 0 && !it.left {
		buf.WriteString(strings.Repeat(" ", n))
	}
	buf.WriteString(s)
	if n > 0 && it.left {
		buf.WriteString(strings.Repeat(" ", n))
	}
}

// writePayload prints the payload raw (hex 0), lower-case hex (1) or
// upper-case hex (2). With a field width mosquitto_sub cuts the payload to
// that many bytes, and for hex prints half as many bytes (so that the hex
// digits fit); this reproduces its output exactly.
func writePayload(buf *bytes.Buffer, payload []byte, hex int, it fmtItem) {
	n := len(payload)
	var padlen int
	if it.width > 0 {
		n = min(n, it.width)
		if hex > 0 {
			n /= 2
			padlen = it.width - n*2
		} else {
			padlen = it.width - n
		}
	}
	pad := byte(' ')
	if it.zero {
		pad = '0'
	}
	if !it.left {
		for range padlen {
			buf.WriteByte(pad)
		}
	}
	const lower, upper = "0123456789abcdef", "0123456789ABCDEF"
	switch hex {
	case 0:
		buf.Write(payload[:n])
	case 1, 2:
		digits := lower
		if hex == 2 {
			digits = upper
		}
		for _, b := range payload[:n] {
			buf.WriteByte(digits[b>>4])
			buf.WriteByte(digits[b&0xF])
		}
	}
	if it.left {
		for range padlen {
			buf.WriteByte(' ')
		}
	}
}

// jsonTime is the "tst" value of %j: local time with microseconds, then
// "Z" and the numeric zone, as mosquitto_sub prints it
// ("2020-05-06T22:12:00.000000Z+0100").
func jsonTime(t time.Time) string {
	return t.Format("2006-01-02T15:04:05.000000") + "Z" + t.Format("-0700")
}

// writeJSON writes the %j (escaped payload) or %J (payload is JSON) object.
// It reports false when raw is requested and the payload is not JSON.
func writeJSON(buf *bytes.Buffer, m *client.Message, now time.Time, escaped bool) bool {
	var payload []byte
	if !escaped && len(m.Payload) > 0 {
		var c bytes.Buffer
		if err := json.Compact(&c, m.Payload); err != nil {
			return false
		}
		payload = c.Bytes()
	}
	buf.WriteString(`{"tst":"`)
	buf.WriteString(jsonTime(now))
	buf.WriteString(`","topic":`)
	jsonString(buf, []byte(m.Topic))
	fmt.Fprintf(buf, `,"qos":%d,"retain":%d,"payloadlen":%d`, m.QoS, b2i(m.Retain), len(m.Payload))
	if m.QoS > 0 {
		fmt.Fprintf(buf, `,"mid":%d`, m.PacketID)
	}
	jsonProps(buf, m)
	buf.WriteString(`,"payload":`)
	switch {
	case len(m.Payload) == 0:
		buf.WriteString("null")
	case escaped:
		jsonString(buf, m.Payload)
	default:
		buf.Write(payload)
	}
	buf.WriteByte('}')
	return true
}

// jsonProps writes the "properties" member of %j for the v5 properties a
// PUBLISH may carry.
func jsonProps(buf *bytes.Buffer, m *client.Message) {
	p := m.Props
	if p == nil {
		return
	}
	var b bytes.Buffer
	sep := func() {
		if b.Len() > 0 {
			b.WriteByte(',')
		}
	}
	for _, id := range p.SubscriptionIDs {
		sep()
		fmt.Fprintf(&b, `"subscription-identifier":%d`, id)
	}
	if p.ContentType != "" {
		sep()
		b.WriteString(`"content-type":`)
		jsonString(&b, []byte(p.ContentType))
	}
	if len(p.User) > 0 {
		sep()
		b.WriteString(`"user-properties":{`)
		for i, u := range p.User {
			if i > 0 {
				b.WriteByte(',')
			}
			jsonString(&b, []byte(u.Key))
			b.WriteByte(':')
			jsonString(&b, []byte(u.Value))
		}
		b.WriteByte('}')
	}
	if p.ResponseTopic != "" {
		sep()
		b.WriteString(`"response-topic":`)
		jsonString(&b, []byte(p.ResponseTopic))
	}
	if p.CorrelationData != nil {
		sep()
		b.WriteString(`"correlation-data":`)
		jsonString(&b, p.CorrelationData)
	}
	if p.PayloadFormat != nil {
		sep()
		fmt.Fprintf(&b, `"payload-format-indicator":%d`, *p.PayloadFormat)
	}
	if p.MessageExpiry != nil {
		sep()
		fmt.Fprintf(&b, `"message-expiry-interval":%d`, *p.MessageExpiry)
	}
	if p.TopicAlias != nil {
		sep()
		fmt.Fprintf(&b, `"topic-alias":%d`, *p.TopicAlias)
	}
	if b.Len() == 0 {
		return
	}
	buf.WriteString(`,"properties":{`)
	buf.Write(b.Bytes())
	buf.WriteByte('}')
}

// jsonString writes s as a JSON string the way mosquitto_sub's JSON library
// does: quote, backslash and control characters escaped, every other byte
// as it is.
func jsonString(buf *bytes.Buffer, s []byte) {
	buf.WriteByte('"')
	for _, c := range s {
		switch c {
		case '"':
			buf.WriteString(`\"`)
		case '\\':
			buf.WriteString(`\\`)
		case '\b':
			buf.WriteString(`\b`)
		case '\f':
			buf.WriteString(`\f`)
		case '\n':
			buf.WriteString(`\n`)
		case '\r':
			buf.WriteString(`\r`)
		case '\t':
			buf.WriteString(`\t`)
		default:
			if c < 0x20 {
				fmt.Fprintf(buf, `\u%04x`, c)
			} else {
				buf.WriteByte(c)
			}
		}
	}
	buf.WriteByte('"')
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
