package routing

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestNormalize(t *testing.T) {
	tests := []struct {
		in, cc, want string
	}{
		{"13812345678", "86", "13812345678"},
		{"+8613812345678", "86", "13812345678"},
		{"008613812345678", "86", "13812345678"},
		{"8613812345678", "86", "13812345678"},
		{"+86 138 1234 5678", "86", "13812345678"},
		{"+86-138-1234-5678", "86", "13812345678"},
		{"(+86) 138.1234.5678", "86", "13812345678"},
		{"+86 (0)138 1234 5678", "86", "13812345678"},
		{"013812345678", "86", "13812345678"},
		{"\t138 1234 5678 ", "86", "13812345678"},
		// 13-digit IoT numbers keep their country code stripped too.
		{"861440123456789", "86", "1440123456789"},
		// A bare 86 before something that is not a mobile number stays:
		// it may be part of a national (landline) number.
		{"86123456", "86", "86123456"},
		{"861381234567", "86", "861381234567"}, // 12 digits: not mobile
		// +86 and 0086 are stripped whatever follows.
		{"+861012345678", "86", "1012345678"},
		{"00861012345678", "86", "1012345678"},
		// Other countries: "+<digits>", which routes to the default.
		{"+44 7911 123456", "86", "+447911123456"},
		{"00447911123456", "86", "+447911123456"},
		{"+852 9123 4567", "86", "+85291234567"},
		// Another local country code: only +cc and 00cc are stripped.
		{"+447911123456", "44", "7911123456"},
		{"00447911123456", "44", "7911123456"},
		{"447911123456", "44", "447911123456"},
		{"", "86", ""},
		{"+", "86", "+"},
		{"00", "86", "00"},
		{"abc", "86", "abc"},
	}
	for _, tt := range tests {
		if got := Normalize(tt.in, tt.cc); got != tt.want {
			t.Errorf("Normalize(%q, %q) = %q, want %q", tt.in, tt.cc, got, tt.want)
		}
		if got := Normalize(tt.want, tt.cc); got != tt.want {
			t.Errorf("Normalize(%q, %q) = %q: not idempotent", tt.want, tt.cc, got)
		}
	}
}

// TestCNPreset lists real segments with their operators, so a wrong table
// entry shows up as a named failure.
func TestCNPreset(t *testing.T) {
	tab, err := New("86", "cn", nil, "")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		segment, carrier string
	}{
		// China Mobile
		{"1340", Mobile}, {"1348", Mobile}, {"135", Mobile}, {"136", Mobile}, {"137", Mobile},
		{"138", Mobile}, {"139", Mobile}, {"147", Mobile}, {"150", Mobile}, {"151", Mobile},
		{"152", Mobile}, {"157", Mobile}, {"158", Mobile}, {"159", Mobile}, {"165", Mobile},
		{"1703", Mobile}, {"1705", Mobile}, {"1706", Mobile}, {"172", Mobile}, {"178", Mobile},
		{"182", Mobile}, {"183", Mobile}, {"184", Mobile}, {"187", Mobile}, {"188", Mobile},
		{"195", Mobile}, {"197", Mobile}, {"198", Mobile},
		{"192", Mobile}, // China Broadnet, over China Mobile's network
		// China Unicom
		{"130", Unicom}, {"131", Unicom}, {"132", Unicom}, {"145", Unicom}, {"155", Unicom},
		{"156", Unicom}, {"166", Unicom}, {"167", Unicom}, {"1704", Unicom}, {"1707", Unicom},
		{"1708", Unicom}, {"1709", Unicom}, {"171", Unicom}, {"175", Unicom}, {"176", Unicom},
		{"185", Unicom}, {"186", Unicom}, {"196", Unicom},
		// China Telecom
		{"133", Telecom}, {"1349", Telecom}, {"149", Telecom}, {"153", Telecom}, {"162", Telecom},
		{"1700", Telecom}, {"1701", Telecom}, {"1702", Telecom}, {"173", Telecom},
		{"17400", Telecom}, {"17405", Telecom}, {"177", Telecom}, {"180", Telecom},
		{"181", Telecom}, {"189", Telecom}, {"190", Telecom}, {"191", Telecom},
		{"193", Telecom}, {"199", Telecom},
		// Not an operator's: the default (here the modem pool).
		{"154", ""}, {"194", ""}, {"1749", ""}, {"17406", ""}, {"140", ""},
	}
	for _, tt := range tests {
		// Pad the segment to an 11-digit number.
		num := tt.segment + strings.Repeat("0", 11-len(tt.segment))
		for _, in := range []string{num, "+86" + num, "0086 " + num, "86" + num} {
			got, norm := tab.Route(in)
			if got != tt.carrier || norm != num {
				t.Errorf("Route(%q) = %q, %q; want %q, %q", in, got, norm, tt.carrier, num)
			}
		}
	}
	// 13-digit IoT numbers.
	for num, want := range map[string]string{
		"1410123456789": Telecom, "1440123456789": Mobile, "1441123456789": Mobile,
		"1460123456789": Unicom, "1480123456789": Mobile,
	} {
		if got, _ := tab.Route("+86" + num); got != want {
			t.Errorf("Route(+86%s) = %q, want %q", num, got, want)
		}
	}
	if got := tab.Carriers(); !slices.Equal(got, []string{Mobile, Telecom, Unicom}) {
		t.Errorf("Carriers() = %v", got)
	}
}

