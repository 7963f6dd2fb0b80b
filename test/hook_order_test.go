package test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/deferpush/deferpush/adapters/hookjson"
	"github.com/deferpush/deferpush/adapters/imclient"
	"github.com/deferpush/deferpush/plugin"
)

// TestKamailioHookOrder and TestOpenSIPSHookOrder: the shipped scripts
// put the proxy's time of each registration event in the hook bodies
// ("at"), and deferpush orders one contact's events by it. The proxies
// post from several workers, and forcing two posts out of order is not
// reliable; so the flow captures the bodies the live proxy posted and
// posts them again afterwards, late, as a slow worker would.
func TestKamailioHookOrder(t *testing.T) { flowHookOrder(t, kamailioStarter) }

func TestOpenSIPSHookOrder(t *testing.T) { flowHookOrder(t, opensipsStarter) }

func flowHookOrder(t *testing.T, start func(*testing.T, stackOptions) *dpStack) {
	regs, unregs := make(chan string, 8), make(chan string, 8)
	s := start(t, stackOptions{hooks: func(dp string) string {
		return hookTap(t, "/registered", regs)(hookTap(t, "/unregistered", unregs)(dp))
	}})
	proxy := strings.ToLower(s.proxy)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	aor := plugin.MustParseAOR("sip:user4@" + domain)
	c := s.client(t, "user4", imclient.Config{})
	registered := func() bool { _, err := s.st.Contact(ctx, aor); return err == nil }
	forgotten := func() bool { _, err := s.st.Contact(ctx, aor); return errors.Is(err, plugin.ErrNotFound) }

	s.register(t, c)
	reg, regAt := hookAt(t, regs, "registered")
	if d := time.Since(regAt); d < -5*time.Second || d > 30*time.Second {
		t.Errorf("registered hook's at %v is %v from now: not the REGISTER's time", regAt, d)
	}
	waitFor(t, 10*time.Second, "the registration recorded", registered)
	if code, err := c.Register(ctx, 0); err != nil || code != 200 {
		t.Fatalf("unREGISTER: %d %v", code, err)
	}
	unreg, unregAt := hookAt(t, unregs, "unregistered")
	if !unregAt.After(regAt) {
		t.Fatalf("unregistered hook's at %v is not after the registered hook's %v", unregAt, regAt)
	}
	waitFor(t, 10*time.Second, "the contact forgotten", forgotten)

	// The registration posted again, after the unregistration: ignored.
	postLate(t, s, proxy, "registered", reg)
	if !forgotten() {
		t.Errorf("a registration posted after the newer unregistration recorded the contact again")
	}

	// A new registration, then the old unregistration posted again: the
	// contact stays.
	s.register(t, c)
	_, reg2At := hookAt(t, regs, "registered (again)")
	if !reg2At.After(unregAt) {
		t.Fatalf("second registered hook's at %v is not after the unregistration's %v", reg2At, unregAt)
	}
	waitFor(t, 10*time.Second, "the new registration recorded", registered)
	postLate(t, s, proxy, "unregistered", unreg)
	if !registered() {
		t.Errorf("an unregistration posted after the newer registration forgot the contact")
	}
}

// hookAt returns the next body from bodies and its "at".
func hookAt(t *testing.T, bodies <-chan string, what string) (string, time.Time) {
	t.Helper()
	select {
	case body := <-bodies:
		var v struct{ At hookjson.At }
		if err := json.Unmarshal([]byte(body), &v); err != nil || !v.At.Set {
			t.Fatalf("%s hook body %s: no at (%v)", what, body, err)
		}
		return body, v.At.T
	case <-time.After(20 * time.Second):
		t.Fatalf("no %s hook within 20 s", what)
	}
	return "", time.Time{}
}

// postLate posts body to deferpush's hook as the proxy did, and wants
// the hook's usual answer.
func postLate(t *testing.T, s *dpStack, proxy, hook, body string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "http://"+s.dp.HooksAddr+"/hooks/"+proxy+"/"+hook, bytes.NewReader([]byte(body)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Deferpush-Token", s.token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var got struct{ Status string }
	if err := json.NewDecoder(res.Body).Decode(&got); err != nil || res.StatusCode != 200 || got.Status != hook {
		t.Errorf("late %s hook: %d %+v %v, want 200 %s", hook, res.StatusCode, got, err, hook)
	}
}
