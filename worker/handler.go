package worker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/hibiken/asynq"
	"github.com/rs/zerolog"

	"github.com/callq/callq/auth"
	"github.com/callq/callq/tasks"
)

// userAgent is sent unless the call or integration sets its own.
const userAgent = "callq/1"

// ProcessCall is the asynq handler of a call task. It makes one attempt and
// writes the record: succeeded, failed, or retrying with the wait it chose
// (returned to asynq in a retryError). It returns nil once the record is
// terminal, because the record, not asynq's archive, is the truth.
func (w *Worker) ProcessCall(ctx context.Context, t *asynq.Task) error {
	w.inflight.Add(1)
	defer w.inflight.Done()
	p, err := tasks.DecodePayload(t.Payload())
	if err != nil {
		w.log.Error().Err(err).Msg("dropping a call task whose payload cannot be read")
		return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	}
	call, tenant := &p.Call, p.Tenant
	log := w.log.With().Str("correlation_id", call.CorrelationID).Str("tenant", tenant).
		Str("integration", call.Integration).Logger()

	start := time.Now()
	retried, _ := asynq.GetRetryCount(ctx)
	in, known := w.cfg.Catalog.Lookup(call.Integration)
	var rec *tasks.Record
	var version int64
	if retried == 0 && !p.CreatedAt.IsZero() && known {
		// A first attempt: the record is still the one the producer wrote,
		// so it is rebuilt from the payload and nothing is read or written
		// before the request (the API shows a call whose task asynq holds
		// as running). The write after it is a compare-and-set on the
		// version Create gave it, so a cancel meanwhile is never
		// overwritten.
		rec = tasks.NewRecord(tenant, call, in, p.CreatedAt)
		version = tasks.CreatedVersion
	} else {
		begun, err := w.cfg.Records.Begin(ctx, tenant, call.CorrelationID,
			tasks.RunMarker{Attempt: retried + 1, StartedAt: start.UTC(), Worker: w.cfg.Name})
		switch {
		case errors.Is(err, tasks.ErrFinished):
			// Canceled before it ran, or run to the end by a worker that
			// died before it queued the webhook: queue it now (at most once).
			log.Info().Str("status", string(begun.Record.Status)).Msg("call already finished; not attempting it")
			return w.enqueueWebhook(ctx, begun.Record)
		case errors.Is(err, tasks.ErrNotFound):
			log.Warn().Msg("call has no record (expired or deleted); not attempting it")
			return nil
		case err != nil:
			return err // Redis trouble: asynq retries the task later
		}
		rec, version = begun.Record, begun.Version
		switch {
		case begun.Lost != nil:
			// The previous attempt's worker died after marking it running:
			// the upstream may have received that request. Say so.
			rec.History = append(rec.History, tasks.Attempt{
				Attempt:   len(rec.History) + 1,
				StartedAt: begun.Lost.StartedAt,
				Error:     fmt.Sprintf("attempt interrupted: worker %s stopped before recording an outcome; the upstream may have received the request", begun.Lost.Worker),
			})
			log.Warn().Int("attempt", len(rec.History)).Str("lost_worker", begun.Lost.Worker).Msg("previous attempt was interrupted")
		case retried > 0 && rec.Status == tasks.StatusQueued && len(rec.History) == 0:
			// Run before, yet nothing recorded: the first attempt (which
			// marks nothing before its request) lost its worker.
			rec.History = append(rec.History, tasks.Attempt{
				Attempt: 1,
				Error:   "attempt interrupted: its worker stopped (or lost Redis) before recording an outcome; the upstream may have received the request",
			})
			log.Warn().Int("attempt", 1).Msg("previous attempt was interrupted")
		}
		rec.Attempts = len(rec.History)
	}
	rec.Status = tasks.StatusRunning
	if rec.StartedAt == nil {
		t := start.UTC()
		rec.StartedAt = &t
	}

	if !known {
		return w.finish(ctx, log, rec, version, nil, tasks.StatusFailed, &tasks.CallError{
			Kind: tasks.KindValidation, Message: fmt.Sprintf("integration %q is not in this worker's catalog", call.Integration)})
	}
	policy := in.Retry.Merge(call.Retry)
	rec.MaxAttempts = policy.MaxAttempts
	if rec.Attempts >= policy.MaxAttempts {
		return w.finish(ctx, log, rec, version, nil, tasks.StatusFailed, &tasks.CallError{
			Kind: tasks.KindInternal, Message: fmt.Sprintf("all %d attempts were used; the last was interrupted", policy.MaxAttempts)})
	}

	if in.RateLimit != nil {
		if wait, err := w.rateLimit(ctx, tenant, call, in); err != nil || wait > 0 {
			if err != nil {
				return err // Redis trouble: try later
			}
			log.Info().Dur("retry_in", wait).Msg("fleet-wide rate limit reached; call put back without spending an attempt")
			if version != tasks.CreatedVersion || rec.Attempts > 0 {
				// A retry marked itself running: say it is waiting again.
				next := time.Now().Add(wait).UTC()
				rec.Status, rec.NextAttemptAt = tasks.StatusRetrying, &next
				if _, err := w.commit(context.WithoutCancel(ctx), rec, version, nil); err != nil && !errors.Is(err, tasks.ErrFinished) {
					return err
				}
			}
			return &rateLimited{delay: wait}
		}
	}
	out := w.attempt(ctx, tenant, call, in)
	attemptNo := len(rec.History) + 1
	entry := tasks.Attempt{Attempt: attemptNo, StartedAt: start.UTC(), DurationMS: out.duration.Milliseconds(), Note: out.note}
	if out.response != nil {
		entry.Status = out.response.Status
		rec.Response = out.response
	}
	if out.err != nil {
		entry.Error = out.err.Message
	}
	rec.History = append(rec.History, entry)
	rec.Attempts = len(rec.History)
	rec.NextAttemptAt = nil
	mine := &entry

	ev := log.Info()
	if out.err != nil {
		ev = log.Warn().Str("error_kind", string(out.err.Kind)).Str("error", out.err.Message)
	}
	ev = ev.Int("attempt", attemptNo).Int("status", entry.Status).Int64("duration_ms", entry.DurationMS)
	observe := func(outcome string) { w.cfg.Metrics.attempt(in.Name, outcome, out.duration) }

	switch {
	case out.err == nil:
		ev.Str("outcome", string(tasks.StatusSucceeded)).Msg("attempt")
		observe(string(tasks.StatusSucceeded))
		return w.finish(ctx, log, rec, version, mine, tasks.StatusSucceeded, nil)
	case out.err.Kind == tasks.KindCanceled:
		// The task's context ended: canceled through the API (the record is
		// already terminal and this write is refused) or the worker is
		// shutting down (asynq puts the task back; the next attempt runs).
		ev.Str("outcome", "interrupted").Msg("attempt")
		observe("interrupted")
		rec.Status, rec.Error = tasks.StatusRetrying, out.err
		if _, err := w.commit(context.WithoutCancel(ctx), rec, version, mine); err != nil && !errors.Is(err, tasks.ErrFinished) {
			log.Error().Err(err).Msg("could not record an interrupted attempt")
		}
		return ctx.Err()
	case !out.retry || attemptNo >= policy.MaxAttempts:
		ev.Str("outcome", string(tasks.StatusFailed)).Msg("attempt")
		observe(string(tasks.StatusFailed))
		if out.retry {
			out.err.Message += fmt.Sprintf(" (after %d attempts)", attemptNo)
		}
		return w.finish(ctx, log, rec, version, mine, tasks.StatusFailed, out.err)
	}

	delay := w.cfg.Backoff(policy, attemptNo)
	if out.hasRetryAfter {
		delay = out.retryAfter
	}
	if budget := policy.MaxElapsed.D(); budget > 0 && time.Since(*rec.StartedAt)+delay > budget {
		ev.Str("outcome", string(tasks.StatusFailed)).Msg("attempt")
		observe(string(tasks.StatusFailed))
		if out.hasRetryAfter {
			ra := tasks.Duration(out.retryAfter)
			out.err.Kind = tasks.KindRateLimited
			out.err.RetryAfter = &ra
			out.err.Message += fmt.Sprintf("; the upstream asked to wait %s, past the retry budget of %s", out.retryAfter, budget)
		} else {
			out.err.Message += fmt.Sprintf("; the retry budget of %s is spent", budget)
		}
		return w.finish(ctx, log, rec, version, mine, tasks.StatusFailed, out.err)
	}
	if maxRetry, ok := asynq.GetMaxRetry(ctx); ok && retried >= maxRetry {
		// asynq would archive the task instead of running it again (its
		// retries went to lost runs, or another catalog allows more
		// attempts than the one that queued it): fail now rather than
		// leave the record retrying forever.
		ev.Str("outcome", string(tasks.StatusFailed)).Msg("attempt")
		observe(string(tasks.StatusFailed))
		out.err.Message += fmt.Sprintf(" (the task's %d retries are spent)", maxRetry)
		return w.finish(ctx, log, rec, version, mine, tasks.StatusFailed, out.err)
	}
	next := time.Now().Add(delay).UTC()
	rec.Status, rec.Error, rec.NextAttemptAt = tasks.StatusRetrying, out.err, &next
	ev.Str("outcome", string(tasks.StatusRetrying)).Dur("retry_in", delay).Msg("attempt")
	observe(string(tasks.StatusRetrying))
	// WithoutCancel: an attempt that ran up to the task's deadline must
	// still be recorded.
	if _, err := w.commit(context.WithoutCancel(ctx), rec, version, mine); err != nil {
		if errors.Is(err, tasks.ErrFinished) {
			return nil // canceled while the attempt ran
		}
		return err
	}
	return &retryError{delay: delay, err: out.err}
}

