package dashboard

import (
	"cmp"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/callq/callq/producer"
	"github.com/callq/callq/tasks"
)

// overviewData is the overview page's.
type overviewData struct {
	Since         string
	Windows       []window
	Stats         *producer.Stats
	ByStatus      []named
	ByIntegration []named
	Queues        []queue
	Chart         *chart
}

// named is one row of a count table.
type named struct {
	Name  string
	Count int64
}

// queue is one row of the queues table.
type queue struct {
	Name string
	producer.QueueDepth
}

func (d *dashboard) overview(w http.ResponseWriter, r *http.Request, s *session) {
	q := r.URL.Query()
	since := "1h"
	if q.Has("since") {
		since = q.Get("since")
	}
	data := &overviewData{Since: since, Windows: boundedWindows}
	v := &view{Title: "Overview", Nav: "overview", S: s, Data: data}
	win, ok := parseWindow(since, boundedWindows)
	if !ok {
		v.Alert = "Window must be one of 15m, 1h, 24h or 7d."
		d.render(w, r, http.StatusBadRequest, "overview", v)
		return
	}
	now := time.Now()
	c := d.client(s)
	st, err := c.Stats(r.Context(), now.Add(-win.D), now)
	if err != nil {
		d.unavailable(w, r, s, err)
		return
	}
	minutes, err := c.FinishedPerMinute(r.Context(), now.Add(-(chartMinutes-1)*time.Minute), chartMinutes)
	if err != nil {
		d.unavailable(w, r, s, err)
		return
	}
	data.Stats = st
	for _, status := range tasks.Statuses() {
		data.ByStatus = append(data.ByStatus, named{string(status), st.ByStatus[status]})
	}
	for name, n := range st.ByIntegration {
		data.ByIntegration = append(data.ByIntegration, named{name, n})
	}
	slices.SortFunc(data.ByIntegration, func(a, b named) int { return cmp.Compare(a.Name, b.Name) })
	for name, depth := range st.Queues {
		data.Queues = append(data.Queues, queue{name, depth})
	}
	slices.SortFunc(data.Queues, func(a, b queue) int { return cmp.Compare(a.Name, b.Name) })
	data.Chart = newChart(minutes)
	d.render(w, r, http.StatusOK, "overview", v)
}

// The chart: one stacked bar a minute over the last hour.
const (
	chartMinutes = 60
	barWidth     = 10
	barGap       = 2
	plotHeight   = 150
	plotLeft     = 44 // room for the y axis's labels
	plotTop      = 10
	legendHeight = 40
	chartWidth   = plotLeft + chartMinutes*(barWidth+barGap) + 20 // room for the last time label
	chartHeight  = plotTop + plotHeight + 20 + legendHeight
)

// chartStatuses are the statuses the chart stacks, bottom up.
var chartStatuses = []tasks.Status{tasks.StatusSucceeded, tasks.StatusFailed, tasks.StatusCanceled}

// chart is the geometry of the SVG chart, computed here so that the
// template only places shapes.
type chart struct {
	Width, Height            int
	Left, Right, Top, Bottom int
	// Max labels the y axis's top; Mid, at MidY, its middle ("" if none).
	Max    int64
	Mid    string
	MidY   int
	Bars   []rect
	Labels []label
	Legend []legend
	// The hour's totals, for the sentence that says them.
	Total, Succeeded, Failed, Canceled int64
}

type rect struct {
	X, Y, W, H int
	Status     tasks.Status
	Title      string
}

type label struct {
	X    int
	Text string
}

type legend struct {
	X, Y   int
	Status tasks.Status
	Text   string
}

// newChart lays out minutes as stacked bars.
func newChart(minutes []tasks.Minute) *chart {
	c := &chart{Width: chartWidth, Height: chartHeight, Left: plotLeft, Top: plotTop, Bottom: plotTop + plotHeight,
		Right: plotLeft + chartMinutes*(barWidth+barGap)}
	for _, m := range minutes {
		c.Max = max(c.Max, m.Total())
		c.Succeeded += m.ByStatus[tasks.StatusSucceeded]
		c.Failed += m.ByStatus[tasks.StatusFailed]
		c.Canceled += m.ByStatus[tasks.StatusCanceled]
	}
	c.Total = c.Succeeded + c.Failed + c.Canceled
	scale := max(c.Max, 1)
	c.Max = scale // an empty hour's axis still goes from 0 to 1
	if c.Max > 1 {
		c.Mid = strconv.FormatInt(c.Max/2, 10)
		c.MidY = c.Bottom - int(c.Max/2*plotHeight/scale)
	}
	for i, m := range minutes {
		x := plotLeft + i*(barWidth+barGap)
		y := c.Bottom
		var below int64
		for _, st := range chartStatuses {
			n := m.ByStatus[st]
			if n == 0 {
				continue
			}
			// Heights from the running total, so that the stack's top is
			// exact and rounding does not add up.
			top := c.Bottom - int((below+n)*plotHeight/scale)
			h := y - top
			if h < 1 {
				h, top = 1, y-1
			}
			c.Bars = append(c.Bars, rect{X: x, Y: top, W: barWidth, H: h, Status: st,
				Title: fmt.Sprintf("%s UTC: %s %s", m.Start.Format("15:04"), count(int(n), "call"), st)})
			y, below = top, below+n
		}
		if i%15 == 0 || i == len(minutes)-1 {
			c.Labels = append(c.Labels, label{X: x + barWidth/2, Text: m.Start.Format("15:04")})
		}
	}
	for i, st := range chartStatuses {
		c.Legend = append(c.Legend, legend{X: plotLeft + i*110, Y: c.Bottom + 28, Status: st, Text: string(st)})
	}
	return c
}
