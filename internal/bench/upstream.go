package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// upstreamBody is what the local upstream answers: a small JSON body.
var upstreamBody = []byte(`{"ok":true,"id":364,"name":"callq-bench","tags":["a","b"]}` + "\n")

// upstream is the local upstream every phase calls: it answers
// upstreamBody at once, except on the paths a latency phase watches, on
// credPath (which wants token as a bearer) and on bytesPath (a body of the
// size asked).
type upstream struct {
	srv   *http.Server
	url   string
	token string // the bearer credPath wants
	hits  atomic.Int64
	// credHits counts the requests to credPath that carried the token.
	credHits atomic.Int64
	bodies   sync.Map // size → []byte, bytesPath's bodies

	mu     sync.Mutex
	probes map[string]*upstreamProbe
}

// upstreamProbe watches one path: the time its request arrived, and, when
// release is not nil, a hold on the answer until release is closed.
type upstreamProbe struct {
	arrived chan time.Time
	release chan struct{}
}

func (p *upstreamProbe) arrival(ctx context.Context) (time.Time, error) {
	select {
	case t := <-p.arrived:
		return t, nil
	case <-ctx.Done():
		return time.Time{}, ctx.Err()
	case <-time.After(30 * time.Second):
		return time.Time{}, errors.New("the upstream did not receive the request within 30s")
	}
}

// credPath answers upstreamBody to a request with the bearer token, 401
// to any other.
const credPath = "/cred"

// bytesPath, followed by a size in bytes, answers a JSON body of that size.
const bytesPath = "/bytes/"

func startUpstream(token string) (*upstream, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("bench: upstream: %w", err)
	}
	u := &upstream{url: "http://" + ln.Addr().String(), token: token, probes: map[string]*upstreamProbe{}}
	u.srv = &http.Server{Handler: u, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = u.srv.Serve(ln) }()
	return u, nil
}

var upstreamBodyLen = strconv.Itoa(len(upstreamBody))

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	u.hits.Add(1)
	body, bodyLen := upstreamBody, upstreamBodyLen
	switch {
	case r.URL.Path == "/ok":
	case r.URL.Path == credPath:
		if r.Header.Get("Authorization") != "Bearer "+u.token {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		u.credHits.Add(1)
	case strings.HasPrefix(r.URL.Path, bytesPath):
		n, err := strconv.Atoi(strings.TrimPrefix(r.URL.Path, bytesPath))
		if err != nil || n < 0 || n > 64<<20 {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		body = u.body(n)
		bodyLen = strconv.Itoa(len(body))
	default:
		u.mu.Lock()
		p := u.probes[r.URL.Path]
		u.mu.Unlock()
		if p != nil {
			select {
			case p.arrived <- now:
			default:
			}
			if p.release != nil {
				select {
				case <-p.release:
				case <-r.Context().Done():
				}
			}
		}
	}
	hdr := w.Header()
	hdr["Content-Type"] = []string{"application/json"}
	hdr["Content-Length"] = []string{bodyLen}
	_, _ = w.Write(body)
}

// body returns a JSON object of n bytes (at least its frame, 10 bytes).
func (u *upstream) body(n int) []byte {
	if b, ok := u.bodies.Load(n); ok {
		return b.([]byte)
	}
	b := make([]byte, 0, max(n, 10))
	b = append(b, `{"d":"`...)
	for len(b) < n-2 {
		b = append(b, "abcdefghijklmnopqrstuvwxyz0123456789"[len(b)%36])
	}
	b = append(b, `"}`...)
	u.bodies.Store(n, b)
	return b
}

func (u *upstream) watch(path string, hold bool) *upstreamProbe {
	p := &upstreamProbe{arrived: make(chan time.Time, 1)}
	if hold {
		p.release = make(chan struct{})
	}
	u.mu.Lock()
	u.probes[path] = p
	u.mu.Unlock()
	return p
}

func (u *upstream) unwatch(path string) {
	u.mu.Lock()
	delete(u.probes, path)
	u.mu.Unlock()
}

func (u *upstream) close() { _ = u.srv.Close() }