// finish writes a terminal record.
// mine is the attempt this run added to rec's history, if any.
func (w *Worker) finish(ctx context.Context, log zerolog.Logger, rec *tasks.Record, version int64, mine *tasks.Attempt, status tasks.Status, cerr *tasks.CallError) error {
	now := time.Now().UTC()
	rec.Status, rec.Error, rec.CompletedAt, rec.NextAttemptAt = status, cerr, &now, nil
	rec, err := w.commit(context.WithoutCancel(ctx), rec, version, mine)
	switch {
	case errors.Is(err, tasks.ErrFinished):
		// Canceled while the attempt ran (the API queued the webhook), or
		// finished by an earlier run of this task that stopped before
		// queueing it: queue it (its task ID makes that happen once).
		log.Info().Msg("call finished elsewhere while this attempt ran; outcome not recorded")
		cur, gerr := w.cfg.Records.Get(context.WithoutCancel(ctx), rec.Tenant, rec.CorrelationID)
		if gerr != nil {
			return nil
		}
		return w.enqueueWebhook(context.WithoutCancel(ctx), cur)
	case err != nil:
		log.Error().Err(err).Msg("could not write the call's record")
		return err
	}
	w.cfg.Metrics.finished(rec)
	// If this fails, asynq runs the task again; it finds the record
	// finished and queues the webhook then.
	return w.enqueueWebhook(context.WithoutCancel(ctx), rec)
}

