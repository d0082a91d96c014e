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
	"github.com/rs/zerolog"

	"github.com/callq/callq/auth"
	"github.com/callq/callq/internal/flow"
	"github.com/callq/callq/internal/rediskeys"
	"github.com/callq/callq/internal/telemetry"
	"github.com/callq/callq/tasks"
)

// userAgent is sent unless the call or integration sets its own.
const userAgent = "callq/1"

// A gate stands before an integration's attempts: a fleet-wide limit the
// call must wait for. It returns a non-nil hold when the call must wait, an
// error when it cannot tell (Redis trouble), or else the pass it holds
// (nil when it holds nothing), which release ends once the attempt does.
type gate func(ctx context.Context, r *run) (pass, *heldBack, error)

// A pass is what a gate let through: it is ended with the attempt's
// outcome, or nil when there is none: no attempt was made (a later gate
// held the call), or the attempt panicked.
type pass func(ctx context.Context, out *outcome)

// gatesFor returns in's gates, in the order they are passed: none when the
// integration sets no limit, so such calls pay nothing for them. The
// circuit breaker is first: a call its open circuit holds takes nothing
// from the rate limit or a concurrency slot.
func (w *Worker) gatesFor(in *tasks.Integration) []gate {
	var gates []gate
	if in.CircuitBreaker != nil {
		gates = append(gates, w.circuitBreaker)
	}
	// A call held for a slot must not have spent a rate-limit token.
	if in.Concurrency != nil {
		gates = append(gates, w.concurrency)
	}
	if in.RateLimit != nil {
		gates = append(gates, w.rateLimit)
	}
	return gates
}

// rateLimit takes one request from the integration's fleet-wide limit for
// this call's credential, or says how long to wait for one.
func (w *Worker) rateLimit(ctx context.Context, r *run) (pass, *heldBack, error) {
	rl := r.in.RateLimit
	res, err := w.limiter.Allow(ctx, rediskeys.RateLimit(r.tenant, r.in.Name, r.call.Credential),
		redis_rate.Limit{Rate: rl.Requests, Period: rl.Per.D(), Burst: rl.Burst})
	if err != nil {
		return nil, nil, fmt.Errorf("rate limit: %w", err)
	}
	if res.Allowed > 0 {
		return nil, nil, nil
	}
	return nil, &heldBack{delay: max(res.RetryAfter, time.Millisecond),
		note: fmt.Sprintf("waiting for the fleet-wide rate limit of %d per %s", rl.Requests, rl.Per)}, nil
}

// circuitBreaker lets the call through its circuit (package flow), or
// holds it while the circuit is open or another call probes it. The pass it
// returns tells the circuit what the attempt said of the upstream; it
// skips that round trip when the circuit was closed with no failure
// counted and the attempt did not fail either. The check itself is
// answered from memory for such a circuit (circuitMemory), so a healthy
// integration's calls pay no round trip for their breaker.
func (w *Worker) circuitBreaker(ctx context.Context, r *run) (pass, *heldBack, error) {
	c := &flow.Circuit{Tenant: r.tenant, Integration: r.in.Name, Credential: r.call.Credential, Breaker: r.in.CircuitBreaker}
	t, err := w.circuits.Check(ctx, c, probeLease(r.in.EffectiveTimeout(r.call.Timeout.D())))
	if err != nil {
		return nil, nil, err
	}
	id := circuitID{tenant: r.tenant}
	if c.Breaker.PerCredential() {
		id.credential = c.Credential
	}
	if t.HalfOpened {
		w.cfg.Metrics.circuitChanged(c.Integration, id, flow.HalfOpen)
		circuitLog(r.log.Info(), c).Int("failures", t.Failures).Str("from", string(flow.Open)).Str("to", string(flow.HalfOpen)).
			Msg("circuit half-open: this call is its probe")
	} else {
		w.cfg.Metrics.circuitSeen(c.Integration, id, t.State)
	}
	if !t.Go {
		return nil, &heldBack{delay: max(t.Wait, time.Millisecond), note: circuitNote(c, &t)}, nil
	}
	quiet, probe := t.Quiet(), t.Probe
	return func(ctx context.Context, out *outcome) {
		res := circuitResult(out)
		if quiet && probe == "" && res != flow.Failed {
			// Nothing to tell a circuit that was closed with no failure,
			// but a failure counted since: this worker's next failure
			// tells it (Answered), so that the two are not a run.
			if res == flow.Answered {
				w.circuits.Answered(c)
			}
			return
		}
		ch, err := w.circuits.Report(ctx, c, probe, res)
		if err != nil {
			// The count misses one result; a probe's lease ends and
			// another call probes.
			r.log.Error().Err(err).Msg("could not report the attempt to the circuit breaker")
			return
		}
		if ch == nil {
			return
		}
		w.cfg.Metrics.circuitChanged(c.Integration, id, ch.To)
		if ch.To == flow.Closed {
			circuitLog(r.log.Info(), c).Str("from", string(ch.From)).Str("to", string(ch.To)).
				Msg("circuit closed: the probe call was answered")
			return
		}
		msg := "circuit open: consecutive failures"
		if ch.From == flow.HalfOpen {
			msg = "circuit open again: the probe call failed"
		}
		circuitLog(r.log.Warn(), c).Str("from", string(ch.From)).Str("to", string(ch.To)).Int("failures", ch.Failures).
			Time("next_probe_at", ch.NextProbeAt).Msg(msg)
	}, nil, nil
}