func TestOverridesAndDefault(t *testing.T) {
	tab, err := New("86", "cn", map[string]string{
		"1703":  "unicom",  // replaces a preset entry
		"13800": "special", // more specific than the preset's 138
		"1990":  "",        // carved out to the modem pool
		"12345": "shortcode" /* a block the preset lacks */}, "mobile")
	if err != nil {
		t.Fatal(err)
	}
	for in, want := range map[string]string{
		"17031234567":    "unicom",
		"13800123456":    "special",
		"13810123456":    Mobile,
		"19901234567":    "",
		"19911234567":    Telecom,
		"1234567":        "shortcode",
		"+447911123456":  "mobile", // international: default
		"15412345678":    "mobile", // unallocated: default
		"not-a-number":   "mobile",
		"":               "mobile",
		"138123456789x0": "mobile", // not all digits: default
	} {
		if got, _ := tab.Route(in); got != want {
			t.Errorf("Route(%q) = %q, want %q", in, got, want)
		}
	}
	if got := tab.Carriers(); !slices.Equal(got, []string{"mobile", "shortcode", "special", "telecom", "unicom"}) {
		t.Errorf("Carriers() = %v", got)
	}
}

func TestNoPreset(t *testing.T) {
	tab, err := New("86", "", map[string]string{"138": "a"}, "")
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := tab.Route("13812345678"); got != "a" {
		t.Errorf("138 -> %q", got)
	}
	if got, _ := tab.Route("13912345678"); got != "" {
		t.Errorf("139 -> %q, want modem pool", got)
	}
}

func TestRestrict(t *testing.T) {
	tab, err := New("86", "cn", map[string]string{"1990": "backup"}, "unicom")
	if err != nil {
		t.Fatal(err)
	}
	// A deployment with contracts with China Mobile and "backup" only.
	r := tab.Restrict([]string{"mobile", "backup"})
	for in, want := range map[string]string{
		"13812345678": "mobile",
		"13012345678": "", // unicom not configured; default unicom dropped too
		"19901234567": "backup",
		"19911234567": "",
	} {
		if got, _ := r.Route(in); got != want {
			t.Errorf("restricted Route(%q) = %q, want %q", in, got, want)
		}
	}
	// The original is unchanged.
	if got, _ := tab.Route("13012345678"); got != "unicom" {
		t.Errorf("original table changed: %q", got)
	}
}

// routing.redirect: every number routed to a redirected carrier (by the
// preset, a prefix or the default) goes to its target; the others do not
// move, and a target is not redirected in turn.
func TestRedirect(t *testing.T) {
	tab, err := New("86", "cn", map[string]string{"1990": "backup"}, "unicom")
	if err != nil {
		t.Fatal(err)
	}
	r := tab.Redirect(map[string]string{"unicom": "telecom", "backup": ""})
	for in, want := range map[string]string{
		"13012345678":    "telecom", // the preset's unicom segment
		"+8613012345678": "telecom",
		"19901234567":    "",        // backup's prefix: the modem pool
		"19911234567":    "telecom", // the default, unicom
		"+447700900123":  "telecom", // international: the default
		"13812345678":    "mobile",
		"13312345678":    "telecom",
	} {
		if got, _ := r.Route(in); got != want {
			t.Errorf("redirected Route(%q) = %q, want %q", in, got, want)
		}
	}
	if got := r.Carriers(); !slices.Equal(got, []string{"mobile", "telecom"}) {
		t.Errorf("Carriers() = %v after redirecting unicom and backup", got)
	}
	if got, _ := tab.Route("13012345678"); got != "unicom" {
		t.Errorf("original table changed: %q", got)
	}
	if tab.Redirect(nil) != tab {
		t.Error("an empty redirect made a new table")
	}
	// One step only: telecom's own numbers stay with telecom when telecom
	// is a target, and a carrier sent to one that is redirected too does
	// not follow it (config refuses such chains).
	chain := tab.Redirect(map[string]string{"unicom": "telecom", "telecom": "mobile"})
	if got, _ := chain.Route("13012345678"); got != "telecom" {
		t.Errorf("chained redirect: unicom's number to %q, want telecom (one step)", got)
	}
}

