package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// upstreamBody is what the local upstream answers: a small JSON body.
var upstreamBody = []byte(`{"ok":true,"id":364,"name":"callq-bench","tags":["a","b"]}` + "\n")

// upstream is the local upstream every phase calls: it answers
// upstreamBody at once, except on the paths a latency phase watches.
type upstream struct {
	srv  *http.Server
	url  string
	hits atomic.Int64

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

func startUpstream() (*upstream, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("bench: upstream: %w", err)
	}
	u := &upstream{url: "http://" + ln.Addr().String(), probes: map[string]*upstreamProbe{}}
	u.srv = &http.Server{Handler: u, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = u.srv.Serve(ln) }()
	return u, nil
}

var upstreamBodyLen = strconv.Itoa(len(upstreamBody))

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	u.hits.Add(1)
	if r.URL.Path != "/ok" {
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
	hdr["Content-Length"] = []string{upstreamBodyLen}
	_, _ = w.Write(upstreamBody)
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
