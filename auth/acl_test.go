package auth

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mqttd/mqttd/topic"
)

func anon(id string) *Client { return &Client{ClientID: id} }

func user(id, name string) *Client { return &Client{ClientID: id, Username: name, HasUsername: true} }

func loadACL(t testing.TB, content string) *ACL {
	t.Helper()
	a, err := parseACL("test.acl", []byte(content))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

type aclCase struct {
	name   string
	c      *Client
	topic  string
	access Access
	want   bool
}

func runACLCases(t *testing.T, a *ACL, cases []aclCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := a.Authorize(context.Background(), tc.c, tc.topic, tc.access); got != tc.want {
				t.Errorf("Authorize(id=%q user=%q(%v), %q, %v) = %v, want %v",
					tc.c.ClientID, tc.c.Username, tc.c.HasUsername, tc.topic, tc.access, got, tc.want)
			}
		})
	}
}

func TestACLAnonymousAndUserSections(t *testing.T) {
	a := loadACL(t, `# anonymous clients
topic read public/#
topic write in/anon

user alice
topic readwrite alice/#
topic read public/news

user bob
topic write bob/out
`)
	runACLCases(t, a, []aclCase{
		{"anonymous entries apply to clients without a user name", anon("c1"), "public/a", Read, true},
		{"anonymous read is not write", anon("c1"), "public/a", Write, false},
		{"anonymous write entry", anon("c1"), "in/anon", Write, true},
		{"anonymous write is not read", anon("c1"), "in/anon", Read, false},
		{"anonymous has no user entries", anon("c1"), "alice/x", Read, false},
		{"a user does not get the anonymous entries", user("c2", "alice"), "public/a", Read, false},
		{"user entries", user("c2", "alice"), "alice/deep/topic", Write, true},
		{"a/# matches a [MQTT-4.7.1-2]", user("c2", "alice"), "alice", Read, true},
		{"user read entry", user("c2", "alice"), "public/news", Read, true},
		{"other user's entries do not apply", user("c3", "bob"), "alice/x", Read, false},
		{"bob write", user("c3", "bob"), "bob/out", Write, true},
		{"bob write only", user("c3", "bob"), "bob/out", Read, false},
		{"user without a section gets nothing", user("c4", "carol"), "public/a", Read, false},
		{"empty user name is a user name, not anonymous", user("c5", ""), "public/a", Read, false},
		{"user name is not the client id", user("alice", "bob"), "alice/x", Read, false},
		{"subscribe is always allowed, as in Mosquitto 2.0", anon("c1"), "nothing/#", Subscribe, true},
		{"ReadWrite is allowed if either is", anon("c1"), "in/anon", ReadWrite, true},
		{"no access bits", anon("c1"), "public/a", 0, false},
	})
	var _ Authorizer = a
}

func TestACLAccessWords(t *testing.T) {
	a := loadACL(t, `topic plain
topic read r
topic write w
topic readwrite rw
topic deny d
topic read
topic read with space/x
topic   read   spaced/out   
`)
	runACLCases(t, a, []aclCase{
		{"no access word is readwrite (read)", anon("c"), "plain", Read, true},
		{"no access word is readwrite (write)", anon("c"), "plain", Write, true},
		{"read", anon("c"), "r", Read, true},
		{"read denies write", anon("c"), "r", Write, false},
		{"write", anon("c"), "w", Write, true},
		{"write denies read", anon("c"), "w", Read, false},
		{"readwrite read", anon("c"), "rw", Read, true},
		{"readwrite write", anon("c"), "rw", Write, true},
		{"deny read", anon("c"), "d", Read, false},
		{"deny write", anon("c"), "d", Write, false},
		{"`topic read` alone is topic \"read\" with readwrite", anon("c"), "read", Write, true},
		{"topic with a space", anon("c"), "with space/x", Read, true},
		{"topic with a space is not split", anon("c"), "with", Read, false},
		{"repeated spaces and trailing blanks", anon("c"), "spaced/out", Read, true},
		{"access word is not a topic", anon("c"), "readwrite", Read, false},
	})
}

