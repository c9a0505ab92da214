package topic

import (
	"errors"
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestValidateName(t *testing.T) {
	tests := []struct {
		name  string
		topic string
		want  error // nil when valid
	}{
		{"single level", "a", nil},
		{"levels", "a/b/c", nil},
		{"empty middle level", "a//b", nil},
		{"leading empty level", "/a", nil},
		{"trailing empty level", "a/", nil},
		{"only separator", "/", nil},
		{"space", " ", nil},
		{"sys", "$SYS/broker/uptime", nil},
		{"utf8", "häuser/€/日本", nil},
		{"max length 65535", strings.Repeat("a", MaxLen), nil},
		{"MQTT-4.7.3-1 empty", "", ErrInvalidName},
		{"MQTT-4.7.1-1 plus level", "a/+", ErrInvalidName},
		{"MQTT-4.7.1-1 hash level", "a/#", ErrInvalidName},
		{"MQTT-4.7.1-1 plus alone", "+", ErrInvalidName},
		{"MQTT-4.7.1-1 hash alone", "#", ErrInvalidName},
		{"MQTT-4.7.1-1 plus inside level", "a+b", ErrInvalidName},
		{"MQTT-4.7.1-1 hash inside level", "a#b/c", ErrInvalidName},
		{"MQTT-4.7.3-2 NUL", "a\x00b", ErrInvalidName},
		{"MQTT-4.7.3-3 longer than 65535", strings.Repeat("a", MaxLen+1), ErrInvalidName},
		{"MQTT-1.5.4-1 invalid UTF-8", "a/\xff", ErrInvalidName},
		{"MQTT-1.5.4-1 encoded surrogate", "a/\xed\xa0\x80", ErrInvalidName},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkErr(t, ValidateName(tt.topic), tt.want)
		})
	}
}

func TestValidateFilter(t *testing.T) {
	tests := []struct {
		name   string
		filter string
		want   []error // all must match with errors.Is; nil when valid
	}{
		{"literal", "a/b", nil},
		{"hash alone", "#", nil},
		{"plus alone", "+", nil},
		{"hash last", "a/#", nil},
		{"plus middle", "a/+/b", nil},
		{"plus plus", "+/+", nil},
		{"plus then hash", "+/#", nil},
		{"plus after empty level", "/+", nil},
		{"plus before empty level", "+/", nil},
		{"hash after empty level", "/#", nil},
		{"empty levels", "a//b", nil},
		{"only separator", "/", nil},
		{"sys", "$SYS/#", nil},
		{"share without slash is a plain filter", "$share", nil},
		{"share-like prefix is a plain filter", "$shared/a", nil},
		{"max length 65535", strings.Repeat("a", MaxLen), nil},
		{"MQTT-4.7.3-1 empty", "", []error{ErrInvalidFilter}},
		{"MQTT-4.7.1-2 hash inside level", "a#", []error{ErrInvalidFilter}},
		{"MQTT-4.7.1-2 hash not last", "a/#/b", []error{ErrInvalidFilter}},
		{"MQTT-4.7.1-2 hash first of two", "#/a", []error{ErrInvalidFilter}},
		{"MQTT-4.7.1-2 hash ends level", "a/b#", []error{ErrInvalidFilter}},
		{"MQTT-4.7.1-2 double hash", "##", []error{ErrInvalidFilter}},
		{"MQTT-4.7.1-2 hash then separator", "#/", []error{ErrInvalidFilter}},
		{"MQTT-4.7.1-3 plus ends level", "a+", []error{ErrInvalidFilter}},
		{"MQTT-4.7.1-3 plus starts level", "+a", []error{ErrInvalidFilter}},
		{"MQTT-4.7.1-3 plus inside level", "a/b+c/d", []error{ErrInvalidFilter}},
		{"MQTT-4.7.1-3 double plus", "++", []error{ErrInvalidFilter}},
		{"MQTT-4.7.1-3 plus hash", "+#", []error{ErrInvalidFilter}},
		{"MQTT-4.7.3-2 NUL", "a/\x00", []error{ErrInvalidFilter}},
		{"MQTT-4.7.3-3 longer than 65535", strings.Repeat("a", MaxLen+1), []error{ErrInvalidFilter}},
		{"MQTT-1.5.4-1 invalid UTF-8", "\xc3", []error{ErrInvalidFilter}},
		{"share valid", "$share/g/a/+", nil},
		{"share hash", "$share/g/#", nil},
		{"share real filter looks like share", "$share/g/$share/h/a", nil},
		{"MQTT-4.8.2-1 share empty group", "$share//a", []error{ErrInvalidShare}},
		{"MQTT-4.8.2-2 share group with plus", "$share/g+/a", []error{ErrInvalidShare}},
		{"MQTT-4.8.2-2 share group with hash", "$share/#/a", []error{ErrInvalidShare}},
		{"MQTT-4.8.2-2 share without filter", "$share/g", []error{ErrInvalidShare}},
		{"MQTT-4.8.2-2 share empty filter", "$share/g/", []error{ErrInvalidShare}},
		{"MQTT-4.8.2-2 share invalid filter", "$share/g/a#", []error{ErrInvalidShare, ErrInvalidFilter}},
		{"MQTT-4.8.2-2 share NUL in filter", "$share/g/a\x00", []error{ErrInvalidShare}},
		{"MQTT-4.7.3-2 share NUL in group", "$share/g\x00/a", []error{ErrInvalidShare}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateFilter(tt.filter)
			if tt.want == nil {
				checkErr(t, err, nil)
			}
			for _, w := range tt.want {
				checkErr(t, err, w)
			}
		})
	}
}

