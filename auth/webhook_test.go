package auth

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The Standard Webhooks specification's published test vector: a receiver
// using any of the official libraries accepts what matches it.
const (
	vectorSecret    = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	vectorID        = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	vectorTimestamp = 1614265330
	vectorBody      = `{"test": 2432232314}`
	vectorSignature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

func TestWebhookSignatureMatchesSpecVector(t *testing.T) {
	t.Parallel()
	ws, err := ParseWebhookSecrets(vectorSecret)
	require.NoError(t, err)
	require.Equal(t, vectorSignature, ws.Sign(vectorID, vectorTimestamp, []byte(vectorBody)))
	require.NoError(t, VerifyWebhookSignature(vectorSecret, vectorID, vectorTimestamp, vectorSignature, []byte(vectorBody)))
}

func TestWebhookSignatureRotation(t *testing.T) {
	t.Parallel()
	newSecret, err := GenerateWebhookSecret()
	require.NoError(t, err)
	ws, err := ParseWebhookSecrets(newSecret + " " + vectorSecret)
	require.NoError(t, err)
	header := ws.Sign(vectorID, vectorTimestamp, []byte(vectorBody))
	sigs := strings.Fields(header)
	require.Len(t, sigs, 2, "one signature per secret while rotating")
	require.Equal(t, vectorSignature, sigs[1])
	require.NoError(t, VerifyWebhookSignature(newSecret, vectorID, vectorTimestamp, header, []byte(vectorBody)))
	require.NoError(t, VerifyWebhookSignature(vectorSecret, vectorID, vectorTimestamp, header, []byte(vectorBody)))
}

func TestWebhookSignatureRefusals(t *testing.T) {
	t.Parallel()
	body := []byte(vectorBody)
	cases := map[string]error{
		"tampered body": VerifyWebhookSignature(vectorSecret, vectorID, vectorTimestamp, vectorSignature, []byte(`{"test": 1}`)),
		"other id":      VerifyWebhookSignature(vectorSecret, "msg_other", vectorTimestamp, vectorSignature, body),
		"other time":    VerifyWebhookSignature(vectorSecret, vectorID, vectorTimestamp+1, vectorSignature, body),
		"v2 scheme":     VerifyWebhookSignature(vectorSecret, vectorID, vectorTimestamp, strings.Replace(vectorSignature, "v1,", "v2,", 1), body),
		"empty header":  VerifyWebhookSignature(vectorSecret, vectorID, vectorTimestamp, "", body),
	}
	for name, err := range cases {
		require.ErrorIs(t, err, ErrWebhookSignature, name)
	}
}

func TestParseWebhookSecrets(t *testing.T) {
	t.Parallel()
	for _, bad := range []string{"", "   ", "whsec_not base64!", "whsec_c2hvcnQ=", vectorSecret + " whsec_%%%"} {
		_, err := ParseWebhookSecrets(bad)
		require.Error(t, err, "%q", bad)
		require.NotContains(t, err.Error(), "MfKQ9r8", "errors hold no key material")
	}
	ws, err := ParseWebhookSecrets(strings.TrimPrefix(vectorSecret, "whsec_"))
	require.NoError(t, err, "the prefix is optional, as in the reference libraries")
	require.NotContains(t, fmt.Sprintf("%v %+v %#v", ws, ws, ws), "MfKQ9r8")
}

func TestWebhookSecretsPerTenant(t *testing.T) {
	t.Parallel()
	master, err := ParseWebhookSecrets(vectorSecret)
	require.NoError(t, err)
	acme, beta := master.ForTenant("acme"), master.ForTenant("beta")
	require.Len(t, acme.Secrets(), 1)
	require.NotEqual(t, acme.Secrets(), beta.Secrets())
	require.NotEqual(t, vectorSecret, acme.Secrets()[0], "the master secret is never a tenant's")
	require.Equal(t, acme.Secrets(), master.ForTenant("acme").Secrets(), "derivation is stable")

	body := []byte(vectorBody)
	sig := acme.Sign(vectorID, vectorTimestamp, body)
	require.NoError(t, VerifyWebhookSignature(acme.Secrets()[0], vectorID, vectorTimestamp, sig, body))
	require.ErrorIs(t, VerifyWebhookSignature(beta.Secrets()[0], vectorID, vectorTimestamp, sig, body), ErrWebhookSignature,
		"another tenant's secret does not verify, so its receivers cannot forge acme's deliveries")

	// While the master rotates, each tenant gets one signature per key.
	newer, _ := GenerateWebhookSecret()
	rotating, err := ParseWebhookSecrets(newer + " " + vectorSecret)
	require.NoError(t, err)
	tenant := rotating.ForTenant("acme")
	require.Len(t, tenant.Secrets(), 2)
	require.Equal(t, acme.Secrets()[0], tenant.Secrets()[1], "the old master's tenant secret still verifies")
}