// rateLimit takes one request from the integration's fleet-wide limit for
// this call's credential, or says how long to wait for one.
func (w *Worker) rateLimit(ctx context.Context, tenant string, call *tasks.Call, in *tasks.Integration) (time.Duration, error) {
	rl := in.RateLimit
	cred := call.Credential
	if cred == "" {
		cred = "-"
	}
	// "|" appears in no tenant, integration or credential name.
	res, err := w.limiter.Allow(ctx, "callq:"+tenant+"|"+in.Name+"|"+cred,
		redis_rate.Limit{Rate: rl.Requests, Period: rl.Per.D(), Burst: rl.Burst})
	if err != nil {
		return 0, fmt.Errorf("rate limit: %w", err)
	}
	if res.Allowed > 0 {
		return 0, nil
	}
	return max(res.RetryAfter, time.Millisecond), nil
}

// commit writes rec over the record as of version. If the record changed
// meanwhile (an interrupted run recorded itself, say) it folds this
// attempt into the record as it now is and tries again; a record that
// became terminal (canceled) is left alone: ErrFinished.
func (w *Worker) commit(ctx context.Context, rec *tasks.Record, version int64, mine *tasks.Attempt) (*tasks.Record, error) {
	for range 5 {
		err := w.cfg.Records.Write(ctx, rec, version)
		if !errors.Is(err, tasks.ErrChanged) {
			return rec, err
		}
		cur, ver, err := w.cfg.Records.GetVersion(ctx, rec.Tenant, rec.CorrelationID)
		if err != nil {
			return rec, err
		}
		if cur.Status.Terminal() {
			return cur, tasks.ErrFinished
		}
		if mine != nil {
			m := *mine
			m.Attempt = len(cur.History) + 1
			cur.History = append(cur.History, m)
			cur.Attempts = len(cur.History)
		}
		cur.Status, cur.Response, cur.Error = rec.Status, rec.Response, rec.Error
		cur.NextAttemptAt, cur.CompletedAt, cur.MaxAttempts = rec.NextAttemptAt, rec.CompletedAt, rec.MaxAttempts
		if cur.StartedAt == nil {
			cur.StartedAt = rec.StartedAt
		}
		if cur.Status == tasks.StatusRetrying && cur.MaxAttempts > 0 && cur.Attempts >= cur.MaxAttempts {
			// Folded into a record that already held attempts, this one
			// was the last: the call fails instead of retrying.
			now := time.Now().UTC()
			cur.Status, cur.NextAttemptAt, cur.CompletedAt = tasks.StatusFailed, nil, &now
		}
		rec, version = cur, ver
	}
	return rec, tasks.ErrChanged
}

