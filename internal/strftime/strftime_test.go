package strftime

import (
	"testing"
	"time"
)

func TestFormat(t *testing.T) {
	tm := time.Date(2026, time.March, 5, 14, 7, 9, 0, time.UTC)
	cases := []struct{ format, want string }{
		{"%Y-%m-%dT%H:%M:%S", "2026-03-05T14:07:09"},
		{"%a %b %e %j", "Thu Mar  5 064"},
		{"%s", "1772719629"},
		{"100%% %q", "100% %q"},
		{"trailing %", "trailing %"},
		{"%F %T %Z", "2026-03-05 14:07:09 UTC"},
	}
	for _, c := range cases {
		if got := Format(c.format, tm); got != c.want {
			t.Errorf("Format(%q) = %q, want %q", c.format, got, c.want)
		}
	}
}
