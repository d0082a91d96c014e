package dashboard

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/callq/callq/auth"
	"github.com/callq/callq/producer"
	"github.com/callq/callq/tasks"
)

// DefaultSessionIdle is how long a session lasts without a request unless
// Config.SessionIdle says otherwise.
const DefaultSessionIdle = 30 * time.Minute

// Config configures the dashboard.
type Config struct {
	// Producer is what the pages work through, in the tenant of the
	// signed-in key (Producer.Tenant). Required.
	Producer *producer.Producer
	// Keys authenticates the API keys operators sign in with, and tells
	// whether a session's key still exists. Required.
	Keys *auth.KeyStore
	// Credentials is listed, by name, on the credentials page. Required.
	Credentials *auth.Store
	// Catalog is shown on the integrations page. Required.
	Catalog *tasks.Catalog
	// Redis keeps the sessions. Required.
	Redis redis.UniversalClient
	// SessionIdle ends a session after this long without a request.
	// Default DefaultSessionIdle; at least a millisecond (Redis's
	// precision).
	SessionIdle time.Duration
	// Logger receives one event per request that fails on the server's
	// side. Default: none.
	Logger *zerolog.Logger
}

func (c *Config) validate() error {
	switch {
	case c.Producer == nil:
		return errors.New("Config.Producer is required")
	case c.Keys == nil:
		return errors.New("Config.Keys is required")
	case c.Credentials == nil:
		return errors.New("Config.Credentials is required")
	case c.Catalog == nil:
		return errors.New("Config.Catalog is required")
	case c.Redis == nil:
		return errors.New("Config.Redis is required")
	case c.SessionIdle < 0:
		return errors.New("Config.SessionIdle must not be negative")
	case c.SessionIdle > 0 && c.SessionIdle < time.Millisecond:
		return errors.New("Config.SessionIdle must be at least a millisecond: Redis expires keys in milliseconds")
	}
	return nil
}

// Security headers of every response.
const (
	contentSecurityPolicy = "default-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
	// maxFormBytes bounds a POST body: the forms hold a few short fields.
	maxFormBytes = 64 << 10
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static/app.css static/app.js
var staticFS embed.FS

type dashboard struct {
	cfg    Config
	log    zerolog.Logger
	mux    *http.ServeMux
	pages  map[string]*template.Template
	static map[string]asset
	// version names the static files' content in their URLs, so that
	// they can be cached for good.
	version string
	cop     *http.CrossOriginProtection
}

// New returns the dashboard, to be mounted at /ui/ (its routes begin with
// /ui/).
func New(cfg *Config) (http.Handler, error) {
	if cfg == nil {
		cfg = &Config{}
	}
	c := *cfg
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("dashboard: %w", err)
	}
	if c.SessionIdle == 0 {
		c.SessionIdle = DefaultSessionIdle
	}
	if c.Logger == nil {
		nop := zerolog.Nop()
		c.Logger = &nop
	}
	d := &dashboard{cfg: c, log: c.Logger.With().Str("component", "dashboard").Logger(), mux: http.NewServeMux(),
		cop: http.NewCrossOriginProtection()}
	if err := d.loadStatic(); err != nil {
		return nil, err
	}
	if err := d.loadTemplates(); err != nil {
		return nil, err
	}

	d.mux.HandleFunc("GET /ui/{$}", d.root)
	d.mux.HandleFunc("GET /ui/login", d.loginForm)
	d.mux.HandleFunc("POST /ui/login", d.login)
	d.mux.HandleFunc("POST /ui/logout", d.signedIn(false, d.logout))
	d.mux.HandleFunc("GET /ui/calls", d.signedIn(false, d.calls))
	d.mux.HandleFunc("GET /ui/calls/{id}", d.signedIn(false, d.call))
	d.mux.HandleFunc("POST /ui/calls/{id}/replay", d.signedIn(false, d.replay))
	d.mux.HandleFunc("POST /ui/calls/{id}/cancel", d.signedIn(false, d.cancel))
	d.mux.HandleFunc("POST /ui/calls/{id}/webhook/redeliver", d.signedIn(false, d.redeliver))
	d.mux.HandleFunc("GET /ui/failed", d.signedIn(false, d.failed))
	d.mux.HandleFunc("POST /ui/failed/replay", d.signedIn(false, d.replayFailed))
	d.mux.HandleFunc("GET /ui/overview", d.signedIn(false, d.overview))
	d.mux.HandleFunc("GET /ui/credentials", d.signedIn(true, d.credentials))
	d.mux.HandleFunc("GET /ui/integrations", d.signedIn(false, d.integrations))
	d.mux.HandleFunc("GET /ui/static/{name}", d.serveStatic)
	d.mux.HandleFunc("/ui/", func(w http.ResponseWriter, r *http.Request) {
		d.fail(w, r, nil, http.StatusNotFound, "There is no such page.")
	})
	return d, nil
}

