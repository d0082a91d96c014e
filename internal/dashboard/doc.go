// Package dashboard is callq's web dashboard, served by `callq api` and
// `callq dev` at /ui/: an operator signs in with an API key and sees,
// filters, replays and cancels the calls of the key's tenant, bulk
// replays failed calls, reads the counts, queue depths and a chart of
// finished calls, the integrations of the catalog and (an admin) the
// tenant's credentials by name.
//
// # Built on the API's client
//
// Every page works through producer.Client, the client the HTTP API is
// built on, in the tenant of the signed-in key (Producer.Tenant): one way
// to list, get, replay, cancel and count calls, and one tenant check. The
// handlers parse a request, make one or two calls of the client and render
// a template; nothing else.
//
// # Pages
//
// Server-rendered html/template pages, embedded with go:embed with one
// stylesheet and one small ES module (static/app.js, which refreshes the
// calls table while the page is visible and does nothing else), so a
// build needs no Node and no step beyond go build. Every control is a
// labelled form control, link or button: the pages work with a keyboard
// and without the script.
//
// # Security
//
//   - Sessions. POST /ui/login exchanges an API key for a random 32-byte
//     token in the cookie callq_session (Path=/ui/, HttpOnly,
//     SameSite=Strict, Secure over TLS). Redis holds the session's tenant,
//     role, key id and CSRF token under the SHA-256 of the token
//     (rediskeys.UISession), expiring after Config.SessionIdle without a
//     request; the key itself is kept nowhere. Each request looks the key
//     up again, so revoking it ends its sessions. The calls table's
//     background refresh does not renew a session: an open tab does not
//     keep it alive.
//   - CSRF. Only POST changes anything, and every POST form carries the
//     session's CSRF token (compared in constant time); the sign-in form
//     a double-submit cookie (callq_login_csrf). Requests a browser marks
//     cross-origin are refused as well (http.CrossOriginProtection).
//   - Content. Upstream content (bodies, headers, error text) is
//     attacker-controlled: it is only ever rendered as text by
//     html/template, never as markup. Every response carries a
//     Content-Security-Policy without 'unsafe-inline' (no page holds an
//     inline script, style or event handler), nosniff, no-referrer and
//     frame-ancestors 'none'; pages are not cached.
package dashboard
