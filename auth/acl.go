package auth

import (
	"context"
	"fmt"
	"math"
	"os"
	"strings"

	"github.com/mqttd/mqttd/topic"
)

// aclEntry is one `topic` or `pattern` line.
type aclEntry struct {
	filter string // topic filter; for a pattern, before %c/%u substitution
	access Access // Read, Write or ReadWrite; 0 for deny
	hasU   bool   // pattern contains "%u"
	hasC   bool   // pattern contains "%c"
}

// aclList is the entries that apply to one kind of client. As in Mosquitto,
// deny entries are checked before the entries that grant access.
type aclList struct {
	deny  []aclEntry
	grant []aclEntry
}

func (l *aclList) add(e aclEntry) {
	if e.access == 0 {
		l.deny = append(l.deny, e)
	} else {
		l.grant = append(l.grant, e)
	}
}

func (l *aclList) empty() bool { return l == nil || len(l.deny)+len(l.grant) == 0 }

// ACL is a loaded Mosquitto ACL file (acl_file). It implements Authorizer
// and is safe for concurrent use; reload by loading again.
//
// A client's access to a topic is decided as Mosquitto 2.0 does:
//
//  1. The client's own list: the `user` section with its exact user name,
//     or, for a client without a user name, the entries before the first
//     `user` line. A client with a user name never uses the anonymous
//     entries. Within the list any matching deny entry refuses access;
//     otherwise any matching entry granting the access allows it.
//  2. If the list did not decide, the `pattern` entries, which apply to
//     every client: with %c replaced by the client id and %u by the user
//     name (patterns with %u are skipped for clients without one), deny
//     entries first, then grants. A client whose id or user name contains
//     '+' or '#' is refused by the patterns outright.
//  3. Otherwise access is refused. An ACL file with no entries at all
//     refuses everything.
//
// A topic starting with '$' (such as $SYS/...) is matched only by entries
// whose filter starts with '$' [MQTT-4.7.2-1].
type ACL struct {
	anonymous *aclList
	users     map[string]*aclList
	patterns  *aclList
}

// LoadACLFile reads a Mosquitto ACL file:
//
//	# comment (only with '#' as the first character of the line)
//	topic [read|write|readwrite|deny] <filter>
//	user <username>
//	pattern [read|write|readwrite|deny] <filter with %c and %u>
//
// Fields are separated by spaces; without an access word the access is
// readwrite, so `topic read` alone grants readwrite on the topic "read". The
// filter is the rest of the line and may contain spaces. `topic` lines before
// the first `user` line are for anonymous clients. Any other line is an
// error, a *ParseError naming the file and line, as are invalid filters.
func LoadACLFile(path string) (*ACL, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("auth: ACL file: %w", err)
	}
	return parseACL(path, data)
}

// parseACL parses the contents of an ACL file; name is used in errors.
func parseACL(name string, data []byte) (*ACL, error) {
	a := &ACL{
		anonymous: &aclList{},
		users:     make(map[string]*aclList),
		patterns:  &aclList{},
	}
	current := a.anonymous
	for i, line := range splitLines(data) {
		lineNo := i + 1
		fail := func(format string, args ...any) error {
			return &ParseError{File: name, Line: lineNo, Err: fmt.Errorf(format, args...)}
		}
		// Mosquitto trims trailing white space, then treats a line whose
		// first character is '#' as a comment, then splits fields at
		// spaces (only ' ', not tabs).
		line = strings.TrimRight(line, " \t\n\v\f\r")
		if strings.HasPrefix(line, "#") {
			continue
		}
		keyword, rest, _ := nextField(line)
		switch keyword {
		case "":
			continue // blank line
		case "topic", "pattern":
			word, tail, more := nextField(rest)
			if word == "" {
				return nil, fail("%s without a topic", keyword)
			}
			access := ReadWrite
			filter := word
			if more {
				filter = trimBlanks(tail)
				switch word {
				case "read":
					access = Read
				case "write":
					access = Write
				case "readwrite":
					access = ReadWrite
				case "deny":
					access = 0
				default:
					return nil, fail("invalid access %q (want read, write, readwrite or deny)", word)
				}
			}
			if err := topic.ValidateFilter(filter); err != nil {
				return nil, fail("invalid topic %q: %w", filter, err)
			}
			e := aclEntry{filter: filter, access: access}
			if keyword == "pattern" {
				e.hasC = strings.Contains(filter, "%c")
				e.hasU = strings.Contains(filter, "%u")
				a.patterns.add(e)
			} else {
				current.add(e)
			}
		case "user":
			user := trimBlanks(rest)
			if user == "" {
				return nil, fail("user without a user name")
			}
			current = a.users[user]
			if current == nil {
				current = &aclList{}
				a.users[user] = current
			}
		default:
			if strings.ContainsAny(keyword, "\t\v\f") {
				return nil, fail("invalid line %q (separate fields with spaces, not tabs)", line)
			}
			return nil, fail("invalid line %q (want topic, pattern or user)", line)
		}
	}
	return a, nil
}