func TestNewErrors(t *testing.T) {
	tests := []struct {
		cc, preset string
		prefixes   map[string]string
		want       error
	}{
		{"86", "us", nil, ErrUnknownPreset},
		{"86", "cn", map[string]string{"13a": "x"}, ErrBadPrefix},
		{"86", "cn", map[string]string{"": "x"}, ErrBadPrefix},
		{"86", "cn", map[string]string{"+44": "x"}, ErrBadPrefix},
		{"", "cn", nil, ErrBadCountryCode},
		{"8x", "cn", nil, ErrBadCountryCode},
	}
	for _, tt := range tests {
		_, err := New(tt.cc, tt.preset, tt.prefixes, "")
		if !errors.Is(err, tt.want) {
			t.Errorf("New(%q, %q, %v) error = %v, want %v", tt.cc, tt.preset, tt.prefixes, err, tt.want)
		}
	}
}

func TestRouteDoesNotAllocate(t *testing.T) {
	tab, err := New("86", "cn", nil, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range []string{"13812345678", "+8613812345678", "8613812345678", "+447911123456"} {
		if n := testing.AllocsPerRun(100, func() { tab.Route(in) }); n != 0 {
			t.Errorf("Route(%q) allocates %v times", in, n)
		}
	}
}

func FuzzRoute(f *testing.F) {
	for _, s := range []string{
		"13812345678", "+86 138 1234 5678", "0086-138-1234-5678", "8613812345678",
		"013812345678", "+447911123456", "00447911123456", "", "+", "00", "0086",
		"+8686861381234567", "00+86", "(((", "1740012345", "1440123456789",
	} {
		f.Add(s)
	}
	tab, err := New("86", "cn", map[string]string{"13800": "special"}, "fallback")
	if err != nil {
		f.Fatal(err)
	}
	allowed := append(tab.Carriers(), "")
	f.Fuzz(func(t *testing.T, dest string) {
		n := Normalize(dest, "86")
		if again := Normalize(n, "86"); again != n {
			t.Fatalf("Normalize not idempotent: %q -> %q -> %q", dest, n, again)
		}
		if strings.ContainsAny(n, " \t-.()") {
			t.Fatalf("Normalize(%q) = %q keeps a separator", dest, n)
		}
		c, norm := tab.Route(dest)
		if norm != n {
			t.Fatalf("Route normalised %q to %q, Normalize to %q", dest, norm, n)
		}
		if !slices.Contains(allowed, c) {
			t.Fatalf("Route(%q) = %q, not a table carrier", dest, c)
		}
		if c2, _ := tab.Route(n); c2 != c {
			t.Fatalf("Route(%q) = %q but Route(%q) = %q", dest, c, n, c2)
		}
		if strings.HasPrefix(n, "+") && c != "fallback" {
			t.Fatalf("international %q routed to %q, want the default", n, c)
		}
	})
}

func BenchmarkRoute(b *testing.B) {
	tab, err := New("86", "cn", map[string]string{"13800": "special"}, "")
	if err != nil {
		b.Fatal(err)
	}
	nums := []string{"13812345678", "17031234567", "17400123456", "19212345678", "15412345678"}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		tab.Route(nums[i%len(nums)])
	}
}

func BenchmarkRouteFormatted(b *testing.B) {
	tab, err := New("86", "cn", nil, "")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		tab.Route("+86 138-1234-5678")
	}
}

func BenchmarkNormalize(b *testing.B) {
	for _, in := range []string{"13812345678", "+8613812345678", "+86 (138) 1234-5678", "00447911123456"} {
		b.Run(in, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				Normalize(in, "86")
			}
		})
	}
}
