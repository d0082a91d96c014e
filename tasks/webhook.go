package tasks

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
)

// Webhook delivery: the task type, its queue, its payload and the rule on
// which addresses a delivery may reach.
const (
	TypeWebhook  = "webhook:deliver"
	WebhookQueue = "webhooks"

	// Webhook delivery states, in WebhookState.Status.
	WebhookPending   = "pending"
	WebhookDelivered = "delivered"
	WebhookFailed    = "failed"

	// webhookMaxRetry bounds asynq's retries of a delivery; the worker's
	// schedule decides when it really stops.
	webhookMaxRetry = 50
)

// WebhookEvent is the body of a completion webhook.
type WebhookEvent struct {
	Type      string    `json:"type"` // call.succeeded | call.failed | call.canceled
	Timestamp time.Time `json:"timestamp"`
	Data      *Record   `json:"data"`
}

// WebhookPayload is the asynq payload of a delivery. The body is built once,
// when the call finishes, so every redelivery sends the same bytes under the
// same webhook-id.
type WebhookPayload struct {
	Tenant        string          `json:"tenant"`
	CorrelationID string          `json:"correlation_id"`
	EventID       string          `json:"event_id"`
	URL           string          `json:"url"`
	Body          json.RawMessage `json:"body"`
}

// WebhookEventID is the webhook-id of a call's completion event: the same
// for every delivery of that event, different for a later call that reuses
// the correlation ID after the first expired.
func WebhookEventID(rec *Record) string {
	sum := sha256.Sum256([]byte(rec.Tenant + "\x00" + rec.CorrelationID + "\x00" + rec.CreatedAt.Format(time.RFC3339Nano)))
	return "msg_" + hex.EncodeToString(sum[:12])
}

// NewWebhookTask builds the delivery task of a finished call's webhook. The
// first delivery has a task ID derived from the call, so enqueueing it twice
// (a worker retrying after a crash) queues it once; a redelivery gets a
// fresh one.
func NewWebhookTask(rec *Record, redelivery bool) (*asynq.Task, error) {
	if rec.Webhook == nil || !rec.Status.Terminal() {
		return nil, fmt.Errorf("call %q has no webhook to deliver or has not finished", rec.CorrelationID)
	}
	data := *rec
	data.Webhook = &WebhookState{URL: rec.Webhook.URL, Status: WebhookPending}
	at := time.Now().UTC()
	if rec.CompletedAt != nil {
		at = *rec.CompletedAt
	}
	body, err := json.Marshal(WebhookEvent{Type: "call." + string(rec.Status), Timestamp: at, Data: &data})
	if err != nil {
		return nil, err
	}
	p, err := json.Marshal(WebhookPayload{Tenant: rec.Tenant, CorrelationID: rec.CorrelationID,
		EventID: WebhookEventID(rec), URL: rec.Webhook.URL, Body: body})
	if err != nil {
		return nil, err
	}
	id := "webhook:" + TaskID(rec.Tenant, rec.CorrelationID)
	if redelivery {
		id += ":" + uuid.NewString()
	}
	return asynq.NewTask(TypeWebhook, p, asynq.TaskID(id), asynq.Queue(WebhookQueue),
		asynq.MaxRetry(webhookMaxRetry), asynq.Timeout(time.Minute)), nil
}

// DecodeWebhookPayload reads a delivery task's payload.
func DecodeWebhookPayload(b []byte) (*WebhookPayload, error) {
	var p WebhookPayload
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("decode webhook payload: %w", err)
	}
	return &p, nil
}

// Address ranges a webhook may not reach unless private deliveries are
// allowed: besides what netip classifies (loopback, RFC 1918 and fc00::/7,
// link-local including 169.254.169.254, unspecified, multicast), the
// shared, reserved and benchmarking ranges, and NAT64 or 6to4 wrappings of
// any of them.
var forbiddenPrefixes = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("240.0.0.0/4"),
}

var (
	nat64     = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour = netip.MustParsePrefix("2002::/16")
)

// CheckWebhookAddr refuses an address a webhook delivery must not reach.
func CheckWebhookAddr(ip netip.Addr) error {
	ip = ip.Unmap()
	if ip.Is6() && nat64.Contains(ip) {
		b := ip.As16()
		return CheckWebhookAddr(netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]}))
	}
	if ip.Is6() && sixToFour.Contains(ip) {
		b := ip.As16()
		return CheckWebhookAddr(netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]}))
	}
	var what string
	switch {
	case !ip.IsValid():
		what = "not an IP address"
	case ip.IsLoopback():
		what = "loopback"
	case ip.IsPrivate():
		what = "private"
	case ip.IsLinkLocalUnicast(), ip.IsLinkLocalMulticast():
		what = "link-local"
	case ip.IsUnspecified():
		what = "unspecified"
	case ip.IsMulticast(), ip.IsInterfaceLocalMulticast():
		what = "multicast"
	}
	for _, p := range forbiddenPrefixes {
		if what == "" && p.Contains(ip) {
			what = "reserved (" + p.String() + ")"
		}
	}
	if what != "" {
		return fmt.Errorf("webhook address %s is %s; set CALLQ_WEBHOOK_ALLOW_PRIVATE=true to allow it", ip, what)
	}
	return nil
}
