package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// concurrent calls fn(0..n-1) from workers goroutines and returns the
// first error.
func concurrent(ctx context.Context, n, workers int, fn func(i int) error) error {
	var next atomic.Int64
	var once sync.Once
	var first error
	var wg sync.WaitGroup
	for range min(workers, n) {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					once.Do(func() { first = err })
					next.Store(int64(n))
					return
				}
			}
		})
	}
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}

// waitDone waits for done, giving up after a generous bound.
func waitDone(ctx context.Context, done <-chan struct{}, status func() string) error {
	t := time.NewTimer(5 * time.Minute)
	defer t.Stop()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w (%s)", ctx.Err(), status())
	case <-t.C:
		return fmt.Errorf("gave up after 5m: %s", status())
	}
}

// rssWatch follows this process's resident memory over a window: the
// kernel's high-water mark (VmHWM) after resetting it through
// /proc/self/clear_refs, and VmRSS sampled every 50ms in case the reset is
// not allowed.
type rssWatch struct {
	hwmReset bool
	startKB  int64
	peakKB   atomic.Int64
	quit     chan struct{}
	done     chan struct{}
}

func startRSSWatch() *rssWatch {
	w := &rssWatch{quit: make(chan struct{}), done: make(chan struct{})}
	w.hwmReset = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
	w.startKB, _ = procStatusKB("VmRSS")
	w.peakKB.Store(w.startKB)
	go func() {
		defer close(w.done)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-w.quit:
				return
			case <-t.C:
				if kb, ok := procStatusKB("VmRSS"); ok && kb > w.peakKB.Load() {
					w.peakKB.Store(kb)
				}
			}
		}
	}()
	return w
}

// stop returns the peak and starting RSS in MB and how the peak was taken.
func (w *rssWatch) stop() (peakMB, startMB float64, method string) {
	close(w.quit)
	<-w.done
	peak := w.peakKB.Load()
	if kb, ok := procStatusKB("VmRSS"); ok {
		peak = max(peak, kb)
	}
	method = "VmRSS sampled every 50ms"
	if w.hwmReset {
		if kb, ok := procStatusKB("VmHWM"); ok {
			peak = max(peak, kb)
			method = "kernel VmHWM, reset at the window's start"
		}
	}
	if peak == 0 {
		method = "not available (no /proc)"
	}
	return float64(peak) / 1024, float64(w.startKB) / 1024, method
}

// procStatusKB reads a "Name:   123 kB" line of /proc/self/status.
func procStatusKB(name string) (int64, bool) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), name+":")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		return kb, err == nil
	}
	return 0, false
}

// processCPU is the user+system CPU time this process has used, from
// /proc/self/stat (in clock ticks, taken as the usual 100 per second), or -1
// where there is no /proc.
func processCPU() time.Duration {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return -1
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return -1
	}
	f := strings.Fields(string(b[i+1:])) // f[0] is field 3, the state
	if len(f) < 13 {
		return -1
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return -1
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond
}