// probeLease bounds how long a circuit's probe may take before another
// call probes in its place: the two requests an attempt may make (an
// oauth2 401 sends it again) and room for the rest of the run. A probe that
// takes longer lost its worker.
func probeLease(timeout time.Duration) time.Duration {
	return 2*timeout + 10*time.Second
}

// circuitResult is what an attempt says of its upstream to a circuit: a
// connection error, a timeout, a 429 or a 5xx (but 501, an answer) is a
// failure; any other response is an answer; the rest (no attempt, an
// interrupted one, a credential or TLS error) says nothing.
func circuitResult(out *outcome) flow.Result {
	if out == nil || out.interrupted {
		return flow.Neutral
	}
	if out.err == nil {
		return flow.Answered
	}
	status := 0
	if out.response != nil {
		status = out.response.Status
	}
	switch {
	case out.err.Kind == tasks.KindConnection, out.err.Kind == tasks.KindTimeout,
		status == http.StatusTooManyRequests, status >= 500 && status != http.StatusNotImplemented:
		return flow.Failed
	case out.response != nil:
		return flow.Answered
	}
	return flow.Neutral
}

// circuitNote says why a circuit holds a call, for its record.
func circuitNote(c *flow.Circuit, t *flow.Ticket) string {
	name := fmt.Sprintf("%q", c.Integration)
	if c.Breaker.PerCredential() {
		if c.Credential == "" {
			name += " (no credential)"
		} else {
			name += fmt.Sprintf(" (credential %q)", c.Credential)
		}
	}
	if t.State == flow.HalfOpen {
		return fmt.Sprintf("circuit half-open for %s: waiting for the outcome of its probe call", name)
	}
	return fmt.Sprintf("circuit open for %s: %d consecutive failures; next probe at %s",
		name, t.Failures, t.NextProbeAt.Format(time.RFC3339))
}

// circuitLog adds the circuit's credential, if it has its own, to ev.
func circuitLog(ev *zerolog.Event, c *flow.Circuit) *zerolog.Event {
	if c.Breaker.PerCredential() {
		ev = ev.Str("credential", c.Credential)
	}
	return ev
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
	// interrupted says the attempt was cut off before its outcome
	// (Worker.interruption), so it says nothing of the upstream.
	interrupted bool
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
		if errors.Is(actx.Err(), context.DeadlineExceeded) {
			// The call's timeout ran out mid-body: the read sees its
			// connection closed under it, but the cause is the timeout.
			readErr = fmt.Errorf("%w: %w", context.DeadlineExceeded, readErr)
		}
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
	// The attempt's span, or the trace context the call came with: after
	// the call's headers, which may not pass another one off as it.
	telemetry.Inject(ctx, req.Header)
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
	if call.Credential == "" {
		if in.Auth.NeedsCredential() {
			return nil, failed(tasks.KindCredential, "integration %q needs a credential and the call names none", in.Name)
		}
	} else {
		cred, err := w.creds.Get(ctx, tenant, call.Credential)
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
		secrets, redactor, err := w.open(res.credential, &in.Auth)
		if err != nil {
			return nil, failed(tasks.KindCredential, "credential %q: %v", call.Credential, err)
		}
		res.secrets, res.redactor = secrets, redactor
		return res, nil
	}
	res.redactor = auth.NewSecretsRedactor(&in.Auth, res.secrets)
	return res, nil
}

// open resolves cred's secrets and builds their redactor for spec: once
// per credential kept by the worker's cache, on every call without it.
func (w *Worker) open(cred *auth.Credential, spec *auth.Spec) (auth.Secrets, *auth.Redactor, error) {
	if w.credCache != nil {
		return w.credCache.Open(cred, spec, w.cfg.Keyring, w.cfg.Credentials.SourceDirs())
	}
	secrets, err := cred.Resolve(w.cfg.Keyring, w.cfg.Credentials.SourceDirs())
	if err != nil {
		return nil, nil, err
	}
	return secrets, auth.NewSecretsRedactor(spec, secrets), nil
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
