package producer_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"time"

	"github.com/callq/callq/auth"
	"github.com/callq/callq/producer"
)

// A webhook receiver in Go, as the README shows it.
func ExampleVerifyWebhook() {
	secret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" // the receiver's CALLQ_WEBHOOK_SECRET

	receiver := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 2<<20))
		if err != nil || producer.VerifyWebhook(secret, r.Header, body) != nil {
			http.Error(w, "invalid signature", http.StatusUnauthorized)
			return
		}
		var ev producer.WebhookEvent
		_ = json.Unmarshal(body, &ev)
		fmt.Println(ev.Type, ev.Data.CorrelationID, r.Header.Get("webhook-id"))
		w.WriteHeader(http.StatusNoContent)
	})

	// What a callq worker sends.
	body := []byte(`{"type":"call.succeeded","timestamp":"2026-11-23T12:00:00Z","data":{"correlation_id":"order-981","status":"succeeded"}}`)
	signer, _ := auth.ParseWebhookSecrets(secret)
	ts := time.Now().Unix()
	req := httptest.NewRequest(http.MethodPost, "/hooks/callq", bytes.NewReader(body))
	req.Header.Set("webhook-id", "msg_2kqAaB9")
	req.Header.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
	req.Header.Set("webhook-signature", signer.Sign("msg_2kqAaB9", ts, body))
	rec := httptest.NewRecorder()
	receiver.ServeHTTP(rec, req)
	fmt.Println(rec.Code)

	// A forged one.
	req = httptest.NewRequest(http.MethodPost, "/hooks/callq", bytes.NewReader(body))
	req.Header.Set("webhook-id", "msg_2kqAaB9")
	req.Header.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
	req.Header.Set("webhook-signature", "v1,Zm9yZ2Vk")
	rec = httptest.NewRecorder()
	receiver.ServeHTTP(rec, req)
	fmt.Println(rec.Code)
	// Output:
	// call.succeeded order-981 msg_2kqAaB9
	// 204
	// 401
}
