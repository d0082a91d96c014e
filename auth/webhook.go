package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Webhook signing per the Standard Webhooks specification
// (https://www.standardwebhooks.com): the signature of a message is
// base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")), sent as "v1,<sig>";
// the key is the base64-decoded part of a "whsec_..." secret.

// webhookSecretPrefix begins every secret in its text form.
const webhookSecretPrefix = "whsec_"

// ErrWebhookSignature: no signature in the header matches the message.
var ErrWebhookSignature = errors.New("webhook signature does not match")

// WebhookSecrets are the keys webhooks are signed with. While a secret is
// being rotated there are several, and each message carries one signature
// per key, so receivers holding either secret verify it.
type WebhookSecrets struct {
	keys [][]byte
}

// ParseWebhookSecrets reads CALLQ_WEBHOOK_SECRET: one or more space-separated
// secrets, each "whsec_" followed by base64 of at least 24 bytes. Errors never
// include key material.
func ParseWebhookSecrets(s string) (*WebhookSecrets, error) {
	fields := strings.Fields(s)
	if len(fields) == 0 {
		return nil, errors.New("webhook secret is empty: expected whsec_<base64>")
	}
	ws := &WebhookSecrets{}
	for i, f := range fields {
		key, err := decodeWebhookSecret(f)
		if err != nil {
			return nil, fmt.Errorf("webhook secret %d of %d: %w", i+1, len(fields), err)
		}
		ws.keys = append(ws.keys, key)
	}
	return ws, nil
}

func decodeWebhookSecret(s string) ([]byte, error) {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s, webhookSecretPrefix))
	if err != nil {
		return nil, errors.New("is not whsec_ followed by standard base64")
	}
	if len(key) < 24 {
		return nil, fmt.Errorf("decodes to %d bytes; use at least 24 (32 recommended)", len(key))
	}
	return key, nil
}

// GenerateWebhookSecret returns a new "whsec_" secret of 32 random bytes.
func GenerateWebhookSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return webhookSecretPrefix + base64.StdEncoding.EncodeToString(b), nil
}

// Sign returns the webhook-signature header value: one "v1,<sig>" per key,
// space-separated.
func (w *WebhookSecrets) Sign(id string, timestamp int64, body []byte) string {
	sigs := make([]string, len(w.keys))
	for i, k := range w.keys {
		sigs[i] = "v1," + webhookMAC(k, id, timestamp, body)
	}
	return strings.Join(sigs, " ")
}

// ForTenant returns the secrets a tenant's webhooks are signed with: each
// key derived from the corresponding master key and the tenant's name
// (HMAC-SHA256), so that one tenant's receivers cannot forge deliveries to
// another's, while the operator keeps one CALLQ_WEBHOOK_SECRET. Rotating the
// master rotates every tenant's secret the same way.
func (w *WebhookSecrets) ForTenant(tenant string) *WebhookSecrets {
	out := &WebhookSecrets{keys: make([][]byte, len(w.keys))}
	for i, k := range w.keys {
		mac := hmac.New(sha256.New, k)
		mac.Write([]byte("callq webhook secret\x00" + tenant))
		out.keys[i] = mac.Sum(nil)
	}
	return out
}

// Secrets returns the keys in their "whsec_" text form, the current (first)
// one first: what a receiver configures.
func (w *WebhookSecrets) Secrets() []string {
	out := make([]string, len(w.keys))
	for i, k := range w.keys {
		out[i] = webhookSecretPrefix + base64.StdEncoding.EncodeToString(k)
	}
	return out
}

// String hides the keys from fmt.
func (w *WebhookSecrets) String() string { return fmt.Sprintf("WebhookSecrets(%d keys)", len(w.keys)) }

// GoString hides the keys from %#v.
func (w *WebhookSecrets) GoString() string { return w.String() }

func webhookMAC(key []byte, id string, timestamp int64, body []byte) string {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id))
	mac.Write([]byte{'.'})
	mac.Write([]byte(strconv.FormatInt(timestamp, 10)))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// VerifyWebhookSignature checks a webhook-signature header (one or more
// space-separated "v1,<sig>") against the message under secret ("whsec_...").
// It does not check the timestamp's age; callers do (producer.VerifyWebhook).
func VerifyWebhookSignature(secret, id string, timestamp int64, signatures string, body []byte) error {
	key, err := decodeWebhookSecret(secret)
	if err != nil {
		return fmt.Errorf("webhook secret %w", err)
	}
	want := []byte(webhookMAC(key, id, timestamp, body))
	for _, s := range strings.Fields(signatures) {
		version, sig, ok := strings.Cut(s, ",")
		if ok && version == "v1" && hmac.Equal([]byte(sig), want) {
			return nil
		}
	}
	return ErrWebhookSignature
}