// outcome is what one attempt came to.
type outcome struct {
	note          string
	response      *tasks.Response
	err           *tasks.CallError
	retry         bool
	retryAfter    time.Duration
	hasRetryAfter bool
	duration      time.Duration
}

// attempt makes one request (two, on an oauth2 integration that answers 401
// to a token it then refreshes). Every message it returns has passed
// through the credential's redactor.
func (w *Worker) attempt(ctx context.Context, tenant string, call *tasks.Call, in *tasks.Integration) (out outcome) {
	start := time.Now()
	defer func() { out.duration = time.Since(start) }()
	fail := func(kind tasks.ErrorKind, format string, args ...any) outcome {
		return outcome{err: &tasks.CallError{Kind: kind, Message: fmt.Sprintf(format, args...)}}
	}

	u, err := in.URL(call.Path, call.Query)
	if err != nil {
		return fail(tasks.KindValidation, "path: %v", err)
	}
	cred, cerr := w.credential(ctx, tenant, call, in)
	if cerr != nil {
		return *cerr
	}
	timeout := in.EffectiveTimeout(call.Timeout.D())
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := w.buildRequest(actx, call, in, u, cred.secrets)
	if err != nil {
		return fail(tasks.KindCredential, "%s", cred.redactor.String(err.Error()))
	}
	resp, err := w.clients[in.Name].Do(req)

	if err == nil && resp.StatusCode == http.StatusUnauthorized && in.Auth.Type == auth.TypeOAuth2 {
		// The token was revoked or expired early: refresh it (once for the
		// whole fleet) and send the request again at once, without
		// spending an attempt. A second 401 is the answer.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		stale := cred.secrets[auth.FieldAccessToken]
		fresh, ferr := w.cfg.OAuth.ForceRefresh(ctx, tenant, in.Name, &in.Auth, cred.credential, stale)
		if ferr != nil {
			o := w.oauthFailure(ctx, ferr)
			o.err.Message = "the upstream answered 401 and " + o.err.Message
			return o
		}
		both := maps.Clone(fresh)
		both["stale_access_token"] = stale
		cred.secrets, cred.redactor = fresh, auth.NewSecretsRedactor(&in.Auth, both)
		out.note = "the upstream answered 401; the token was refreshed and the request sent again"
		cancel()
		actx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
		if req, err = w.buildRequest(actx, call, in, u, cred.secrets); err != nil {
			return fail(tasks.KindCredential, "%s", cred.redactor.String(err.Error()))
		}
		resp, err = w.clients[in.Name].Do(req)
	}
	redactor := cred.redactor
	if err != nil {
		retry, kind := w.cfg.CheckRetry(ctx, nil, err)
		out.err = &tasks.CallError{Kind: kind, Message: redactor.String(transportMessage(kind, err, timeout))}
		out.retry = retry
		return out
	}
	defer resp.Body.Close()
	r, readErr := readResponse(resp, w.cfg.MaxResponseBytes, redactor, in)
	out.response = r
	if readErr != nil {
		retry, kind := w.cfg.CheckRetry(ctx, nil, readErr)
		out.err = &tasks.CallError{Kind: kind, Message: redactor.String("reading the response body: " + transportMessage(kind, readErr, timeout))}
		out.retry = retry
		return out
	}
	retry, kind := w.cfg.CheckRetry(ctx, resp, nil)
	if kind == "" {
		return out
	}
	out.retry = retry
	out.err = &tasks.CallError{Kind: kind, Message: fmt.Sprintf("upstream answered %d %s", resp.StatusCode, http.StatusText(resp.StatusCode))}
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		if d, ok := ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
			out.retryAfter, out.hasRetryAfter = d, true
			ra := tasks.Duration(d)
			out.err.RetryAfter = &ra
		}
	}
	return out
}

