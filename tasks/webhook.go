package tasks

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"time"

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
	// NoRecord is set for an event that is not a call's (a connect
	// session's): its deliveries write no record's webhook block.
	NoRecord bool `json:"no_record,omitempty"`
	// Trace is the call's trace context (Record.Trace): a delivery's span
	// is its child.
	Trace *TraceContext `json:"trace,omitempty"`
}

// NewEventWebhookTask builds the delivery task of an event that is not a
// call's completion: a connect session's credential.connected or
// credential.failed. subject names what the event is about (a session id);
// the webhook-id and the task ID derive from it and eventType, so queueing
// the same event twice queues one delivery. It answers the task and its ID.
func NewEventWebhookTask(tenant, subject, url, eventType string, at time.Time, data any) (*asynq.Task, string, error) {
	d, err := json.Marshal(data)
	if err != nil {
		return nil, "", err
	}
	body, err := json.Marshal(struct {
		Type      string          `json:"type"`
		Timestamp time.Time       `json:"timestamp"`
		Data      json.RawMessage `json:"data"`
	}{eventType, at.UTC(), d})
	if err != nil {
		return nil, "", err
	}
	sum := sha256.Sum256([]byte(tenant + "\x00" + subject + "\x00" + eventType))
	eventID := "msg_" + hex.EncodeToString(sum[:12])
	p, err := json.Marshal(WebhookPayload{Tenant: tenant, CorrelationID: subject, EventID: eventID, URL: url, Body: body, NoRecord: true})
	if err != nil {
		return nil, "", err
	}
	id := "webhook-event:" + eventID
	return asynq.NewTask(TypeWebhook, p, asynq.TaskID(id), asynq.Queue(WebhookQueue),
		asynq.MaxRetry(webhookMaxRetry), asynq.Timeout(time.Minute)), id, nil
}

// WebhookEventID is the webhook-id of a call's completion event: the same
// for every delivery of that event, different for a later call that reuses
// the correlation ID after the first expired.
func WebhookEventID(rec *Record) string {
	sum := sha256.Sum256([]byte(rec.Tenant + "\x00" + rec.CorrelationID + "\x00" + rec.CreatedAt.Format(time.RFC3339Nano)))
	return "msg_" + hex.EncodeToString(sum[:12])
}

// WebhookTaskID is the asynq task ID of the first delivery of a call's
// webhook, or of its redelivery. Both are derived from the call, and asynq
// refuses a second task under an ID while the first is queued, scheduled,
// running or retrying: a worker queueing the first delivery again after a
// crash queues nothing, and at most one redelivery is pending at a time.
func WebhookTaskID(rec *Record, redelivery bool) string {
	if redelivery {
		return "webhook-redelivery:" + TaskID(rec.Tenant, rec.CorrelationID) + ":" + WebhookEventID(rec)
	}
	return "webhook:" + TaskID(rec.Tenant, rec.CorrelationID)
}

// NewWebhookTask builds the delivery task of a finished call's webhook,
// under WebhookTaskID.
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
		EventID: WebhookEventID(rec), URL: rec.Webhook.URL, Body: body, Trace: rec.Trace})
	if err != nil {
		return nil, err
	}
	return asynq.NewTask(TypeWebhook, p, asynq.TaskID(WebhookTaskID(rec, redelivery)), asynq.Queue(WebhookQueue),
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
// allowed, besides what netip classifies (loopback, RFC 1918 and fc00::/7,
// link-local including 169.254.169.254, unspecified, multicast): the
// shared, reserved and benchmarking ranges.
var forbiddenPrefixes = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("240.0.0.0/4"),
	netip.MustParsePrefix("fec0::/10"), // site-local: deprecated, still routed where in use
}

// IPv6 forms that carry an IPv4 address (RFC 4291, 2765, 6052, 3056), so a
// delivery to one may land on that IPv4 address: each is judged by the
// address it carries, at offset in the 16 bytes.
var ipv4Carriers = []struct {
	prefix netip.Prefix
	form   string
	offset int
}{
	{netip.MustParsePrefix("::/96"), "IPv4-compatible address", 12},
	{netip.MustParsePrefix("::ffff:0:0:0/96"), "SIIT IPv4-translated address", 12},
	{netip.MustParsePrefix("64:ff9b::/96"), "NAT64 address", 12},
	{netip.MustParsePrefix("2002::/16"), "6to4 address", 2},
}

var (
	// nat64Local is for NAT64 inside one network (RFC 8215): not globally
	// reachable, and its operator chooses how the IPv4 address is placed
	// (anywhere from /48 to /96), so it is refused whatever it carries.
	nat64Local = netip.MustParsePrefix("64:ff9b:1::/48")
	// teredo tunnels to an IPv4 client through a relay (RFC 4380). No
	// receiver needs it, and where it lands is the relay's and the
	// client's business: it is refused whatever it carries.
	teredo = netip.MustParsePrefix("2001::/32")
)

// CheckWebhookAddr refuses an address a webhook delivery must not reach.
func CheckWebhookAddr(ip netip.Addr) error {
	// A zone ("%eth0") makes netip.Prefix.Contains false for every prefix,
	// while the kernel ignores it outside link-local addresses: judge the
	// address without it.
	ip = ip.WithZone("").Unmap()
	if what := classifyAddr(ip); what != "" {
		return fmt.Errorf("webhook address %s is %s; set CALLQ_WEBHOOK_ALLOW_PRIVATE=true to allow it", ip, what)
	}
	return nil
}

// classifyAddr says what makes ip unfit for a webhook, or "" if nothing.
func classifyAddr(ip netip.Addr) string {
	switch {
	case !ip.IsValid():
		return "not an IP address"
	case ip.IsLoopback():
		return "loopback"
	case ip.IsPrivate():
		return "private"
	case ip.IsLinkLocalUnicast(), ip.IsLinkLocalMulticast():
		return "link-local"
	case ip.IsUnspecified():
		return "unspecified"
	case ip.IsMulticast(), ip.IsInterfaceLocalMulticast():
		return "multicast"
	}
	for _, p := range forbiddenPrefixes {
		if p.Contains(ip) {
			return "reserved (" + p.String() + ")"
		}
	}
	if !ip.Is6() {
		return ""
	}
	b := ip.As16()
	switch {
	case nat64Local.Contains(ip):
		return "local-use NAT64 (64:ff9b:1::/48), which is not globally reachable"
	case teredo.Contains(ip):
		client := netip.AddrFrom4([4]byte{^b[12], ^b[13], ^b[14], ^b[15]})
		return fmt.Sprintf("a Teredo (2001::/32) tunnel to %s, refused whatever it carries", client)
	}
	for _, c := range ipv4Carriers {
		if !c.prefix.Contains(ip) {
			continue
		}
		v4 := netip.AddrFrom4([4]byte(b[c.offset : c.offset+4]))
		if what := classifyAddr(v4); what != "" {
			return fmt.Sprintf("the %s of %s, which is %s", c.form, v4, what)
		}
	}
	return ""
}