func TestACLDenyPrecedence(t *testing.T) {
	a := loadACL(t, `user alice
topic readwrite home/#
topic deny home/secret/#
topic read home/secret/public
topic deny $SYS/#
user alice
topic read extra/#
pattern deny home/%c/private
pattern read home/%u/#
pattern deny p/blocked/#
pattern readwrite p/#
pattern deny home/open/#
`)
	runACLCases(t, a, []aclCase{
		{"grant before deny in the file", user("c", "alice"), "home/x", Write, true},
		{"deny wins over a broader grant", user("c", "alice"), "home/secret/key", Read, false},
		{"deny wins over a more specific later grant", user("c", "alice"), "home/secret/public", Read, false},
		{"deny covers the parent level", user("c", "alice"), "home/secret", Read, false},
		{"repeated user sections are merged", user("c", "alice"), "extra/1", Read, true},
		{"user list grant wins over a pattern deny", user("c", "alice"), "home/open/x", Read, true},
		{"user list deny wins over a pattern grant", user("c", "alice"), "$SYS/x", Read, false},
		{"user grant wins over pattern deny with %c", user("c", "alice"), "home/c/private", Read, true},
		{"pattern deny first for others", user("c", "bob"), "home/c/private", Read, false},
		{"pattern grant for others", user("c", "bob"), "home/bob/x", Read, true},
		{"pattern deny wins over pattern grant", user("c", "bob"), "p/blocked/1", Write, false},
		{"pattern grant", user("c", "bob"), "p/other", Write, true},
		{"pattern deny applies to anonymous", anon("c"), "p/blocked/x", Write, false},
		{"pattern grant applies to anonymous", anon("c"), "p/x", Write, true},
	})
}

func TestACLPatternSubstitution(t *testing.T) {
	a := loadACL(t, `topic read anon/only
pattern readwrite devices/%c/#
pattern read users/%u/inbox
pattern write mix/%u/%c
pattern read mid/a%cb
pattern read pct/%x/%
pattern write $SYS/broker/connection/%c/state
`)
	runACLCases(t, a, []aclCase{
		{"%c is the client id", user("dev1", "u"), "devices/dev1/temp", Write, true},
		{"%c is not another id", user("dev1", "u"), "devices/dev2/temp", Write, false},
		{"%c for anonymous clients too", anon("dev9"), "devices/dev9/x", Read, true},
		{"%u is the user name", user("c", "kim"), "users/kim/inbox", Read, true},
		{"%u is not the client id", user("kim", "lee"), "users/kim/inbox", Read, false},
		{"%u patterns are skipped for anonymous clients", anon("kim"), "users/kim/inbox", Read, false},
		{"%u with an empty user name", user("c", ""), "users//inbox", Read, true},
		{"%u and %c together", user("c1", "kim"), "mix/kim/c1", Write, true},
		{"%u and %c swapped", user("c1", "kim"), "mix/c1/kim", Write, false},
		{"substitution inside a level, as Mosquitto 2.0", anon("X"), "mid/aXb", Read, true},
		{"a client id with '/' spans levels, as Mosquitto 2.0", anon("a/b"), "devices/a/b/x", Read, true},
		{"other % sequences are literal", anon("c"), "pct/%x/%", Read, true},
		{"'+' in the client id refuses pattern access", anon("dev+"), "devices/dev+/x", Read, false},
		{"'#' in the client id refuses pattern access", anon("#"), "devices/#/x", Read, false},
		{"'+' in the user name refuses pattern access", user("dev1", "a+b"), "devices/dev1/x", Read, false},
		{"wildcard id does not affect the user list", anon("dev+"), "anon/only", Read, true},
		{"bridge state pattern [MQTT-4.7.2-1]", anon("br1"), "$SYS/broker/connection/br1/state", Write, true},
		{"bridge state pattern for another id", anon("br1"), "$SYS/broker/connection/br2/state", Write, false},
	})
}

func TestACLDollarTopics(t *testing.T) {
	a := loadACL(t, `topic read #
topic read +/broker/#
topic read $SYS/broker/clients/#
topic readwrite $share-like/x
pattern read +/%c/#
`)
	runACLCases(t, a, []aclCase{
		{"# does not match $SYS [MQTT-4.7.2-1]", anon("c"), "$SYS/broker/load", Read, false},
		{"+ first does not match $SYS [MQTT-4.7.2-1]", anon("c"), "$SYS/broker/uptime", Read, false},
		{"pattern + first does not match $ [MQTT-4.7.2-1]", anon("c"), "$SYS/c/x", Read, false},
		{"$ entry matches $ topic [MQTT-4.7.2-1]", anon("c"), "$SYS/broker/clients/total", Read, true},
		{"other $ topics", anon("c"), "$share-like/x", Write, true},
		{"# matches ordinary topics", anon("c"), "a/b", Read, true},
		{"# does not grant write", anon("c"), "a/b", Write, false},
	})
}

