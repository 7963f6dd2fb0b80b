package encap

import "testing"

func TestAccepted(t *testing.T) {
	tests := []struct {
		ct       string
		patterns []string
		want     bool
	}{
		{"message/sip", []string{"*"}, true},
		{"message/sip", []string{" * "}, true},
		{"message/sip", []string{"message/*"}, true},
		{"message/sip", []string{"MESSAGE/SIP"}, true},
		{"Message/Sip; x=1", []string{"message/sip;y=2"}, true},
		{"message/sip", []string{"message/sipfrag", "text/*"}, false},
		{"message/sip", []string{"message"}, false},
		{"message/sip", []string{"mess*"}, false},
		{"message/sip", []string{"*/*"}, true}, // not RFC 4975's "*", but meant as it
		{"message/sip", nil, false},
		{"", []string{"*"}, false},
		{"text", []string{"*"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.ct+" in "+stringsJoin(tt.patterns), func(t *testing.T) {
			if got := accepted(tt.ct, tt.patterns); got != tt.want {
				t.Errorf("accepted(%q, %q) = %v, want %v", tt.ct, tt.patterns, got, tt.want)
			}
		})
	}
}

func stringsJoin(s []string) string {
	out := ""
	for _, p := range s {
		out += p + ","
	}
	return out
}
