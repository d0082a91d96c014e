// Package auth holds callq's identities and secrets: the credentials
// workers put on outbound requests, and the API keys producers present.
//
// A [Credential] is a tenant's named set of fields for one integration. Each
// field [Value] is a literal, sealed with AES-256-GCM by a [Keyring] parsed
// from CALLQ_SECRET_KEY, or a reference, "env:NAME" or "file:/path", read by
// the worker at call time so that a rotated secret takes effect on the next
// attempt. Sealed literals are bound to their tenant, ref and field, so a
// blob copied elsewhere does not open. [Store] keeps credentials in Redis;
// a Redis dump holds no secret in clear.
//
// A [Spec] is an integration's auth block in the catalog. [Spec.Apply] puts
// resolved [Secrets] on an *http.Request as a bearer token, an API key in a
// header or query parameter, basic auth, or templated headers.
// [Spec.SensitiveHeaders], [Spec.SensitiveQuery] and [Redactor] keep those
// secrets out of records, logs and webhook bodies.
//
// [KeyStore] keeps producer API keys, each belonging to a tenant and having
// a [Role]. Only the SHA-256 of a key's secret is stored.
//
// The package imports nothing else of callq.
package auth