func TestParseShare(t *testing.T) {
	tests := []struct {
		name       string
		filter     string
		group      string
		realFilter string
		shared     bool
		want       error
	}{
		{"not shared", "a/b", "", "", false, nil},
		{"not shared sys", "$SYS/#", "", "", false, nil},
		{"not shared without slash", "$share", "", "", false, nil},
		{"not shared other prefix", "$sharex/g/a", "", "", false, nil},
		{"not shared invalid filter is not checked", "a#", "", "", false, nil},
		{"MQTT-4.8.2-1 literal", "$share/grp/a/b", "grp", "a/b", true, nil},
		{"MQTT-4.8.2-1 wildcards", "$share/grp/+/#", "grp", "+/#", true, nil},
		{"MQTT-4.8.2-1 hash", "$share/g/#", "g", "#", true, nil},
		{"MQTT-4.8.2-1 leading empty level", "$share/g//a", "g", "/a", true, nil},
		{"MQTT-4.8.2-1 separator only", "$share/g//", "g", "/", true, nil},
		{"MQTT-4.8.2-2 group without filter", "$share/g", "", "", true, ErrInvalidShare},
		{"MQTT-4.8.2-2 empty filter", "$share/g/", "", "", true, ErrInvalidShare},
		{"MQTT-4.8.2-2 invalid filter", "$share/g/a/#/b", "", "", true, ErrInvalidFilter},
		{"MQTT-4.8.2-1 nothing after prefix", "$share/", "", "", true, ErrInvalidShare},
		{"MQTT-4.8.2-1 empty group", "$share//a", "", "", true, ErrInvalidShare},
		{"MQTT-4.8.2-2 plus in group", "$share/a+b/x", "", "", true, ErrInvalidShare},
		{"MQTT-4.8.2-2 plus group", "$share/+/x", "", "", true, ErrInvalidShare},
		{"MQTT-4.8.2-2 hash in group", "$share/a#/x", "", "", true, ErrInvalidShare},
		{"MQTT-4.7.3-3 too long", "$share/g/" + strings.Repeat("a", MaxLen), "", "", true, ErrInvalidShare},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			group, real, shared, err := ParseShare(tt.filter)
			checkErr(t, err, tt.want)
			if group != tt.group || real != tt.realFilter || shared != tt.shared {
				t.Errorf("ParseShare(%q) = %q, %q, %v; want %q, %q, %v",
					tt.filter, group, real, shared, tt.group, tt.realFilter, tt.shared)
			}
			if tt.shared && err != nil && !errors.Is(err, ErrInvalidShare) {
				t.Errorf("ParseShare(%q) error %v does not wrap ErrInvalidShare", tt.filter, err)
			}
		})
	}
}

