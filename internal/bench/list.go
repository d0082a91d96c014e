package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/callq/callq/tasks"
)

// phaseList fills the bench tenant with ListRecords records (a fifth
// failed, the rest succeeded or still queued, created over the last day,
// each with a small response), then times GET /v1/calls?status=failed&
// limit=50 of the real API handler, one request at a time, following the
// cursor through the failed calls and starting over at the end.
func (h *harness) phaseList(ctx context.Context) error {
	rdb := h.newClient(nil)
	defer rdb.Close()
	store, err := tasks.NewStore(rdb, nil)
	if err != nil {
		return err
	}
	defer store.Close()
	n := h.cfg.ListRecords
	now := time.Now()
	body := json.RawMessage(`{"id":1,"name":"bench","items":[1,2,3],"ok":true}`)
	t0 := time.Now()
	err = concurrent(ctx, n, enqueuers, func(i int) error {
		rec := &tasks.Record{CorrelationID: "list-" + strconv.Itoa(i), Tenant: tenant, Status: tasks.StatusQueued,
			Integration: integration, Method: http.MethodGet, Path: "/ok", Queue: queue, MaxAttempts: 3,
			History: []tasks.Attempt{}, CreatedAt: now.Add(-24 * time.Hour * time.Duration(n-i) / time.Duration(n))}
		if err := store.Create(ctx, rec, "fp", 0, []byte(`{}`)); err != nil {
			return err
		}
		switch i % 5 {
		case 0:
			rec.Status = tasks.StatusFailed
			rec.Error = &tasks.CallError{Kind: tasks.KindHTTPStatus, Message: "upstream answered 503 Service Unavailable (after 3 attempts)"}
			rec.Response = &tasks.Response{Status: 503, Headers: map[string]string{"Content-Type": "application/json"}, Body: body, Size: int64(len(body))}
		case 1:
			return nil
		default:
			rec.Status = tasks.StatusSucceeded
			rec.Response = &tasks.Response{Status: 200, Headers: map[string]string{"Content-Type": "application/json"}, Body: body, Size: int64(len(body))}
		}
		rec.Attempts = 1
		done := rec.CreatedAt.Add(80 * time.Millisecond)
		rec.CompletedAt = &done
		rec.History = []tasks.Attempt{{Attempt: 1, StartedAt: rec.CreatedAt, DurationMS: 80, Status: rec.Response.Status}}
		return store.Write(ctx, rec, tasks.CreatedVersion)
	})
	if err != nil {
		return fmt.Errorf("fill %d records: %w", n, err)
	}
	h.logf("      %d records written in %s", n, time.Since(t0).Round(time.Millisecond))

	api, err := h.startAPI(ctx, rdb)
	if err != nil {
		return err
	}
	defer api.close()
	tr := &http.Transport{MaxIdleConnsPerHost: 1}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	get := func(cursor string) (string, int, error) {
		q := url.Values{"status": {"failed"}, "limit": {"50"}}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, api.url+"/v1/calls?"+q.Encode(), nil)
		if err != nil {
			return "", 0, err
		}
		req.Header.Set("Authorization", "Bearer "+api.secret)
		resp, err := hc.Do(req)
		if err != nil {
			return "", 0, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return "", 0, err
		}
		if resp.StatusCode != http.StatusOK {
			return "", 0, fmt.Errorf("GET /v1/calls answered %d: %s", resp.StatusCode, b)
		}
		var page struct {
			Calls      []json.RawMessage `json:"calls"`
			NextCursor *string           `json:"next_cursor"`
		}
		if err := json.Unmarshal(b, &page); err != nil {
			return "", 0, err
		}
		next := ""
		if page.NextCursor != nil {
			next = *page.NextCursor
		}
		return next, len(page.Calls), nil
	}
	for range 20 { // warm up
		if _, _, err := get(""); err != nil {
			return err
		}
	}
	samples := make([]float64, 0, h.cfg.ListSamples)
	cursor := ""
	for range h.cfg.ListSamples {
		start := time.Now()
		next, got, err := get(cursor)
		if err != nil {
			return err
		}
		samples = append(samples, ms(time.Since(start)))
		if got != 50 && next != "" {
			return fmt.Errorf("GET /v1/calls answered %d calls and a cursor; want 50", got)
		}
		cursor = next
	}
	lat := percentiles(samples)
	h.res.ListP99MS = lat.P99
	h.notes.listP50MS, h.notes.listRecords, h.notes.listSamples = lat.P50, n, len(samples)
	h.logf("      GET /v1/calls?status=failed&limit=50: p50 %.2f ms, p99 %.2f ms over %d requests", lat.P50, lat.P99, len(samples))
	return nil
}