func TestACLEmptyFileDeniesAll(t *testing.T) {
	for _, content := range []string{"", "# only comments\n\n#topic read #\n", "user alice\n"} {
		a := loadACL(t, content)
		for _, c := range []*Client{anon("c"), user("c", "alice")} {
			for _, acc := range []Access{Read, Write} {
				if a.Authorize(context.Background(), c, "a", acc) {
					t.Errorf("file %q: %v on \"a\" allowed", content, acc)
				}
			}
			if a.CanEverRead(c, "#") {
				t.Errorf("file %q: CanEverRead(#) = true", content)
			}
		}
	}
}

func TestACLFileLayout(t *testing.T) {
	a := loadACL(t, "# comment\r\n\r\n   topic read a\r\n\t\t\r\nuser  bob smith  \r\ntopic b\r\n#user alice\r\ntopic c")
	runACLCases(t, a, []aclCase{
		{"CRLF and leading spaces", anon("x"), "a", Read, true},
		{"user names may contain spaces", user("x", "bob smith"), "b", Read, true},
		{"commented user line does not start a section", user("x", "bob smith"), "c", Read, true},
		{"alice has no section", user("x", "alice"), "c", Read, false},
	})
}

func TestLoadACLFileErrors(t *testing.T) {
	tests := []struct {
		name, content string
		line          int
		want          string
	}{
		{"topic without topic", "topic read a\ntopic\n", 2, "without a topic"},
		{"pattern without topic", "\n\npattern   \n", 3, "without a topic"},
		{"invalid access word", "topic reed a/b\n", 1, `invalid access "reed"`},
		{"user without name", "topic a\nuser\n", 2, "without a user name"},
		{"user with blanks only", "user   \t \n", 1, "without a user name"},
		{"unknown keyword", "# c\n\ntopics read a\n", 3, "want topic, pattern or user"},
		{"tabs between fields", "topic\tread\ta\n", 1, "not tabs"},
		{"indented comment, as Mosquitto", "  # comment\n", 1, "invalid line"},
		{"'#' not last", "topic read a/#/b\n", 1, "invalid topic"},
		{"'+' inside a level", "pattern read a/b+/c\n", 1, "invalid topic"},
		{"'#' inside a level", "topic write a#\n", 1, "invalid topic"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeFile(t, "acl", tt.content)
			_, err := LoadACLFile(path)
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("err = %v, want a *ParseError", err)
			}
			if pe.File != path || pe.Line != tt.line {
				t.Errorf("error at %s:%d, want line %d", pe.File, pe.Line, tt.line)
			}
			if msg := err.Error(); !strings.Contains(msg, tt.want) || !strings.Contains(msg, fmt.Sprintf("%s:%d:", path, tt.line)) {
				t.Errorf("error %q does not contain %q and the file:line", msg, tt.want)
			}
		})
	}
	t.Run("invalid filter wraps topic.ErrInvalidFilter", func(t *testing.T) {
		_, err := parseACL("x", []byte("topic a/#/b"))
		if !errors.Is(err, topic.ErrInvalidFilter) {
			t.Errorf("err = %v, want it to wrap topic.ErrInvalidFilter", err)
		}
	})
	t.Run("missing file", func(t *testing.T) {
		if _, err := LoadACLFile(filepath.Join(t.TempDir(), "nope")); err == nil {
			t.Error("no error for a missing file")
		}
	})
}