// nextField splits s like strtok(s, " ") followed by strtok(NULL, ""): it
// skips leading spaces and returns the field up to the next space, the text
// after that one space, and whether there was such text.
func nextField(s string) (field, rest string, more bool) {
	s = strings.TrimLeft(s, " ")
	field, rest, _ = strings.Cut(s, " ")
	return field, rest, rest != ""
}

// listFor returns the client's own entries: its user section, or the
// anonymous entries for a client without a user name.
func (a *ACL) listFor(c *Client) *aclList {
	if !c.HasUsername {
		return a.anonymous
	}
	return a.users[c.Username]
}

// patternsUsable reports whether the pattern entries may be consulted for
// c. Mosquitto refuses pattern access to a client whose user name or client
// id holds a wildcard, which could otherwise widen a %u or %c pattern.
func (a *ACL) patternsUsable(c *Client) bool {
	if a.patterns.empty() {
		return false
	}
	if c.HasUsername && strings.ContainsAny(c.Username, "+#") {
		return false
	}
	return !strings.ContainsAny(c.ClientID, "+#")
}

// expand returns e's filter for client c, with every %c replaced by the
// client id and every %u by the user name, and false if e does not apply to
// c (it uses %u and c has no user name). Like Mosquitto 2.0 the replacement
// is textual: "%c" anywhere in the filter is replaced.
func expand(e *aclEntry, c *Client) (string, bool) {
	if e.hasU && !c.HasUsername {
		return "", false
	}
	if !e.hasC && !e.hasU {
		return e.filter, true
	}
	var b strings.Builder
	f := e.filter
	b.Grow(len(f) + len(c.ClientID) + len(c.Username))
	for i := 0; i < len(f); i++ {
		if f[i] == '%' && i+1 < len(f) {
			switch f[i+1] {
			case 'c':
				b.WriteString(c.ClientID)
				i++
				continue
			case 'u':
				b.WriteString(c.Username)
				i++
				continue
			}
		}
		b.WriteByte(f[i])
	}
	return b.String(), true
}

// entryMatches reports whether an entry filter applies to a topic name.
func entryMatches(filter, name string) bool {
	// [MQTT-4.7.2-1] a '$' topic is matched only by an entry that starts
	// with '$', whatever its wildcards (Mosquitto skips the others).
	if topic.IsSys(name) && !topic.IsSys(filter) {
		return false
	}
	return topic.Match(filter, name)
}

// decision is the outcome of checking one list.
type decision int

const (
	undecided decision = iota
	allowed
	denied
)

// Authorize implements Authorizer with Mosquitto 2.0's rules (see ACL).
// Subscribe is always allowed, as in Mosquitto 2.0, which checks Read for
// each message at delivery instead; use CanEverRead to refuse subscriptions
// that could never deliver anything (acl_check_subscribe). A combination of
// Read and Write is allowed if either is granted, as Mosquitto's bit test
// does.
func (a *ACL) Authorize(_ context.Context, c *Client, name string, access Access) bool {
	if access == Subscribe {
		return true
	}
	want := access & ReadWrite
	if want == 0 {
		return false
	}
	if d := a.listFor(c).check(name, want); d != undecided {
		return d == allowed
	}
	if !a.patternsUsable(c) {
		return false
	}
	for i := range a.patterns.deny {
		if f, ok := expand(&a.patterns.deny[i], c); ok && entryMatches(f, name) {
			return false
		}
	}
	for i := range a.patterns.grant {
		e := &a.patterns.grant[i]
		if e.access&want == 0 {
			continue
		}
		if f, ok := expand(e, c); ok && entryMatches(f, name) {
			return true
		}
	}
	return false
}

// check applies a client's own list to a topic name.
func (l *aclList) check(name string, want Access) decision {
	if l == nil {
		return undecided
	}
	for i := range l.deny {
		if entryMatches(l.deny[i].filter, name) {
			return denied
		}
	}
	for i := range l.grant {
		if l.grant[i].access&want != 0 && entryMatches(l.grant[i].filter, name) {
			return allowed
		}
	}
	return undecided
}

