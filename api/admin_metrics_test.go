package api

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/deferpush/deferpush/plugin"
)

func TestMetricsObservePushes(t *testing.T) {
	m := NewMetrics()
	s := newTestServer(t, m)
	m.PushDone(plugin.PushReport{AOR: plugin.MustParseAOR("sip:a@example.com"), Outcome: "delivered", Delivered: 3, ToFirstSend: 40 * time.Millisecond, Duration: 300 * time.Millisecond})
	m.PushDone(plugin.PushReport{AOR: plugin.MustParseAOR("sip:b@example.com"), Outcome: "failed", Failed: 2, DeadLettered: 1, Duration: time.Second, Pager: true})
	m.Notified(plugin.DispositionStored, nil)
	m.Notified(plugin.DispositionFailed, errors.New("SIP/2.0 404 Not Found"))

	res := perform(s, "GET", "/metrics", testViewerToken, "", nil)
	if res.Code != 200 {
		t.Fatalf("GET /metrics = %d %s", res.Code, res.Body.Bytes())
	}
	body := res.Body.String()
	for _, want := range []string{
		`deferpush_push_sessions_total{mode="msrp",outcome="delivered"} 1`,
		`deferpush_push_sessions_total{mode="pager",outcome="failed"} 1`,
		`deferpush_imdn_notifications_total{result="sent",status="stored"} 1`,
		`deferpush_imdn_notifications_total{result="error",status="failed"} 1`,
		`deferpush_imdn_notifications_total{result="dropped",status="failed"} 0`,
		`deferpush_push_messages_total{result="delivered"} 3`,
		`deferpush_push_messages_total{result="failed"} 2`,
		`deferpush_push_messages_total{result="dead_lettered"} 1`,
		`deferpush_push_duration_seconds_count 2`,
		`deferpush_push_duration_seconds_sum 1.3`,
		`deferpush_registration_to_first_send_seconds_count 1`,
		`deferpush_registration_to_first_send_seconds_bucket{le="0.08"} 1`,
		`deferpush_messages_stored_total 0`,
		`deferpush_queued_messages 0`,
		`deferpush_mailboxes 0`,
		`deferpush_pushes_in_progress `,
		`deferpush_store_up 1`,
		`go_goroutines `,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", body)
	}
}

// TestMetricsSharedByTwoServers: one Metrics may back several Servers
// (the store collector is registered per Server).
func TestMetricsSharedByTwoServers(t *testing.T) {
	m := NewMetrics()
	for range 2 {
		s := newTestServer(t, m)
		if res := perform(s, "GET", "/metrics", testAdminToken, "", nil); res.Code != 200 {
			t.Fatalf("GET /metrics = %d %s", res.Code, res.Body.Bytes())
		}
	}
}