func TestACLCanEverRead(t *testing.T) {
	a := loadACL(t, `topic read public/#
topic deny public/secret/#
topic write inbox/#
user alice
topic read sensors/+/temp
topic deny sensors/kitchen/#
topic readwrite $SYS/broker/clients/#
user bob
topic read logs/#
topic deny logs/#
pattern read devices/%c/#
pattern deny devices/%c/private/#
pattern read users/%u/#
`)
	tests := []struct {
		name   string
		c      *Client
		filter string
		want   bool
	}{
		{"exact readable topic", anon("c"), "public/news", true},
		{"wildcard overlapping a grant", anon("c"), "#", true},
		{"filter inside a denied subtree", anon("c"), "public/secret/#", false},
		{"filter covering a denied subtree and more", anon("c"), "public/+/#", true},
		{"exact denied topic", anon("c"), "public/secret", false},
		{"write-only grant cannot be read", anon("c"), "inbox/#", false},
		{"no overlap", anon("c"), "other/#", false},
		{"$SYS not reachable through # [MQTT-4.7.2-1]", anon("c"), "$SYS/#", false},
		{"+ grant with a literal filter", user("c", "alice"), "sensors/hall/temp", true},
		{"+ grant with a denied literal", user("c", "alice"), "sensors/kitchen/temp", false},
		{"+ filter over + grant minus one denied value", user("c", "alice"), "sensors/+/temp", true},
		{"filter longer than grant", user("c", "alice"), "sensors/+/temp/x", false},
		{"$SYS entry with $SYS filter", user("c", "alice"), "$SYS/#", true},
		{"$SYS entry with + filter [MQTT-4.7.2-1]", user("c", "alice"), "+/broker/clients/#", false},
		{"deny equal to the grant", user("c", "bob"), "logs/#", false},
		{"user deny also hides patterns", user("c", "bob"), "logs/#", false},
		{"pattern grant for %c", user("dev1", "bob"), "devices/dev1/#", true},
		{"pattern grant of another id", user("dev1", "bob"), "devices/dev2/#", false},
		{"pattern deny inside the grant", user("dev1", "bob"), "devices/dev1/private/#", false},
		{"pattern grant via wildcard filter", anon("dev1"), "devices/+/x", true},
		{"%u pattern needs a user name", anon("carol"), "users/carol/x", false},
		{"%u pattern", user("c", "carol"), "users/carol/x", true},
		{"wildcard in the id refuses patterns", anon("dev+"), "devices/#", false},
		{"shared subscription uses its filter", anon("c"), "$share/g/public/news", true},
		{"shared subscription to a denied topic", anon("c"), "$share/g/public/secret", false},
		{"invalid filter", anon("c"), "public/#/x", false},
		{"very deep filter under a grant", anon("c"), "public/" + strings.Repeat("a/", 20000) + "+", true},
		{"very deep filter under a deny", anon("c"), "public/secret/" + strings.Repeat("+/", 20000) + "#", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := a.CanEverRead(tt.c, tt.filter); got != tt.want {
				t.Errorf("CanEverRead(%q) = %v, want %v", tt.filter, got, tt.want)
			}
		})
	}
}

func TestACLCanEverReadEmptyName(t *testing.T) {
	// "/#" matches "/x" and, as its parent, the one-empty-level name "",
	// which is not a topic name [MQTT-4.7.3-1]: a single-level filter can
	// never read under it.
	a := loadACL(t, "topic read /#\n")
	for filter, want := range map[string]bool{"+": false, "#": true, "/+": true, "+/#": true} {
		if got := a.CanEverRead(anon("c"), filter); got != want {
			t.Errorf("CanEverRead(%q) = %v, want %v", filter, got, want)
		}
	}
}

func TestAccessString(t *testing.T) {
	for a, want := range map[Access]string{0: "deny", Read: "read", Write: "write", ReadWrite: "readwrite", Subscribe: "subscribe", 8: "Access(8)"} {
		if got := a.String(); got != want {
			t.Errorf("Access(%d).String() = %q, want %q", int(a), got, want)
		}
	}
}

