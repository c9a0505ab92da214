package client

import "testing"

func TestMatchFilter(t *testing.T) {
	cases := []struct {
		filter, topic string
		want          bool
	}{
		{"a/b", "a/b", true},
		{"a/b", "a/c", false},
		{"a/+", "a/b", true},
		{"a/+", "a/b/c", false},
		{"a/+/c", "a/b/c", true},
		{"+", "a", true},
		{"+", "a/b", false},
		{"+/+", "/a", true},
		{"a/#", "a", true}, // [MQTT-4.7.1-2] '#' also matches the parent level
		{"a/#", "a/b/c", true},
		{"a/#", "ab", false},
		{"#", "a/b", true},
		{"#", "$SYS/x", false},   // [MQTT-4.7.2-1]
		{"+/x", "$SYS/x", false}, // [MQTT-4.7.2-1]
		{"$SYS/#", "$SYS/x", true},
		{"$share/g/a/+", "a/b", true},
		{"$share/g/a/+", "b/b", false},
		{"a/b/", "a/b/", true},
		{"a/b", "a/b/", false},
	}
	for _, tc := range cases {
		t.Run(tc.filter+" "+tc.topic, func(t *testing.T) {
			if got := matchFilter(tc.filter, tc.topic); got != tc.want {
				t.Fatalf("matchFilter(%q, %q) = %v", tc.filter, tc.topic, got)
			}
		})
	}
}

func TestValidFilter(t *testing.T) {
	cases := []struct {
		filter string
		want   bool
	}{
		{"a/b", true},
		{"#", true},
		{"a/#", true},
		{"+/a/+", true},
		{"", false},      // [MQTT-4.7.3-1]
		{"a/#/b", false}, // [MQTT-4.7.1-1]
		{"a#", false},    // [MQTT-4.7.1-1]
		{"a+/b", false},  // [MQTT-4.7.1-2]
		{"a/\xff", false},
	}
	for _, tc := range cases {
		t.Run(tc.filter, func(t *testing.T) {
			if got := validFilter(tc.filter); got != tc.want {
				t.Fatalf("validFilter(%q) = %v", tc.filter, got)
			}
		})
	}
}