// CanEverRead reports whether some topic name matching filter would be
// delivered to c under the ACL, that is whether Authorize(c, name, Read)
// holds for at least one name that filter matches. A broker configured with
// acl_check_subscribe refuses a SUBSCRIBE when it does not. filter may be a
// shared subscription ("$share/group/filter"); an invalid filter can never
// be read.
func (a *ACL) CanEverRead(c *Client, filter string) bool {
	_, shareFilter, shared, err := topic.ParseShare(filter)
	if err != nil {
		return false
	}
	if shared {
		filter = shareFilter
	}
	if topic.ValidateFilter(filter) != nil {
		return false
	}
	var userDeny, userGrant, patDeny, patGrant []string
	if l := a.listFor(c); l != nil {
		for _, e := range l.deny {
			userDeny = append(userDeny, e.filter)
		}
		for _, e := range l.grant {
			if e.access&Read != 0 {
				userGrant = append(userGrant, e.filter)
			}
		}
	}
	// A name is delivered if no user deny entry matches it and either a
	// user grant matches it, or no pattern deny entry matches it and a
	// pattern grant does.
	sub := split(filter)
	for _, g := range userGrant {
		if readable(filter, sub, g, userDeny) {
			return true
		}
	}
	if !a.patternsUsable(c) {
		return false
	}
	patDeny = append(patDeny, userDeny...)
	for i := range a.patterns.deny {
		if f, ok := expand(&a.patterns.deny[i], c); ok {
			patDeny = append(patDeny, f)
		}
	}
	for i := range a.patterns.grant {
		e := &a.patterns.grant[i]
		if e.access&Read == 0 {
			continue
		}
		if f, ok := expand(e, c); ok {
			patGrant = append(patGrant, f)
		}
	}
	for _, g := range patGrant {
		if readable(filter, sub, g, patDeny) {
			return true
		}
	}
	return false
}

// splitFilter is a filter cut into its levels.
type splitFilter struct {
	levels  []string
	multi   bool // ends with '#'
	longest int  // length of the longest level
}

func split(f string) splitFilter {
	sf := splitFilter{levels: strings.Split(f, "/")}
	sf.multi = sf.levels[len(sf.levels)-1] == "#"
	for _, l := range sf.levels {
		sf.longest = max(sf.longest, len(l))
	}
	return sf
}

// readable reports whether some topic name matches both the subscription
// filter sub and the grant filter, and none of the deny filters.
//
// It tries one candidate name per possible number of levels. At a level
// where sub or grant has a literal the name must have that literal; at the
// others it takes a fresh value that equals no literal anywhere. A fresh
// value is the hardest to match (only '+' and '#' match it), so if any name
// of that length works, the candidate does. Beyond the longest filter
// involved, more levels change nothing, so the lengths to try are bounded.
func readable(subFilter string, sub splitFilter, grant string, deny []string) bool {
	g := split(grant)
	// The name's level count n: exactly the levels of a filter without
	// '#', at least the levels before a '#' (a/# matches a [MQTT-4.7.1-2]).
	lo, hi := 1, math.MaxInt
	for _, f := range []*splitFilter{&sub, &g} {
		if f.multi {
			lo = max(lo, len(f.levels)-1)
		} else {
			lo, hi = max(lo, len(f.levels)), min(hi, len(f.levels))
		}
	}
	if lo > hi {
		return false
	}
	longest, longestDeny := max(sub.longest, g.longest), 0
	for _, d := range deny {
		ds := split(d)
		longest, longestDeny = max(longest, ds.longest), max(longestDeny, len(ds.levels))
	}
	if hi == math.MaxInt {
		hi = max(lo, longestDeny) + 1
	}
	fresh := strings.Repeat("x", longest+1)
	levels := make([]string, 0, hi)
	for n := lo; n <= hi; n++ {
		levels = levels[:0]
		for i := range n {
			switch {
			case isLiteral(sub.levels, i):
				levels = append(levels, sub.levels[i])
			case isLiteral(g.levels, i):
				levels = append(levels, g.levels[i])
			default:
				levels = append(levels, fresh)
			}
		}
		name := strings.Join(levels, "/")
		if name == "" || !topic.Match(subFilter, name) || !entryMatches(grant, name) {
			// "" (one empty level) is not a topic name [MQTT-4.7.3-1].
			continue
		}
		ok := true
		for _, d := range deny {
			if entryMatches(d, name) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// isLiteral reports whether level i of a split filter is a literal level.
func isLiteral(levels []string, i int) bool {
	return i < len(levels) && levels[i] != "+" && levels[i] != "#"
}
