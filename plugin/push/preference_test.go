package push

import (
	"testing"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/plugin/encap"
)

// TestPreference checks that every policy encapsulation maps to the
// encap preference of the same name.
func TestPreference(t *testing.T) {
	tests := []struct {
		in   plugin.Encapsulation
		want encap.Preference
	}{
		{plugin.EncapAuto, encap.PreferAuto},
		{plugin.EncapSIP, encap.PreferSIP},
		{plugin.EncapSIPFrag, encap.PreferSIPFrag},
		{plugin.EncapCPIM, encap.PreferCPIM},
		{plugin.EncapMSRP, encap.PreferMSRP},
		{plugin.EncapMultipart, encap.PreferMultipart},
	}
	for _, tt := range tests {
		t.Run(string(tt.in), func(t *testing.T) {
			p := plugin.DefaultPolicy()
			p.Encapsulation = tt.in
			if err := p.Validate(); err != nil {
				t.Fatalf("%q is no policy value: %v", tt.in, err)
			}
			if got := preference(tt.in); got != tt.want {
				t.Errorf("preference(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}