// matchTests is shared by TestMatch and the index tests.
var matchTests = []struct {
	name   string
	filter string
	topic  string
	want   bool
}{
	{"literal", "a/b", "a/b", true},
	{"literal differs", "a/b", "a/c", false},
	{"literal is case sensitive", "a/B", "a/b", false},
	{"literal longer name", "a/b", "a/b/c", false},
	{"literal shorter name", "a/b/c", "a/b", false},
	{"literal is not a prefix match", "a", "ab", false},
	{"plus one level", "a/+", "a/b", true},
	{"plus not two levels", "a/+", "a/b/c", false},
	{"plus not zero levels", "a/+", "a", false},
	{"plus empty level", "a/+", "a/", true},
	{"plus middle", "a/+/c", "a/b/c", true},
	{"plus middle empty level", "a/+/c", "a//c", true},
	{"plus plus", "+/+", "a/b", true},
	{"plus plus leading empty level", "+/+", "/finance", true},
	{"slash plus", "/+", "/finance", true},
	{"plus not two levels from root", "+", "/finance", false},
	{"plus alone", "+", "a", true},
	{"MQTT-4.7.1-2 hash alone", "#", "a/b/c", true},
	{"MQTT-4.7.1-2 hash alone single level", "#", "a", true},
	{"MQTT-4.7.1-2 hash alone separator", "#", "/", true},
	{"MQTT-4.7.1-2 hash children", "a/#", "a/b/c", true},
	{"MQTT-4.7.1-2 hash matches parent", "a/#", "a", true},
	{"MQTT-4.7.1-2 hash matches empty child", "a/#", "a/", true},
	{"MQTT-4.7.1-2 hash other branch", "a/#", "b/a", false},
	{"MQTT-4.7.1-2 hash not prefix of level", "a/#", "ab", false},
	{"MQTT-4.7.1-2 spec example parent", "sport/tennis/player1/#", "sport/tennis/player1", true},
	{"MQTT-4.7.1-2 spec example child", "sport/tennis/player1/#", "sport/tennis/player1/ranking", true},
	{"MQTT-4.7.1-2 spec example grandchild", "sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", true},
	{"MQTT-4.7.1-2 sport hash matches sport", "sport/#", "sport", true},
	{"plus hash matches one level", "+/#", "a", true},
	{"plus hash does not match nothing below empty", "a/+/#", "a", false},
	{"plus hash parent", "a/+/#", "a/b", true},
	{"slash hash", "/#", "/", true},
	{"slash hash not without leading slash", "/#", "a", false},
	{"empty levels literal", "a//b", "a//b", true},
	{"empty levels not collapsed", "a//b", "a/b", false},
	{"trailing empty level", "a/", "a/", true},
	{"trailing empty level differs", "a/", "a", false},
	{"MQTT-4.7.2-1 hash does not match $SYS", "#", "$SYS/x", false},
	{"MQTT-4.7.2-1 hash does not match $ alone", "#", "$SYS", false},
	{"MQTT-4.7.2-1 plus first does not match $SYS", "+/x", "$SYS/x", false},
	{"MQTT-4.7.2-1 plus does not match $SYS", "+", "$SYS", false},
	{"MQTT-4.7.2-1 plus hash does not match $SYS", "+/#", "$SYS/x", false},
	{"MQTT-4.7.2-1 spec example monitor", "+/monitor/Clients", "$SYS/monitor/Clients", false},
	{"MQTT-4.7.2-1 sys hash", "$SYS/#", "$SYS/monitor/Clients", true},
	{"MQTT-4.7.2-1 sys hash parent", "$SYS/#", "$SYS", true},
	{"MQTT-4.7.2-1 sys plus", "$SYS/+", "$SYS/x", true},
	{"MQTT-4.7.2-1 sys monitor plus", "$SYS/monitor/+", "$SYS/monitor/Clients", true},
	{"MQTT-4.7.2-1 other dollar topic", "$foo/+/c", "$foo/b/c", true},
	{"MQTT-4.7.2-1 dollar in second level is matched", "+/$x", "a/$x", true},
	{"MQTT-4.7.2-1 wildcard second level after sys", "$SYS/#", "$SYS/a/b", true},
}

