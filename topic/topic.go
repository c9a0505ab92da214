// Package topic validates MQTT topic names and topic filters, parses shared
// subscriptions ($share/{group}/{filter}), matches names against filters, and
// keeps the broker's subscription index: a trie of filter levels with a bounded
// cache of match results.
//
// A topic name or filter is split into levels at '/'. Empty levels are valid:
// "a//b" has three levels and "/a" starts with an empty one. In a filter '+'
// matches exactly one level and '#' matches any number of trailing levels,
// including none, so "a/#" also matches "a".
package topic

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Errors returned by the validators. ParseShare and ValidateFilter may wrap
// ErrInvalidShare and ErrInvalidFilter together (errors.Is matches both) when
// the filter after "$share/{group}/" is itself invalid.
var (
	ErrInvalidName   = errors.New("topic: invalid topic name")
	ErrInvalidFilter = errors.New("topic: invalid topic filter")
	ErrInvalidShare  = errors.New("topic: invalid shared subscription")
)

// MaxLen is the longest topic name or filter in bytes.
const MaxLen = 65535

// sharePrefix starts a shared subscription filter.
const sharePrefix = "$share/"

// checkString applies the rules shared by names and filters. err is the
// sentinel to wrap.
func checkString(s string, err error) error {
	if s == "" {
		// [MQTT-4.7.3-1] at least one character long.
		return fmt.Errorf("%w: empty", err)
	}
	if len(s) > MaxLen {
		// [MQTT-4.7.3-3] no more than 65,535 bytes.
		return fmt.Errorf("%w: %d bytes is longer than %d", err, len(s), MaxLen)
	}
	if strings.IndexByte(s, 0) >= 0 {
		// [MQTT-4.7.3-2] no U+0000.
		return fmt.Errorf("%w: contains U+0000", err)
	}
	if !utf8.ValidString(s) {
		// [MQTT-1.5.4-1] well-formed UTF-8, no surrogates (utf8.ValidString
		// rejects encoded surrogates).
		return fmt.Errorf("%w: not valid UTF-8", err)
	}
	return nil
}

// ValidateName checks a topic name as sent in a PUBLISH or a Will: non-empty
// [MQTT-4.7.3-1], no wildcard characters [MQTT-4.7.1-1], no U+0000
// [MQTT-4.7.3-2], valid UTF-8 [MQTT-1.5.4-1] and at most 65535 bytes
// [MQTT-4.7.3-3]. Empty levels are valid ("a//b", "/a", "a/"). The error wraps
// ErrInvalidName.
func ValidateName(name string) error {
	if err := checkString(name, ErrInvalidName); err != nil {
		return err
	}
	if i := strings.IndexAny(name, "+#"); i >= 0 {
		// [MQTT-4.7.1-1] wildcards must not be used within a topic name.
		return fmt.Errorf("%w: wildcard %q at byte %d", ErrInvalidName, name[i], i)
	}
	return nil
}

// ValidateFilter checks a topic filter as sent in a SUBSCRIBE or UNSUBSCRIBE:
// non-empty [MQTT-4.7.3-1]; '#' only as the whole last level [MQTT-4.7.1-2];
// '+' only as a whole level [MQTT-4.7.1-3]; no U+0000 [MQTT-4.7.3-2]; valid
// UTF-8 [MQTT-1.5.4-1]; at most 65535 bytes [MQTT-4.7.3-3]. A filter starting
// with "$share/" is checked with the ParseShare rules and its error wraps
// ErrInvalidShare; otherwise the error wraps ErrInvalidFilter.
func ValidateFilter(filter string) error {
	if strings.HasPrefix(filter, sharePrefix) {
		_, _, _, err := ParseShare(filter)
		return err
	}
	return validatePlainFilter(filter)
}

// validatePlainFilter checks a filter without looking for "$share/".
func validatePlainFilter(filter string) error {
	if err := checkString(filter, ErrInvalidFilter); err != nil {
		return err
	}
	for i := 0; i < len(filter); i++ {
		switch filter[i] {
		case '#':
			// [MQTT-4.7.1-2] '#' is the whole last level: alone or after a
			// '/', and nothing after it.
			if (i > 0 && filter[i-1] != '/') || i != len(filter)-1 {
				return fmt.Errorf("%w: '#' at byte %d is not the whole last level", ErrInvalidFilter, i)
			}
		case '+':
			// [MQTT-4.7.1-3] '+' occupies an entire level.
			if (i > 0 && filter[i-1] != '/') || (i < len(filter)-1 && filter[i+1] != '/') {
				return fmt.Errorf("%w: '+' at byte %d is not a whole level", ErrInvalidFilter, i)
			}
		}
	}
	return nil
}

