package ingress

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/deferpush/deferpush/plugin"
)

const testSecret = "s3cret-token"

// withSecret is sent (the relayed MESSAGE) with the secret headers given
// added after its CSeq.
func withSecret(lines ...string) string {
	add := ""
	for _, l := range lines {
		add += l + "\r\n"
	}
	return strings.Replace(relayed, "CSeq: 7 MESSAGE\r\n", "CSeq: 7 MESSAGE\r\n"+add, 1)
}

// TestIngressSecretRemoved: the secret header is taken and removed in any
// case of its name (RFC 3261 §7.3.1), so what is stored never carries it,
// on the MESSAGE and the session INVITE paths alike (both go through
// admit); one secret header exactly is taken, and more than one is
// refused whatever their values.
func TestIngressSecretRemoved(t *testing.T) {
	tests := []struct {
		name    string
		secrets []string
		want    int // 202, or the refusal
	}{
		{"canonical case", []string{"X-Deferpush-Secret: " + testSecret}, 202},
		{"lower case", []string{"x-deferpush-secret: " + testSecret}, 202},
		{"upper case", []string{"X-DEFERPUSH-SECRET: " + testSecret}, 202},
		{"missing", nil, 403},
		{"wrong", []string{"x-deferpush-secret: guess"}, 403},
		{"wrong then right", []string{"X-Deferpush-Secret: guess", "x-deferpush-secret: " + testSecret}, 403},
		{"right then wrong", []string{"x-deferpush-secret: " + testSecret, "X-Deferpush-Secret: guess"}, 403},
		{"right twice", []string{"X-Deferpush-Secret: " + testSecret, "x-Deferpush-secret: " + testSecret}, 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := &fakeEngine{}
			in := newTestIngress(t, e)
			in.cfg.Trust = Trust{Secret: testSecret}
			tx := &fakeTx{}
			in.OnMessage(parseRequest(t, withSecret(tt.secrets...)), tx)
			if tx.res == nil || tx.res.StatusCode != tt.want {
				t.Fatalf("response %v, want %d", tx.res, tt.want)
			}
			if tt.want != 202 {
				if len(e.stored) != 0 {
					t.Errorf("stored %d refused messages", len(e.stored))
				}
				return
			}
			if len(e.stored) != 1 {
				t.Fatalf("stored %d, want 1", len(e.stored))
			}
			if raw := e.stored[0].Raw; bytes.Contains(bytes.ToLower(raw), []byte("deferpush-secret")) || bytes.Contains(raw, []byte(testSecret)) {
				t.Errorf("the stored MESSAGE carries the secret:\n%s", raw)
			}
		})
		t.Run(tt.name+" INVITE", func(t *testing.T) {
			invite := strings.NewReplacer("MESSAGE sip:", "INVITE sip:", "CSeq: 7 MESSAGE", "CSeq: 7 INVITE").Replace(withSecret(tt.secrets...))
			req := parseRequest(t, invite)
			_, err := Trust{Secret: testSecret}.admit(req)
			if got := err == nil; got != (tt.want == 202) {
				t.Errorf("admit = %v, want admitted %v", err, tt.want == 202)
			}
			if err != nil && !errors.Is(err, plugin.ErrNotTrusted) {
				t.Errorf("admit = %v, want ErrNotTrusted", err)
			}
			if s := req.String(); strings.Contains(strings.ToLower(s), "deferpush-secret") || strings.Contains(s, testSecret) {
				t.Errorf("the INVITE still carries the secret:\n%s", s)
			}
		})
	}
}
