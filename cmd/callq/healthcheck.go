package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
	"unicode"
)

// defaultHealthTimeout bounds a health check: an orchestrator runs it every
// few seconds and gives it little more time than that.
const defaultHealthTimeout = 3 * time.Second

// runHealthcheck is `callq healthcheck`: GET a /readyz and exit 0 on 200,
// 1 with a one-line reason otherwise. The runtime image has no curl or
// shell, so the binary checks itself.
func runHealthcheck(ctx context.Context, x *invocation, args []string) error {
	fs := x.flags()
	rawURL := fs.String("url", "", "the URL to GET (default: the API's /readyz on this host)")
	worker := fs.Bool("worker", false, "check the worker's /readyz on CALLQ_METRICS_ADDR (which must be set)")
	timeout := fs.Duration("timeout", defaultHealthTimeout, "give up after this long")
	if err := fs.parseNoArgs(args); err != nil {
		return err
	}
	if *timeout <= 0 {
		return fs.usageError("--timeout must be a positive duration")
	}
	target := *rawURL
	switch {
	case target != "" && *worker:
		return fs.usageError("--url and --worker exclude each other")
	case *worker:
		addr := fs.cfg.metricsAddr
		if addr == "" {
			return fmt.Errorf("healthcheck --worker: CALLQ_METRICS_ADDR is not set, so the worker serves no /readyz")
		}
		u, err := localReadyURL(addr)
		if err != nil {
			return fmt.Errorf("healthcheck --worker: CALLQ_METRICS_ADDR: %w", err)
		}
		target = u
	case target == "":
		u, err := localReadyURL(fs.cfg.apiAddr)
		if err != nil {
			return fmt.Errorf("healthcheck: CALLQ_API_ADDR: %w", err)
		}
		target = u
	}
	if err := checkReady(ctx, target, *timeout); err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	_, err := fmt.Fprintf(x.stdout, "ok: %s answered 200\n", target)
	return err
}

// localReadyURL is the /readyz URL of a server listening on addr, reached
// from the same host: a wildcard or empty host is 127.0.0.1.
func localReadyURL(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		return "", fmt.Errorf("%q is not host:port", addr)
	}
	switch host {
	case "", "0.0.0.0", "::":
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port) + "/readyz", nil
}

// checkReady GETs target and returns nil on 200, else why not in one line.
func checkReady(ctx context.Context, target string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return fmt.Errorf("--url %q: %w", target, err)
	}
	client := &http.Client{
		// No proxy, whatever HTTP_PROXY says: the check is of this host.
		Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true},
		// A redirect is not a 200.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Do(req)
	if err != nil {
		return oneLine(err.Error())
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	why := strings.TrimSpace(string(body))
	var ans struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &ans) == nil && ans.Error != "" {
		why = ans.Error // callq's {"status":"unavailable","error":"redis unreachable"}
	}
	if why == "" {
		return fmt.Errorf("%s answered %s", target, resp.Status)
	}
	return fmt.Errorf("%s answered %s: %s", target, resp.Status, oneLine(why))
}

// oneLineError is an error whose text has no line breaks or control
// characters, and at most 200 of them.
type oneLineError string

func (e oneLineError) Error() string { return string(e) }

func oneLine(s string) oneLineError {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	if r := []rune(s); len(r) > 200 {
		s = string(r[:200]) + "..."
	}
	return oneLineError(s)
}
