package producer

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestVerifyWebhookSpecVector(t *testing.T) {
	t.Parallel()
	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	body := []byte(`{"test": 2432232314}`)
	h := http.Header{}
	h.Set("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek")
	h.Set("webhook-timestamp", "1614265330")
	h.Set("webhook-signature", "v1,bm9wZQ== v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
	at := time.Unix(1614265330, 0)

	require.NoError(t, verifyWebhookAt(secret, h, body, at))
	require.NoError(t, verifyWebhookAt(secret, h, body, at.Add(4*time.Minute)))
	require.ErrorIs(t, verifyWebhookAt(secret, h, body, at.Add(6*time.Minute)), ErrWebhookTimestamp, "too old: a replay")
	require.ErrorIs(t, verifyWebhookAt(secret, h, body, at.Add(-6*time.Minute)), ErrWebhookTimestamp, "from the future")
	require.ErrorIs(t, verifyWebhookAt(secret, h, []byte(`{"test": 1}`), at), ErrWebhookSignature)
	require.ErrorIs(t, verifyWebhookAt("whsec_"+"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", h, body, at), ErrWebhookSignature, "another secret")

	noID := h.Clone()
	noID.Del("webhook-id")
	require.ErrorIs(t, verifyWebhookAt(secret, noID, body, at), ErrWebhookSignature)
	badTS := h.Clone()
	badTS.Set("webhook-timestamp", "soon")
	require.ErrorIs(t, verifyWebhookAt(secret, badTS, body, at), ErrWebhookTimestamp)
	require.ErrorIs(t, VerifyWebhook(secret, h, body), ErrWebhookTimestamp, "the vector is from 2021")
}
