package api

import (
	"bytes"
	"context"
	"net/http"
	"time"

	"github.com/cloudwego/hertz/pkg/app"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/deferpush/deferpush/plugin"
)

// Metrics are deferpush's Prometheus metrics, on a registry of their own
// (no global state). Pass one Metrics to the engine as its Observer and to
// the Server (Config.Metrics), which serves it at /metrics together with
// the store's totals, read on each scrape.
type Metrics struct {
	reg         *prometheus.Registry
	sessions    *prometheus.CounterVec
	messages    *prometheus.CounterVec
	duration    prometheus.Histogram
	toFirstSend prometheus.Histogram
	notices     *prometheus.CounterVec
}

var _ plugin.Observer = (*Metrics)(nil)

// NewMetrics returns Metrics with the Go runtime and process collectors.
func NewMetrics() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		sessions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "deferpush_push_sessions_total",
			Help: "Push runs of this instance by outcome (delivered, partial, failed, cancelled) and mode (msrp, pager: SIP MESSAGE).",
		}, []string{"outcome", "mode"}),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "deferpush_push_messages_total",
			Help: "Messages handled by this instance's pushes by result (delivered, failed, dead_lettered).",
		}, []string{"result"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "deferpush_push_duration_seconds",
			Help:    "Duration of a push run, lock to unlock.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 14), // 10 ms .. 82 s
		}),
		toFirstSend: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "deferpush_registration_to_first_send_seconds",
			Help:    "Time from the registration event to the first message handed to the MSRP session.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14), // 5 ms .. 41 s
		}),
		notices: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "deferpush_imdn_notifications_total",
			Help: "Disposition notifications (RFC 5438) this instance sent senders, by status (stored, failed) and result (sent, error, dropped).",
		}, []string{"status", "result"}),
	}
	// Every series exists from the start, so that rates and dashboards
	// show 0 rather than nothing.
	for _, st := range []plugin.Disposition{plugin.DispositionStored, plugin.DispositionFailed} {
		for _, res := range []string{"sent", "error", "dropped"} {
			m.notices.WithLabelValues(string(st), res)
		}
	}
	m.reg.MustRegister(m.sessions, m.messages, m.duration, m.toFirstSend, m.notices,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// PushDone implements plugin.Observer.
func (m *Metrics) PushDone(r plugin.PushReport) {
	mode := "msrp"
	if r.Pager {
		mode = "pager"
	}
	m.sessions.WithLabelValues(string(r.Outcome), mode).Inc()
	m.messages.WithLabelValues("delivered").Add(float64(r.Delivered))
	m.messages.WithLabelValues("failed").Add(float64(r.Failed))
	m.messages.WithLabelValues("dead_lettered").Add(float64(r.DeadLettered))
	m.duration.Observe(r.Duration.Seconds())
	if r.ToFirstSend > 0 {
		m.toFirstSend.Observe(r.ToFirstSend.Seconds())
	}
}

// Notified implements plugin.Observer.
func (m *Metrics) Notified(d plugin.Disposition, err error) {
	result := "sent"
	switch {
	case plugin.NoticeDropped(err):
		result = "dropped"
	case err != nil:
		result = "error"
	}
	m.notices.WithLabelValues(string(d), result).Inc()
}

// handler serves m (a fresh one when m is nil) and the store's totals.
// The totals collector is registered on a registry of this Server's, so
// that one Metrics can be shared.
func (m *Metrics) handler(st plugin.Store, eng Engine) app.HandlerFunc {
	if m == nil {
		m = NewMetrics()
	}
	local := prometheus.NewRegistry()
	local.MustRegister(&storeCollector{store: st, engine: eng})
	h := promhttp.HandlerFor(prometheus.Gatherers{m.reg, local}, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
	return func(ctx context.Context, c *app.RequestContext) {
		// The exposition is small: render it in memory and answer with a
		// Content-Length (hertz's net/http adaptor streams chunks).
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "/metrics", nil)
		for _, k := range []string{"Accept", "Accept-Encoding"} {
			if v := c.Request.Header.Get(k); v != "" {
				req.Header.Set(k, v)
			}
		}
		w := &bufferedResponse{header: http.Header{}, status: http.StatusOK}
		h.ServeHTTP(w, req)
		if enc := w.header.Get("Content-Encoding"); enc != "" {
			c.Response.Header.Set("Content-Encoding", enc)
		}
		c.Data(w.status, w.header.Get("Content-Type"), w.body.Bytes())
	}
}

// bufferedResponse is an http.ResponseWriter that keeps what is written.
type bufferedResponse struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (w *bufferedResponse) Header() http.Header         { return w.header }
func (w *bufferedResponse) Write(b []byte) (int, error) { return w.body.Write(b) }
func (w *bufferedResponse) WriteHeader(status int)      { w.status = status }

// storeCollector reads the store's totals on each scrape. The counters are
// store-wide (every instance reports the same values: aggregate with max,
// not sum); pushes in progress are this instance's.
type storeCollector struct {
	store  plugin.Store
	engine Engine
}

var (
	descUp        = prometheus.NewDesc("deferpush_store_up", "1 if the store answered this scrape's totals query.", nil, nil)
	descStored    = prometheus.NewDesc("deferpush_messages_stored_total", "Messages stored (store-wide).", nil, nil)
	descPushed    = prometheus.NewDesc("deferpush_messages_pushed_total", "Messages pushed and confirmed by the client (store-wide).", nil, nil)
	descFailed    = prometheus.NewDesc("deferpush_messages_failed_total", "Failed push attempts of a message (store-wide).", nil, nil)
	descExpired   = prometheus.NewDesc("deferpush_messages_expired_total", "Messages dropped undelivered on expiry (store-wide).", nil, nil)
	descDead      = prometheus.NewDesc("deferpush_messages_dead_lettered_total", "Messages moved to a dead-letter list (store-wide).", nil, nil)
	descDeleted   = prometheus.NewDesc("deferpush_messages_deleted_total", "Messages deleted by an operator (store-wide).", nil, nil)
	descMailboxes = prometheus.NewDesc("deferpush_mailboxes", "Recipients with stored messages (store-wide).", nil, nil)
	descQueued    = prometheus.NewDesc("deferpush_queued_messages", "Messages held in the store: pending, in flight or dead-lettered (store-wide).", nil, nil)
	descActive    = prometheus.NewDesc("deferpush_pushes_in_progress", "Pushes queued or running on this instance.", nil, nil)
)

func (s *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descUp, descStored, descPushed, descFailed, descExpired, descDead, descDeleted, descMailboxes, descQueued, descActive} {
		ch <- d
	}
}

func (s *storeCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(descActive, prometheus.GaugeValue, float64(s.engine.Active()))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	t, err := s.store.Totals(ctx)
	if err != nil {
		ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, 1)
	for _, c := range []struct {
		d *prometheus.Desc
		v int64
	}{{descStored, t.Stored}, {descPushed, t.Pushed}, {descFailed, t.Failed}, {descExpired, t.Expired}, {descDead, t.DeadLettered}, {descDeleted, t.Deleted}} {
		ch <- prometheus.MustNewConstMetric(c.d, prometheus.CounterValue, float64(c.v))
	}
	ch <- prometheus.MustNewConstMetric(descMailboxes, prometheus.GaugeValue, float64(t.Mailboxes))
	// Every stored message leaves by exactly one of push, expiry or
	// deletion; dead letters stay until one of those.
	ch <- prometheus.MustNewConstMetric(descQueued, prometheus.GaugeValue, float64(max(t.Stored-t.Pushed-t.Expired-t.Deleted, 0)))
}