func TestMatch(t *testing.T) {
	for _, tt := range matchTests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Match(tt.filter, tt.topic); got != tt.want {
				t.Errorf("Match(%q, %q) = %v, want %v", tt.filter, tt.topic, got, tt.want)
			}
			if got := refMatch(tt.filter, tt.topic); got != tt.want {
				t.Errorf("refMatch(%q, %q) = %v, want %v (the reference is wrong)", tt.filter, tt.topic, got, tt.want)
			}
			if err := ValidateFilter(tt.filter); err != nil {
				t.Errorf("table filter %q is invalid: %v", tt.filter, err)
			}
			if err := ValidateName(tt.topic); err != nil {
				t.Errorf("table topic %q is invalid: %v", tt.topic, err)
			}
		})
	}
}

func TestIsSys(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want bool
	}{
		{"MQTT-4.7.2-1 sys", "$SYS/x", true},
		{"MQTT-4.7.2-1 dollar alone", "$", true},
		{"plain", "a/$SYS", false},
		{"empty", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := IsSys(tt.in); got != tt.want {
				t.Errorf("IsSys(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestHasWildcard(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"a/b", false},
		{"a/+", true},
		{"#", true},
		{"+/b", true},
		{"", false},
		{"$SYS/x", false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := HasWildcard(tt.in); got != tt.want {
				t.Errorf("HasWildcard(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

// TestImportsStdlibOnly keeps the package's import direction honest: topic
// depends on the standard library only.
func TestImportsStdlibOnly(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no Go files found")
	}
	fset := token.NewFileSet()
	for _, name := range files {
		f, err := parser.ParseFile(fset, name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path := strings.Trim(imp.Path.Value, `"`)
			first, _, _ := strings.Cut(path, "/")
			if strings.Contains(first, ".") {
				t.Errorf("%s imports %s, not in the standard library", name, path)
			}
		}
	}
}

func checkErr(t *testing.T, got, want error) {
	t.Helper()
	switch {
	case want == nil && got != nil:
		t.Errorf("unexpected error %v", got)
	case want != nil && !errors.Is(got, want):
		t.Errorf("error = %v, want %v", got, want)
	}
}

// refMatch is a deliberately simple reference for Match: split both strings
// into levels and compare them one by one.
func refMatch(filter, name string) bool {
	f := strings.Split(filter, "/")
	n := strings.Split(name, "/")
	if strings.HasPrefix(name, "$") && (f[0] == "+" || f[0] == "#") {
		return false
	}
	for i, fl := range f {
		if fl == "#" && i == len(f)-1 {
			return true
		}
		if i >= len(n) || (fl != "+" && fl != n[i]) {
			return false
		}
	}
	return len(f) == len(n)
}

func refBasicValid(s string) bool {
	return s != "" && len(s) <= MaxLen && !strings.Contains(s, "\x00") && utf8.ValidString(s)
}

func refValidName(s string) bool {
	return refBasicValid(s) && !strings.ContainsAny(s, "+#")
}

func refValidPlainFilter(s string) bool {
	if !refBasicValid(s) {
		return false
	}
	levels := strings.Split(s, "/")
	for i, l := range levels {
		if strings.Contains(l, "#") && (l != "#" || i != len(levels)-1) {
			return false
		}
		if strings.Contains(l, "+") && l != "+" {
			return false
		}
	}
	return true
}

func refValidFilter(s string) bool {
	rest, ok := strings.CutPrefix(s, "$share/")
	if !ok {
		return refValidPlainFilter(s)
	}
	parts := strings.SplitN(rest, "/", 2)
	return refBasicValid(s) && len(parts) == 2 && parts[0] != "" &&
		!strings.ContainsAny(parts[0], "+#") && refValidPlainFilter(parts[1])
}

func FuzzValidateFilter(f *testing.F) {
	for _, tt := range matchTests {
		f.Add(tt.filter)
		f.Add(tt.topic)
	}
	for _, s := range []string{"", "a#", "#/", "+a", "$share/g/a", "$share//a", "$share/g", "$share/g+/a", "a\x00", "\xff/+"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := ValidateFilter(s)
		if want := refValidFilter(s); (err == nil) != want {
			t.Fatalf("ValidateFilter(%q) = %v, reference says valid=%v", s, err, want)
		}
		if err != nil && !errors.Is(err, ErrInvalidFilter) && !errors.Is(err, ErrInvalidShare) {
			t.Fatalf("ValidateFilter(%q) = %v, which wraps no sentinel", s, err)
		}
		group, real, shared, perr := ParseShare(s)
		if shared != strings.HasPrefix(s, "$share/") {
			t.Fatalf("ParseShare(%q) shared = %v", s, shared)
		}
		if shared && (perr == nil) != (err == nil) {
			t.Fatalf("ParseShare(%q) = %v but ValidateFilter = %v", s, perr, err)
		}
		if shared && perr == nil && "$share/"+group+"/"+real != s {
			t.Fatalf("ParseShare(%q) = %q, %q does not rebuild the filter", s, group, real)
		}
		nerr := ValidateName(s)
		if want := refValidName(s); (nerr == nil) != want {
			t.Fatalf("ValidateName(%q) = %v, reference says valid=%v", s, nerr, want)
		}
		if nerr == nil && err != nil && !shared {
			t.Fatalf("%q is a valid name but not a valid filter: %v", s, err)
		}
	})
}

func FuzzMatch(f *testing.F) {
	for _, tt := range matchTests {
		f.Add(tt.filter, tt.topic)
	}
	f.Add("", "")
	f.Add("#", "")
	f.Add("a/#/b", "a/#/b")
	f.Fuzz(func(t *testing.T, filter, name string) {
		got := Match(filter, name)
		if want := refMatch(filter, name); got != want {
			t.Fatalf("Match(%q, %q) = %v, reference %v", filter, name, got, want)
		}
		if ValidateName(name) == nil && !HasWildcard(filter) && got != (filter == name) {
			t.Fatalf("Match(%q, %q) = %v for a filter without wildcards", filter, name, got)
		}
	})
}

func BenchmarkMatch(b *testing.B) {
	benches := []struct{ filter, name string }{
		{"devices/+/cmd", "devices/12345/cmd"},
		{"site/+/floor/+/#", "site/3/floor/2/temp/raw"},
		{"#", "a/b/c/d/e"},
	}
	for _, bb := range benches {
		b.Run(bb.filter, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if !Match(bb.filter, bb.name) {
					b.Fatal("no match")
				}
			}
		})
	}
}

func BenchmarkValidateName(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if err := ValidateName("site/3/floor/2/temperature"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkValidateFilter(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if err := ValidateFilter("$share/group/site/+/floor/+/#"); err != nil {
			b.Fatal(err)
		}
	}
}
