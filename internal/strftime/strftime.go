// Package strftime formats times with C strftime conversions in the C
// locale, as Mosquitto's tools and log timestamps do.
package strftime

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

var (
	shortDays   = []string{"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"}
	longDays    = []string{"Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"}
	shortMonths = []string{"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"}
	longMonths  = []string{"January", "February", "March", "April", "May", "June", "July", "August",
		"September", "October", "November", "December"}
)

// Conv formats one conversion character c as C strftime does in the C
// locale; an unknown conversion comes out as written ("%c").
func Conv(c byte, t time.Time) string {
	two := func(n int) string { return fmt.Sprintf("%02d", n) }
	hour12 := t.Hour() % 12
	if hour12 == 0 {
		hour12 = 12
	}
	switch c {
	case 'a':
		return shortDays[t.Weekday()]
	case 'A':
		return longDays[t.Weekday()]
	case 'b', 'h':
		return shortMonths[t.Month()-1]
	case 'B':
		return longMonths[t.Month()-1]
	case 'c':
		return t.Format("Mon Jan  2 15:04:05 2006")
	case 'C':
		return two(t.Year() / 100)
	case 'd':
		return two(t.Day())
	case 'D':
		return t.Format("01/02/06")
	case 'e':
		return fmt.Sprintf("%2d", t.Day())
	case 'F':
		return t.Format("2006-01-02")
	case 'g':
		y, _ := t.ISOWeek()
		return two(y % 100)
	case 'G':
		y, _ := t.ISOWeek()
		return strconv.Itoa(y)
	case 'H':
		return two(t.Hour())
	case 'I':
		return two(hour12)
	case 'j':
		return fmt.Sprintf("%03d", t.YearDay())
	case 'k':
		return fmt.Sprintf("%2d", t.Hour())
	case 'l':
		return fmt.Sprintf("%2d", hour12)
	case 'm':
		return two(int(t.Month()))
	case 'M':
		return two(t.Minute())
	case 'n':
		return "\n"
	case 'p':
		if t.Hour() < 12 {
			return "AM"
		}
		return "PM"
	case 'P':
		if t.Hour() < 12 {
			return "am"
		}
		return "pm"
	case 'r':
		return t.Format("03:04:05 PM")
	case 'R':
		return t.Format("15:04")
	case 's':
		return strconv.FormatInt(t.Unix(), 10)
	case 'S':
		return two(t.Second())
	case 't':
		return "\t"
	case 'T':
		return t.Format("15:04:05")
	case 'u':
		wd := int(t.Weekday())
		if wd == 0 {
			wd = 7
		}
		return strconv.Itoa(wd)
	case 'V':
		_, w := t.ISOWeek()
		return two(w)
	case 'w':
		return strconv.Itoa(int(t.Weekday()))
	case 'x':
		return t.Format("01/02/06")
	case 'X':
		return t.Format("15:04:05")
	case 'y':
		return two(t.Year() % 100)
	case 'Y':
		return strconv.Itoa(t.Year())
	case 'z':
		return t.Format("-0700")
	case 'Z':
		return t.Format("MST")
	case '%':
		return "%"
	}
	return "%" + string(c)
}

// Format formats t with a strftime format string ("%Y-%m-%dT%H:%M:%S"); a
// lone '%' at the end is copied as it is.
func Format(format string, t time.Time) string {
	var b strings.Builder
	for i := 0; i < len(format); i++ {
		if format[i] != '%' || i+1 == len(format) {
			b.WriteByte(format[i])
			continue
		}
		i++
		b.WriteString(Conv(format[i], t))
	}
	return b.String()
}
