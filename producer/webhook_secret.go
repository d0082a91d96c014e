package producer

import "net/http"

// webhookSecret answers the tenant's webhook secrets, current first: what
// its receivers verify deliveries with.
func (h *handler) webhookSecret(w http.ResponseWriter, r *http.Request) {
	if h.cfg.WebhookSecrets == nil {
		writeError(w, &APIError{Status: http.StatusNotFound, Code: CodeNotFound, Message: "webhooks are not configured on this callq (CALLQ_WEBHOOK_SECRET is not set)"})
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, map[string]any{"tenant": h.tenant(r), "secrets": h.cfg.WebhookSecrets.ForTenant(h.tenant(r)).Secrets()})
}