// TestACLCanEverReadAgainstBruteForce checks CanEverRead on random ACLs and
// filters against a search over every topic name up to a few levels, built
// from the levels the ACLs use plus one they do not.
func TestACLCanEverReadAgainstBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	levels := []string{"a", "b", "", "$s", "+"}
	nameLevels := []string{"a", "b", "", "$s", "z"}
	randFilter := func() string {
		n := 1 + rng.IntN(2)
		parts := make([]string, n)
		for i := range parts {
			parts[i] = levels[rng.IntN(len(levels))]
		}
		if rng.IntN(3) == 0 {
			if rng.IntN(2) == 0 {
				parts[n-1] = "#"
			} else {
				parts = append(parts, "#")
			}
		}
		return strings.Join(parts, "/")
	}
	var names []string
	var grow func(prefix string, depth int)
	grow = func(prefix string, depth int) {
		for _, l := range nameLevels {
			n := l
			if depth > 0 {
				n = prefix + "/" + l
			}
			names = append(names, n)
			if depth < 3 {
				grow(n, depth+1)
			}
		}
	}
	grow("", 0)
	words := []string{"read", "write", "readwrite", "deny", "deny"}
	clients := []*Client{anon("a"), user("b", "u"), anon("+")}
	readable := 0
	for iter := 0; iter < 100; iter++ {
		var b strings.Builder
		for i := 0; i < 1+rng.IntN(5); i++ {
			kw := "topic"
			if rng.IntN(3) == 0 {
				kw = "pattern"
			}
			if i > 0 && rng.IntN(4) == 0 {
				b.WriteString("user u\n")
			}
			f := randFilter()
			if kw == "pattern" && rng.IntN(2) == 0 {
				f = strings.Replace(f, "a", "%c", 1)
			}
			if f == "" {
				f = "/" // a lone empty level would leave the line without a topic
			}
			fmt.Fprintf(&b, "%s %s %s\n", kw, words[rng.IntN(len(words))], f)
		}
		a := loadACL(t, b.String())
		for j := 0; j < 8; j++ {
			sub := randFilter()
			for _, c := range clients {
				want := false
				for _, n := range names {
					if topic.ValidateName(n) == nil && topic.Match(sub, n) && a.Authorize(context.Background(), c, n, Read) {
						want = true
						break
					}
				}
				if got := a.CanEverRead(c, sub); got != want {
					t.Fatalf("ACL:\n%sclient %+v filter %q: CanEverRead = %v, brute force %v", b.String(), *c, sub, got, want)
				}
				if want {
					readable++
				}
			}
		}
	}
	// Both answers must be common for the comparison to mean something.
	if total := 100 * 8 * len(clients); readable < total/10 || readable > total*9/10 {
		t.Errorf("%d of %d random cases readable: the generator is lopsided", readable, total)
	}
}

func BenchmarkACLAuthorize(b *testing.B) {
	a := loadACL(b, `topic read public/#
user alice
topic deny home/secret/#
topic readwrite home/#
pattern readwrite devices/%c/#
pattern read users/%u/#
`)
	ctx := context.Background()
	cases := []struct {
		name  string
		c     *Client
		topic string
	}{
		{"user-entry", user("c1", "alice"), "home/kitchen/temp"},
		{"pattern", user("dev42", "bob"), "devices/dev42/temp"},
		{"denied", user("dev42", "bob"), "nothing/here"},
	}
	for _, bc := range cases {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				a.Authorize(ctx, bc.c, bc.topic, Read)
			}
		})
	}
}

func BenchmarkACLCanEverRead(b *testing.B) {
	a := loadACL(b, `topic read public/#
topic deny public/secret/#
pattern read devices/%c/#
pattern deny devices/%c/private/#
`)
	c := anon("dev1")
	b.ReportAllocs()
	for b.Loop() {
		if !a.CanEverRead(c, "+/+/temp") {
			b.Fatal("want true")
		}
	}
}

func FuzzParseACL(f *testing.F) {
	f.Add([]byte("topic read a/#\nuser bob\ntopic deny a/b\npattern write d/%c/%u/#\n"), "a/b", "id", "bob")
	f.Add([]byte("# c\n\ntopic\n"), "$SYS/x", "+", "")
	f.Add([]byte("user  x \r\ntopic   readwrite  a b  \r\n"), "a b", "c/d", "x")
	f.Fuzz(func(t *testing.T, data []byte, name, id, username string) {
		a, err := parseACL("fuzz", data)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) || pe.Line < 1 {
				t.Fatalf("error %v is not a *ParseError with a line", err)
			}
			return
		}
		for _, c := range []*Client{anon(id), user(id, username)} {
			readable := false
			if topic.ValidateName(name) == nil {
				readable = a.Authorize(context.Background(), c, name, Read)
				a.Authorize(context.Background(), c, name, Write)
			}
			// A name that can be read is a filter that can be read.
			if readable && !a.CanEverRead(c, name) {
				t.Fatalf("Authorize(%q, Read) but not CanEverRead", name)
			}
			a.CanEverRead(c, name+"/#")
			a.CanEverRead(c, "+/"+name)
		}
	})
}