// buildRequest makes the upstream request: the integration's headers, the
// call's, then the credential, which no call header can override.
func (w *Worker) buildRequest(ctx context.Context, call *tasks.Call, in *tasks.Integration, u *url.URL, secrets auth.Secrets) (*http.Request, error) {
	body, contentType := call.RequestBody()
	var rd io.Reader = http.NoBody
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, call.Method, u.String(), rd)
	if err != nil {
		return nil, fmt.Errorf("cannot build the request: %w", err)
	}
	cp := *u
	req.URL = &cp // keep the caller's path encoding exactly
	req.Header.Set("User-Agent", userAgent)
	for k, v := range in.Headers {
		req.Header.Set(k, v)
	}
	for k, v := range call.Headers {
		if !tasks.ReservedHeader(k) { // refused at enqueue; a call queued before that may hold one
			req.Header.Set(k, v)
		}
	}
	if contentType != "" && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", contentType)
	}
	// The encodings readResponse decodes, and no other: the body must be
	// readable to be redacted.
	req.Header.Set("Accept-Encoding", acceptEncoding)
	if err := in.Auth.Apply(req, secrets); err != nil {
		return nil, err
	}
	// Defense in depth: the request leaves for the integration's origin only.
	if base := in.Base(); req.URL.Scheme != base.Scheme || req.URL.Host != base.Host {
		return nil, errors.New("path: would leave the integration's origin")
	}
	return req, nil
}

// resolvedCredential is what a call authenticates with.
type resolvedCredential struct {
	credential *auth.Credential // nil for auth none and client_credentials without one
	secrets    auth.Secrets
	redactor   *auth.Redactor
}

// credential resolves the call's credential. A credential is used only for
// its own tenant (the store is keyed by tenant) and its own integration. On
// failure it returns the attempt's outcome: a store that could not be read
// is worth another try, a credential that is missing or wrong is not.
func (w *Worker) credential(ctx context.Context, tenant string, call *tasks.Call, in *tasks.Integration) (*resolvedCredential, *outcome) {
	failed := func(kind tasks.ErrorKind, format string, args ...any) *outcome {
		return &outcome{err: &tasks.CallError{Kind: kind, Message: fmt.Sprintf(format, args...)}, retry: kind == tasks.KindInternal}
	}
	res := &resolvedCredential{secrets: auth.Secrets{}, redactor: auth.NewRedactor()}
	clientCredentials := in.Auth.Type == auth.TypeOAuth2 && in.Auth.Grant == auth.GrantClientCredentials
	if call.Credential == "" {
		if in.Auth.Type != auth.TypeNone && !clientCredentials {
			return nil, failed(tasks.KindCredential, "integration %q needs a credential and the call names none", in.Name)
		}
	} else {
		cred, err := w.cfg.Credentials.Get(ctx, tenant, call.Credential)
		switch {
		case errors.Is(err, auth.ErrCredentialNotFound):
			return nil, failed(tasks.KindCredential, "credential %q does not exist", call.Credential)
		case err != nil:
			return nil, failed(tasks.KindInternal, "reading the credential: %v", err)
		case cred.Integration != in.Name:
			return nil, failed(tasks.KindCredential, "credential %q belongs to integration %q, not %q", call.Credential, cred.Integration, in.Name)
		}
		res.credential = cred
	}
	if in.Auth.Type == auth.TypeOAuth2 {
		secrets, err := w.cfg.OAuth.Token(ctx, tenant, in.Name, &in.Auth, res.credential)
		if err != nil {
			o := w.oauthFailure(ctx, err)
			return nil, &o
		}
		res.secrets = secrets
	} else if res.credential != nil {
		secrets, err := res.credential.Resolve(w.cfg.Keyring)
		if err != nil {
			return nil, failed(tasks.KindCredential, "credential %q: %v", call.Credential, err)
		}
		res.secrets = secrets
	}
	res.redactor = auth.NewSecretsRedactor(&in.Auth, res.secrets)
	return res, nil
}

// oauthFailure classifies an error getting an OAuth2 token. Its messages
// are already redacted by package auth.
func (w *Worker) oauthFailure(ctx context.Context, err error) outcome {
	var te *auth.TokenError
	o := outcome{err: &tasks.CallError{Kind: tasks.KindCredential, Message: err.Error()}}
	switch {
	case errors.As(err, &te) && te.Refused, errors.Is(err, auth.ErrOAuthConfig):
		// The provider said no, or the setup is wrong: retrying won't help.
	case errors.As(err, &te):
		o.err.Kind, o.retry = tasks.KindConnection, true // no answer, or a 5xx
	case ctx.Err() != nil:
		o.err.Kind = ClassifyError(ctx, ctx.Err())
	default:
		o.err.Kind, o.retry = tasks.KindInternal, true
	}
	return o
}

func transportMessage(kind tasks.ErrorKind, err error, timeout time.Duration) string {
	if kind == tasks.KindTimeout {
		return fmt.Sprintf("no complete response within the timeout of %s", timeout)
	}
	// url.Error repeats the URL, which may carry an api_key query parameter.
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return err.Error()
}
