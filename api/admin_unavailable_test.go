package api

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/plugin/plugintest"
)

// unavailableStore fails the reads the admin API makes as a store that
// cannot reach Redis does; Get fails as a bug would.
type unavailableStore struct{ *plugintest.Store }

var errDown = fmt.Errorf("store: read: dial tcp 127.0.0.1:6379: connect: connection refused: %w", plugin.ErrStoreUnavailable)

func (unavailableStore) UserSettings(context.Context, plugin.AOR) (plugin.UserSettings, error) {
	return plugin.UserSettings{}, errDown
}
func (unavailableStore) Version(context.Context, plugin.AOR) (string, error) { return "", errDown }
func (unavailableStore) List(context.Context, plugin.AOR, plugin.ListQuery) (plugin.Page, error) {
	return plugin.Page{}, errDown
}
func (unavailableStore) Totals(context.Context) (plugin.Totals, error) {
	return plugin.Totals{}, errDown
}
func (unavailableStore) Get(context.Context, plugin.AOR, string) (*plugin.Message, error) {
	return nil, errors.New("decode message: unexpected end of record")
}

// TestAdminStoreUnavailable: a store that cannot be reached is 503
// unavailable with Retry-After (it was a 500 internal, like a bug), and
// the answer does not name the store's address; an error nobody expected
// is still 500 internal.
func TestAdminStoreUnavailable(t *testing.T) {
	var addr string
	startHooksWith(t, &hookEngine{policy: plugin.DefaultPolicy()}, func(c *Config) {
		addr, c.Store = c.AdminListener.Addr().String(), unavailableStore{c.Store.(*plugintest.Store)}
	})
	for _, path := range []string{"/v1/users/sip:bob@example.com/settings", "/v1/users/sip:bob@example.com/messages", "/v1/stats"} {
		got := adminRaw(t, addr, "GET", path, "", "")
		if got.status != 503 || got.code != "unavailable" || got.header.Get("Retry-After") != "1" || strings.Contains(string(got.body), "6379") {
			t.Errorf("GET %s: %d %s, Retry-After %q; want 503 unavailable, Retry-After 1, no address", path, got.status, got.body, got.header.Get("Retry-After"))
		}
	}
	if got := adminRaw(t, addr, "GET", "/v1/users/sip:bob@example.com/messages/01J00000000000000000000000", "", ""); got.status != 500 || got.code != "internal" || got.header.Get("Retry-After") != "" {
		t.Errorf("GET of a message the store cannot decode: %d %s, want 500 internal", got.status, got.body)
	}
}

// stalledStore never answers the reads the admin API makes: they return
// when their context ends.
type stalledStore struct{ *plugintest.Store }

func (stalledStore) UserSettings(ctx context.Context, _ plugin.AOR) (plugin.UserSettings, error) {
	<-ctx.Done()
	return plugin.UserSettings{}, ctx.Err()
}

func (stalledStore) Totals(ctx context.Context) (plugin.Totals, error) {
	<-ctx.Done()
	return plugin.Totals{}, ctx.Err()
}

// TestAdminDeadline: an admin request whose store does not answer is
// answered 503 unavailable at adminTimeout, under /v1/users/ and
// elsewhere; it used to wait as long as the store did.
func TestAdminDeadline(t *testing.T) {
	var addr string
	startHooksWith(t, &hookEngine{policy: plugin.DefaultPolicy()}, func(c *Config) {
		addr, c.Store = c.AdminListener.Addr().String(), stalledStore{c.Store.(*plugintest.Store)}
	})
	for _, path := range []string{"/v1/users/sip:bob@example.com/settings", "/v1/stats"} {
		start := time.Now()
		got := adminRaw(t, addr, "GET", path, "", "")
		took := time.Since(start)
		if got.status != 503 || got.code != "unavailable" || got.header.Get("Retry-After") != "1" {
			t.Errorf("GET %s: %d %s, want 503 unavailable with Retry-After", path, got.status, got.body)
		}
		if took < adminTimeout-100*time.Millisecond || took > adminTimeout+time.Second {
			t.Errorf("GET %s answered after %v, want about %v", path, took, adminTimeout)
		}
	}
}
