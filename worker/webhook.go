package worker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"syscall"
	"time"

	"github.com/hibiken/asynq"
	"go.opentelemetry.io/otel/trace"

	"github.com/callq/callq/internal/httpurl"
	"github.com/callq/callq/internal/telemetry"
	"github.com/callq/callq/tasks"
)

// Defaults for webhook delivery.
const (
	DefaultWebhookTimeout = 15 * time.Second
	maxWebhookRetryAfter  = 24 * time.Hour
)

// DefaultWebhookSchedule returns waits that space redeliveries over about
// a day, ten deliveries in all, in a slice of the caller's own.
func DefaultWebhookSchedule() []time.Duration {
	return []time.Duration{
		5 * time.Second, 30 * time.Second, 2 * time.Minute, 10 * time.Minute, 30 * time.Minute,
		time.Hour, 3 * time.Hour, 6 * time.Hour, 12 * time.Hour,
	}
}

// addrError is a delivery refused because of the address dialled.
type addrError struct{ err error }

func (e *addrError) Error() string { return e.err.Error() }

// newWebhookClient returns the client deliveries go through. Its dialer
// checks the address it is about to connect to, after DNS resolution, so a
// name that resolves to 127.0.0.1 is refused like 127.0.0.1 itself and a
// rebinding DNS server gains nothing. It uses no proxy (the check would see
// only the proxy) and follows no redirect.
func newWebhookClient(allowPrivate bool) *http.Client {
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	if !allowPrivate {
		dialer.Control = func(network, address string, _ syscall.RawConn) error {
			host, _, err := net.SplitHostPort(address)
			if err != nil {
				return &addrError{err}
			}
			ip, err := netip.ParseAddr(host)
			if err != nil {
				return &addrError{fmt.Errorf("webhook address %q is not an IP address", host)}
			}
			if err := tasks.CheckWebhookAddr(ip); err != nil {
				return &addrError{err}
			}
			return nil
		}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	tr.DialContext = dialer.DialContext
	tr.MaxIdleConnsPerHost = 8
	return &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// enqueueWebhook queues the first delivery of a finished call's webhook on
// q, in the shard of the webhook queue the call's ID hashes to. Its task ID
// is derived from the call, so doing it again after a crash is harmless.
func enqueueWebhook(ctx context.Context, q *asynq.Client, shards *tasks.Sharding, rec *tasks.Record) error {
	if !webhookDue(rec) {
		return nil
	}
	task, err := tasks.NewWebhookTask(rec, false)
	if err != nil {
		return err
	}
	if _, err := q.EnqueueContext(ctx, task, shards.EnqueueOptions(tasks.WebhookQueue, rec.CorrelationID)...); err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
		return fmt.Errorf("enqueue webhook: %w", err)
	}
	return nil
}

// webhookDue says rec's webhook is still to be queued: it has one, and
// no delivery was made or queued for it.
func webhookDue(rec *tasks.Record) bool {
	return rec.Webhook != nil && rec.Webhook.Status == tasks.WebhookPending && rec.Webhook.Attempts == 0
}

// ProcessWebhook is the asynq handler of a delivery: one POST, signed per
// Standard Webhooks, and the outcome written to the record's webhook block.
func (w *Worker) ProcessWebhook(ctx context.Context, t *asynq.Task) error {
	ctx, stop := w.attemptContext(ctx)
	defer stop()
	p, err := tasks.DecodeWebhookPayload(t.Payload())
	if err != nil {
		w.log.Error().Err(err).Msg("dropping a webhook task whose payload cannot be read")
		return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	}
	retried, _ := asynq.GetRetryCount(ctx)
	attempt := retried + 1
	log := w.log.With().Str("correlation_id", p.CorrelationID).Str("tenant", p.Tenant).
		Str("webhook_id", p.EventID).Int("attempt", attempt).Logger()
	state := &tasks.WebhookState{URL: p.URL, Status: tasks.WebhookPending, Attempts: attempt}
	save := func() {
		if p.NoRecord {
			return // an event of no call: its deliveries are in the logs only
		}
		if err := w.cfg.Records.SetWebhook(context.WithoutCancel(ctx), p.Tenant, p.CorrelationID, state); err != nil && !errors.Is(err, tasks.ErrNotFound) {
			log.Error().Err(err).Msg("could not record the webhook's delivery state")
		}
	}
	fail := func(msg string) error {
		state.Status, state.LastError = tasks.WebhookFailed, &msg
		save()
		log.Warn().Str("error", msg).Msg("webhook not delivered; giving up")
		w.cfg.Metrics.webhook(tasks.WebhookFailed)
		return nil
	}
	if w.cfg.WebhookSecrets == nil {
		return fail("no webhook secret is configured (CALLQ_WEBHOOK_SECRET); webhooks cannot be signed")
	}

	if w.traced(p.Trace) {
		var span trace.Span
		ctx, span = w.startDelivery(ctx, p, attempt)
		defer span.End()
	}
	start := time.Now()
	status, retryAfter, derr := w.deliver(ctx, p)
	traceDelivery(ctx, status, derr)
	ev := log.Info().Int("status", status).Int64("duration_ms", time.Since(start).Milliseconds())
	state.LastStatus = status
	var ae *addrError
	switch {
	case derr == nil && status >= 200 && status < 300:
		now := time.Now().UTC()
		state.Status, state.DeliveredAt = tasks.WebhookDelivered, &now
		save()
		ev.Str("outcome", "delivered").Msg("webhook")
		w.cfg.Metrics.webhook(tasks.WebhookDelivered)
		return nil
	case errors.As(derr, &ae):
		return fail(ae.Error())
	case derr == nil && status == http.StatusGone:
		return fail("the receiver answered 410 Gone; not retrying")
	}
	msg := fmt.Sprintf("the receiver answered %d", status)
	if derr != nil {
		msg = derr.Error()
	}
	if attempt > len(w.cfg.WebhookSchedule) {
		return fail(fmt.Sprintf("%s (after %d deliveries)", msg, attempt))
	}
	delay := jitter(w.cfg.WebhookSchedule[attempt-1])
	if retryAfter > 0 {
		delay = min(retryAfter, maxWebhookRetryAfter)
	}
	state.LastError = &msg
	save()
	ev.Str("outcome", "retrying").Str("error", msg).Int64("retry_in_ms", delay.Milliseconds()).Msg("webhook")
	w.cfg.Metrics.webhook("retrying")
	return &retryError{delay: delay, err: errors.New(msg)}
}

// deliver makes one signed POST and answers the status and any Retry-After.
func (w *Worker) deliver(ctx context.Context, p *tasks.WebhookPayload) (int, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.WebhookTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.URL, bytes.NewReader(p.Body))
	if err != nil {
		return 0, 0, &addrError{fmt.Errorf("webhook URL cannot be used: %w", err)}
	}
	if !httpurl.Is(req.URL) {
		return 0, 0, &addrError{errors.New("webhook URL must be http or https")}
	}
	ts := time.Now().Unix()
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", userAgent)
	req.Header.Set("webhook-id", p.EventID)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
	req.Header.Set("webhook-signature", w.cfg.WebhookSecrets.ForTenant(p.Tenant).Sign(p.EventID, ts, p.Body))
	telemetry.Inject(ctx, req.Header)
	resp, err := w.hooks.Do(req)
	if err != nil {
		var ae *addrError
		if errors.As(err, &ae) {
			return 0, 0, ae
		}
		kind := ClassifyError(ctx, err)
		return 0, 0, errors.New(transportMessage(kind, err, w.cfg.WebhookTimeout))
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // let the connection be reused
	var ra time.Duration
	if d, ok := ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
		ra = d
	}
	return resp.StatusCode, ra, nil
}

// jitter spreads d by ±10%, so the receivers of a fleet's failed deliveries
// are not retried in lockstep.
func jitter(d time.Duration) time.Duration {
	return d - d/10 + rand.N(d/5+1)
}
