package dynsec

import (
	"bytes"
	"encoding/json"
	"math"
	"slices"
	"strings"
	"unicode/utf8"
)

// The control API and the configuration file are read the way Mosquitto's
// plugin reads them with cJSON: object keys are matched without regard to
// case (so "textName" written by mosquitto_ctrl is "textname"), numbers are
// truncated to int, and a value of the wrong type counts as absent or as an
// error exactly where the plugin says so.

// jobj is a decoded JSON object.
type jobj map[string]any

// parseJSON decodes one JSON value (numbers kept as json.Number).
func parseJSON(b []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	return normalize(v), nil
}

// normalize turns map[string]any into jobj, recursively.
func normalize(v any) any {
	switch t := v.(type) {
	case map[string]any:
		o := jobj(t)
		for k, e := range o {
			o[k] = normalize(e)
		}
		return o
	case []any:
		for i, e := range t {
			t[i] = normalize(e)
		}
	}
	return v
}

// get finds key without regard to case (cJSON_GetObjectItem); an exact
// match wins, else the first of the case-insensitive matches in key order.
func (o jobj) get(key string) (any, bool) {
	if o == nil {
		return nil, false
	}
	if v, ok := o[key]; ok {
		return v, true
	}
	var keys []string
	for k := range o {
		if strings.EqualFold(k, key) {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil, false
	}
	slices.Sort(keys)
	return o[keys[0]], true
}

// str returns key's value when it is a string (present reports the key).
func (o jobj) str(key string) (s string, isString, present bool) {
	v, ok := o.get(key)
	if !ok {
		return "", false, false
	}
	s, isString = v.(string)
	return s, isString, true
}

// getString is json_get_string: ok false when the value is not a string,
// or is missing and not optional; has says a string was found.
func (o jobj) getString(key string, optional bool) (s string, has, ok bool) {
	s, isString, present := o.str(key)
	if !present {
		return "", false, optional
	}
	if !isString {
		return "", false, false
	}
	return s, true, true
}

// getInt is json_get_int with its default; a non-number is ignored here
// (the callers in the plugin ignore the error too).
func (o jobj) getInt(key string, def int) int {
	v, ok := o.get(key)
	if !ok {
		return def
	}
	n, isNum := v.(json.Number)
	if !isNum {
		return def
	}
	return numberInt(n)
}

// numberInt converts like cJSON's valueint: saturated, truncated.
func numberInt(n json.Number) int {
	f, err := n.Float64()
	if err != nil {
		return 0
	}
	switch {
	case f >= math.MaxInt32:
		return math.MaxInt32
	case f <= math.MinInt32:
		return math.MinInt32
	}
	return int(f)
}

// getBool is json_get_bool with a default; ok false on a non-boolean.
func (o jobj) getBool(key string, def bool) (bool, bool) {
	v, present := o.get(key)
	if !present {
		return def, true
	}
	b, isBool := v.(bool)
	if !isBool {
		return def, false
	}
	return b, true
}

// array returns key's value when it is an array.
func (o jobj) array(key string) ([]any, bool) {
	v, ok := o.get(key)
	if !ok {
		return nil, false
	}
	a, ok := v.([]any)
	return a, ok
}

// validUTF8 is mosquitto_validate_utf8: well-formed UTF-8 of at most 65536
// bytes without NUL, surrogates, non-characters or control characters
// [MQTT-1.5.4-1], [MQTT-1.5.4-2].
func validUTF8(s string) bool {
	if len(s) > 65536 || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		switch {
		case r == 0, r >= 0xD800 && r <= 0xDFFF:
			return false
		case r >= 0xFDD0 && r <= 0xFDEF, r&0xFFFF >= 0xFFFE:
			return false
		case r < 0x20, r >= 0x7F && r <= 0x9F:
			return false
		}
	}
	return true
}

// validACLTopic is mosquitto_sub_topic_check: '+' and '#' take a whole
// level, '#' only the last, at most 65535 bytes.
func validACLTopic(s string) bool {
	if len(s) > 65535 {
		return false
	}
	levels := strings.Split(s, "/")
	for i, l := range levels {
		if strings.ContainsAny(l, "+#") {
			if len(l) != 1 {
				return false
			}
			if l == "#" && i != len(levels)-1 {
				return false
			}
		}
	}
	return true
}

// ordered is a JSON object that keeps its keys in the order they were set,
// for responses whose key order follows Mosquitto's.
type ordered struct {
	keys []string
	vals []any
}

func (o *ordered) set(k string, v any) *ordered {
	o.keys = append(o.keys, k)
	o.vals = append(o.vals, v)
	return o
}

func obj(kv ...any) *ordered {
	o := &ordered{}
	for i := 0; i+1 < len(kv); i += 2 {
		o.set(kv[i].(string), kv[i+1])
	}
	return o
}

// MarshalJSON writes the keys in order.
func (o *ordered) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, k := range o.keys {
		if i > 0 {
			b.WriteByte(',')
		}
		kb, err := marshal(k)
		if err != nil {
			return nil, err
		}
		b.Write(kb)
		b.WriteByte(':')
		vb, err := marshal(o.vals[i])
		if err != nil {
			return nil, err
		}
		b.Write(vb)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// marshal encodes v without HTML escaping (as cJSON prints).
func marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	e := json.NewEncoder(&b)
	e.SetEscapeHTML(false)
	if err := e.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}
