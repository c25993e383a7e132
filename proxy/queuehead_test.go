package proxy

import "testing"

func TestMaskNumber(t *testing.T) {
	for in, want := range map[string]string{
		"13800138000":   "138****8000",
		"8613800138000": "861******8000",
		"10086123":      "*****123",
		"4791234567":    "*******567",
		"1008612":       "*****12",
		"12":            "**",
		"":              "",
	} {
		if got := maskNumber(in); got != want {
			t.Errorf("maskNumber(%q) = %q, want %q", in, got, want)
		}
	}
}