func (d *dashboard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cache-Control", "no-store") // the static files say otherwise
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			d.log.Error().Interface("panic", v).Str("path", r.URL.Path).Msg("handler panicked")
			d.fail(w, r, nil, http.StatusInternalServerError, "Something went wrong on callq's side.")
		}
	}()
	if err := d.cop.Check(r); err != nil {
		d.fail(w, r, nil, http.StatusForbidden, "This request came from another site, so it was refused.")
		return
	}
	if r.Method == http.MethodPost {
		r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	}
	d.mux.ServeHTTP(w, r)
}

// root sends a visitor to the calls, or to sign in first.
func (d *dashboard) root(w http.ResponseWriter, r *http.Request) {
	if _, err := d.session(r, true); err == nil {
		http.Redirect(w, r, "/ui/calls", http.StatusSeeOther)
		return
	}
	http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
}

// view is what the layout renders a page with.
type view struct {
	Title string
	// Nav is the navigation link of the page, marked current.
	Nav string
	// S is the session, nil when no one is signed in.
	S       *session
	Version string
	// Alert is an error to show; Notice a message of success.
	Alert  string
	Notice string
	// Data is the page's own.
	Data any
}

// render answers status with the page name.
func (d *dashboard) render(w http.ResponseWriter, r *http.Request, status int, name string, v *view) {
	d.execute(w, r, status, name, "layout", v)
}

// execute renders template tmpl of the page name into a buffer first, so
// that a failure answers 500 rather than half a page.
func (d *dashboard) execute(w http.ResponseWriter, r *http.Request, status int, name, tmpl string, v *view) {
	v.Version = d.version
	var buf bytes.Buffer
	if err := d.pages[name].ExecuteTemplate(&buf, tmpl, v); err != nil {
		d.log.Error().Err(err).Str("path", r.URL.Path).Str("page", name).Msg("rendering failed")
		if name == "error" {
			http.Error(w, "Something went wrong on callq's side.", http.StatusInternalServerError)
			return
		}
		d.fail(w, r, nil, http.StatusInternalServerError, "Something went wrong on callq's side.")
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// fail answers status with the error page saying msg.
func (d *dashboard) fail(w http.ResponseWriter, r *http.Request, s *session, status int, msg string) {
	title := http.StatusText(status)
	d.render(w, r, status, "error", &view{Title: title, S: s, Alert: msg, Data: status})
}

// unavailable answers 503 for a failure of Redis (or another of callq's
// own), logging what it was: the page says no more.
func (d *dashboard) unavailable(w http.ResponseWriter, r *http.Request, s *session, err error) {
	if errors.Is(err, r.Context().Err()) {
		return // the browser went away
	}
	d.log.Error().Err(err).Str("path", r.URL.Path).Msg("request failed")
	d.fail(w, r, s, http.StatusServiceUnavailable, "callq cannot reach its store right now; try again.")
}

func (d *dashboard) loadTemplates() error {
	pages := []string{"login", "calls", "call", "failed", "overview", "credentials", "integrations", "error"}
	d.pages = make(map[string]*template.Template, len(pages))
	for _, p := range pages {
		t, err := template.New(p).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/partials.html", "templates/"+p+".html")
		if err != nil {
			return fmt.Errorf("dashboard: template %s: %w", p, err)
		}
		d.pages[p] = t
	}
	return nil
}

// asset is one static file.
type asset struct {
	body        []byte
	contentType string
}

func (d *dashboard) loadStatic() error {
	d.static = map[string]asset{}
	sum := sha256.New()
	for name, ctype := range map[string]string{"app.css": "text/css; charset=utf-8", "app.js": "text/javascript; charset=utf-8"} {
		b, err := fs.ReadFile(staticFS, "static/"+name)
		if err != nil {
			return fmt.Errorf("dashboard: %w", err)
		}
		d.static[name] = asset{body: b, contentType: ctype}
	}
	for _, name := range []string{"app.css", "app.js"} {
		sum.Write(d.static[name].body)
	}
	d.version = hex.EncodeToString(sum.Sum(nil))[:12]
	return nil
}

func (d *dashboard) serveStatic(w http.ResponseWriter, r *http.Request) {
	a, ok := d.static[r.PathValue("name")]
	if !ok {
		d.fail(w, r, nil, http.StatusNotFound, "There is no such file.")
		return
	}
	w.Header().Set("Content-Type", a.contentType)
	if r.URL.Query().Get("v") == d.version {
		// The pages name the file with its content's version.
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		w.Header().Set("Cache-Control", "no-cache")
	}
	w.Header().Set("ETag", `"`+d.version+`"`)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
}
