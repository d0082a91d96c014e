package producer

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/callq/callq/auth"
	"github.com/callq/callq/tasks"
)

// WebhookEvent is the body callq POSTs when a call with a webhook finishes.
type WebhookEvent = tasks.WebhookEvent

// WebhookTolerance is how far a webhook's timestamp may be from the
// receiver's clock before VerifyWebhook refuses it (a replay guard).
const WebhookTolerance = 5 * time.Minute

// Webhook verification errors.
var (
	// ErrWebhookSignature: no signature matches; the request is not from
	// callq, or was altered.
	ErrWebhookSignature = auth.ErrWebhookSignature
	// ErrWebhookTimestamp: the timestamp is missing, malformed or outside
	// WebhookTolerance.
	ErrWebhookTimestamp = errors.New("webhook timestamp is missing or too far from now")
)

// VerifyWebhook checks a delivery from callq as a receiver gets it: secret
// is the receiver's "whsec_..." secret, headers and body the request's, body
// unparsed. Use the webhook-id header to drop redeliveries already handled.
//
//	body, _ := io.ReadAll(r.Body)
//	if err := producer.VerifyWebhook(secret, r.Header, body); err != nil {
//		http.Error(w, "bad signature", http.StatusUnauthorized)
//		return
//	}
func VerifyWebhook(secret string, headers http.Header, body []byte) error {
	return verifyWebhookAt(secret, headers, body, time.Now())
}

func verifyWebhookAt(secret string, headers http.Header, body []byte, now time.Time) error {
	id := headers.Get("webhook-id")
	if id == "" {
		return fmt.Errorf("%w: the webhook-id header is missing", ErrWebhookSignature)
	}
	ts, err := strconv.ParseInt(headers.Get("webhook-timestamp"), 10, 64)
	if err != nil {
		return ErrWebhookTimestamp
	}
	if d := now.Sub(time.Unix(ts, 0)); d > WebhookTolerance || d < -WebhookTolerance {
		return ErrWebhookTimestamp
	}
	return auth.VerifyWebhookSignature(secret, id, ts, headers.Get("webhook-signature"), body)
}