// ParseShare splits a shared subscription filter "$share/{group}/{filter}"
// into its group and the real filter. When filter does not start with
// "$share/" it returns shared=false and a nil error, and the caller validates
// the filter as usual. Otherwise shared is true and err, if not nil, wraps
// ErrInvalidShare: the group (ShareName) must be non-empty [MQTT-4.8.2-1] and
// contain none of '+', '#' or '/', and be followed by '/' and a valid,
// non-empty filter [MQTT-4.8.2-2] (when that filter breaks a filter rule the
// error also wraps ErrInvalidFilter). "$share/group" without a filter part is invalid. The
// real filter is not itself parsed for "$share/": it is an ordinary filter.
func ParseShare(filter string) (group, realFilter string, shared bool, err error) {
	rest, ok := strings.CutPrefix(filter, sharePrefix)
	if !ok {
		return "", "", false, nil
	}
	if err := checkString(filter, ErrInvalidShare); err != nil {
		return "", "", true, err
	}
	group, realFilter, ok = strings.Cut(rest, "/")
	if !ok {
		// [MQTT-4.8.2-2] the share name is followed by '/' and a filter.
		return "", "", true, fmt.Errorf("%w: %q has no topic filter after the share name", ErrInvalidShare, filter)
	}
	if group == "" {
		// [MQTT-4.8.2-1] the share name is at least one character long.
		return "", "", true, fmt.Errorf("%w: empty share name", ErrInvalidShare)
	}
	if i := strings.IndexAny(group, "+#"); i >= 0 {
		// [MQTT-4.8.2-2] the share name must not contain '/', '+' or '#'
		// ('/' ends it by construction).
		return "", "", true, fmt.Errorf("%w: share name %q contains %q", ErrInvalidShare, group, group[i])
	}
	if realFilter == "" {
		// [MQTT-4.8.2-2] the topic filter after the share name is non-empty.
		return "", "", true, fmt.Errorf("%w: empty topic filter after the share name", ErrInvalidShare)
	}
	if err := validatePlainFilter(realFilter); err != nil {
		// [MQTT-4.8.2-2] ... and is a valid topic filter.
		return "", "", true, fmt.Errorf("%w: %w", ErrInvalidShare, err)
	}
	return group, realFilter, true, nil
}

// nextLevel returns the first level of s, what follows its '/', and whether
// there was a '/' (more levels follow, possibly one empty level).
func nextLevel(s string) (level, rest string, more bool) {
	if i := strings.IndexByte(s, '/'); i >= 0 {
		return s[:i], s[i+1:], true
	}
	return s, "", false
}

// firstLevelIsWildcard reports whether the first level of filter is exactly
// "+" or "#".
func firstLevelIsWildcard(filter string) bool {
	return len(filter) > 0 && (filter[0] == '+' || filter[0] == '#') && (len(filter) == 1 || filter[1] == '/')
}

// Match reports whether the topic name matches the filter. '+' matches exactly
// one level and '#' (as the last level) any number of levels, including the
// parent level: "a/#" matches "a" [MQTT-4.7.1-2]. A name starting with '$' is
// not matched by a filter whose first level is '+' or '#' [MQTT-4.7.2-1].
// Match does not validate its arguments: '+' and '#' anywhere else are
// compared literally. filter must not be a "$share/" filter; pass the real
// filter from ParseShare.
func Match(filter, name string) bool {
	if IsSys(name) && firstLevelIsWildcard(filter) {
		// [MQTT-4.7.2-1]
		return false
	}
	for {
		fl, frest, fmore := nextLevel(filter)
		if fl == "#" && !fmore {
			return true
		}
		nl, nrest, nmore := nextLevel(name)
		if fl != "+" && fl != nl {
			return false
		}
		switch {
		case !fmore && !nmore:
			return true
		case !nmore:
			// The name has run out of levels: only a trailing "#" can
			// still match, as the parent level [MQTT-4.7.1-2].
			return frest == "#"
		case !fmore:
			return false
		}
		filter, name = frest, nrest
	}
}

// IsSys reports whether name starts with '$' (such as $SYS topics), which
// wildcard-first filters do not match [MQTT-4.7.2-1].
func IsSys(name string) bool {
	return len(name) > 0 && name[0] == '$'
}

// HasWildcard reports whether filter contains '+' or '#'.
func HasWildcard(filter string) bool {
	return strings.ContainsAny(filter, "+#")
}
