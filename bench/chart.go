package main

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"math"
	"os"
	"strconv"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// The chart is one panel per profile: for each latency percentile a group of bars, one per target, each
// labelled with its value; a profile with open-loop phases has a second panel, a group per offered rate and
// percentile. Each panel has its own log scale, since a remote-store profile's milliseconds would
// flatten a hit path's microseconds on a shared one, and a p99.9 a p50 on a linear one.

const (
	chartWidth   = 1000
	panelHeight  = 300
	marginLeft   = 70
	marginRight  = 20
	marginTop    = 48 // title and legend
	marginBottom = 34 // percentile labels
)

var (
	colBackground = color.RGBA{255, 255, 255, 255}
	colAxis       = color.RGBA{60, 60, 60, 255}
	colGrid       = color.RGBA{225, 225, 225, 255}
	colText       = color.RGBA{20, 20, 20, 255}
	// Fixed colours for the known targets, so every panel and every run reads the same way.
	targetColours = map[string]color.RGBA{
		"redis":     {214, 39, 40, 255},
		"featcache": {31, 119, 180, 255},
		"twemproxy": {44, 160, 44, 255},
	}
	extraColours = []color.RGBA{{255, 127, 14, 255}, {148, 103, 189, 255}, {140, 86, 75, 255}, {127, 127, 127, 255}}
)

type percentile struct {
	label string
	value func(*targetResult) float64
}

var chartPercentiles = []percentile{
	{"p50", func(t *targetResult) float64 { return t.P50us }},
	{"p95", func(t *targetResult) float64 { return t.P95us }},
	{"p99", func(t *targetResult) float64 { return t.P99us }},
	{"p99.9", func(t *targetResult) float64 { return t.P999us }},
}

func writeChart(path string, r *report) error {
	var panels []barPanel
	for _, pr := range r.Profiles {
		panels = append(panels, closedPanel(pr))
		if pr.Open != nil {
			panels = append(panels, openPanel(pr))
		}
	}
	n := max(len(panels), 1)
	img := image.NewRGBA(image.Rect(0, 0, chartWidth, n*panelHeight))
	draw.Draw(img, img.Bounds(), image.NewUniform(colBackground), image.Point{}, draw.Src)
	for i, bp := range panels {
		drawBars(img, image.Rect(0, i*panelHeight, chartWidth, (i+1)*panelHeight), bp)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// barPanel is one panel: groups of bars, one bar per series (target) in each, with a line of figures above.
type barPanel struct {
	title  string
	series []string
	groups []barGroup
	note   string
}

type barGroup struct {
	label  string
	values []float64 // µs, one per series; 0 draws nothing
}

// closedPanel is a profile's rounds: a group per percentile.
func closedPanel(pr *profileResult) barPanel {
	bp := barPanel{title: fmt.Sprintf("%s: %s%s", pr.Name, pr.Title, remoteTag(pr)), note: "req/s:"}
	for _, t := range pr.Targets {
		bp.series = append(bp.series, t.Name)
		bp.note += fmt.Sprintf("  %s %.1fk", t.Name, t.Throughput/1000)
	}
	for _, p := range chartPercentiles {
		g := barGroup{label: p.label}
		for _, t := range pr.Targets {
			g.values = append(g.values, p.value(t))
		}
		bp.groups = append(bp.groups, g)
	}
	return bp
}

// openPanel is a profile's open-loop phases: a group per offered rate and percentile.
func openPanel(pr *profileResult) barPanel {
	o := pr.Open
	bp := barPanel{title: fmt.Sprintf("%s, open loop: the same offered rate for every target%s", pr.Name, remoteTag(pr)),
		note: "offered req/s:"}
	for i, l := range o.Loads {
		name := l.Load.String()
		if l.Load.Share == 0 {
			name += "/s"
		}
		bp.note += fmt.Sprintf("  %s %.1fk", name, l.Rate/1000)
		for _, p := range []struct {
			label string
			value func(*openTargetResult) float64
		}{
			{"p50", func(t *openTargetResult) float64 { return t.P50us }},
			{"p99", func(t *openTargetResult) float64 { return t.P99us }},
			{"p99.9", func(t *openTargetResult) float64 { return t.P999us }},
		} {
			g := barGroup{label: name + " " + p.label}
			for _, t := range l.Targets {
				g.values = append(g.values, p.value(t))
			}
			bp.groups = append(bp.groups, g)
		}
		if i == 0 {
			for _, t := range l.Targets {
				bp.series = append(bp.series, t.Name)
			}
		}
	}
	return bp
}

// remoteTag names how a profile's Redis was made remote, for its panels' titles.
func remoteTag(pr *profileResult) string {
	if pr.Remote == nil {
		return ""
	}
	return " [" + pr.Remote.Method + "]"
}

func drawBars(img *image.RGBA, area image.Rectangle, bp barPanel) {
	plot := image.Rect(area.Min.X+marginLeft, area.Min.Y+marginTop, area.Max.X-marginRight, area.Max.Y-marginBottom)
	text(img, area.Min.X+10, area.Min.Y+18, bp.title, colText)

	ax := newLogAxis(bp.groups, plot)
	ax.drawGrid(img)
	text(img, area.Min.X+6, plot.Min.Y-8, "latency ("+ax.unit+", log scale)", colText)
	text(img, plot.Min.X+170, plot.Min.Y-8, bp.note, colText)
	drawLegend(img, area, bp.series)
	drawBarGroups(img, ax, bp)
	// Axes last, over the bars' feet.
	fill(img, image.Rect(plot.Min.X, plot.Min.Y, plot.Min.X+1, plot.Max.Y+1), colAxis)
	fill(img, image.Rect(plot.Min.X, plot.Max.Y, plot.Max.X, plot.Max.Y+1), colAxis)
	// A separator between panels.
	fill(img, image.Rect(area.Min.X, area.Max.Y-1, area.Max.X, area.Max.Y), colGrid)
}

// logAxis is a bar panel's latency axis. A log scale: a p50 of half a millisecond and a p99.9 of tens of
// milliseconds both stay readable.
type logAxis struct {
	plot             image.Rectangle
	unit             string  // µs, or ms for large values
	div              float64 // values (µs) are divided by div to show in unit
	decade           float64 // the power of ten at or below axisMin
	axisMin, axisMax float64
	span             float64 // decades from axisMin to axisMax
}

// newLogAxis makes the axis that fits the groups' values in plot.
func newLogAxis(groups []barGroup, plot image.Rectangle) logAxis {
	lo, hi := math.Inf(1), 0.0
	for _, g := range groups {
		for _, v := range g.values {
			if v > 0 {
				lo, hi = math.Min(lo, v), math.Max(hi, v)
			}
		}
	}
	if hi == 0 {
		lo, hi = 1, 10
	}
	a := logAxis{plot: plot, unit: "µs", div: 1}
	if hi >= 2000 {
		a.unit, a.div = "ms", 1000
	}
	lo, hi = lo/a.div, hi/a.div
	// The axis starts at the 1-2-5 step at or below half the smallest value, so the shortest bar still shows.
	a.decade = math.Pow(10, math.Floor(math.Log10(lo/2)))
	a.axisMin = a.decade
	for _, m := range []float64{2, 5} {
		if a.decade*m <= lo/2 {
			a.axisMin = a.decade * m
		}
	}
	a.axisMax = math.Pow(10, math.Ceil(math.Log10(hi*1.3)))
	a.span = math.Log10(a.axisMax) - math.Log10(a.axisMin)
	return a
}

// y is the height of v (in the axis's unit) in the plot.
func (a logAxis) y(v float64) int {
	v = math.Max(v, a.axisMin)
	return a.plot.Max.Y - int(math.Round((math.Log10(v)-math.Log10(a.axisMin))/a.span*float64(a.plot.Dy())))
}

// drawGrid draws the grid at 1, 2 and 5 of each decade, with labels on them.
func (a logAxis) drawGrid(img *image.RGBA) {
	for d := a.decade; d < a.axisMax*1.01; d *= 10 {
		for _, m := range []float64{1, 2, 5} {
			v := d * m
			if v < a.axisMin*0.99 || v > a.axisMax*1.01 {
				continue
			}
			y := a.y(v)
			c := colGrid
			if m == 1 {
				c = color.RGBA{200, 200, 200, 255}
			}
			fill(img, image.Rect(a.plot.Min.X, y, a.plot.Max.X, y+1), c)
			label := strconv.FormatFloat(v, 'f', -1, 64)
			text(img, a.plot.Min.X-8-7*len(label), y+4, label, colText)
		}
	}
}

// drawLegend draws the series' names and colours, right-aligned on the title line of area.
func drawLegend(img *image.RGBA, area image.Rectangle, series []string) {
	x := area.Max.X - marginRight
	for i := len(series) - 1; i >= 0; i-- {
		name := series[i]
		x -= 7*len(name) + 26
		fill(img, image.Rect(x, area.Min.Y+8, x+12, area.Min.Y+20), colourOf(name, i))
		text(img, x+16, area.Min.Y+18, name, colText)
	}
}

// drawBarGroups draws each group's bars, one per series, and its label under them. Value labels are drawn when
// they fit above their bar.
func drawBarGroups(img *image.RGBA, ax logAxis, bp barPanel) {
	plot := ax.plot
	groupW := plot.Dx() / max(len(bp.groups), 1)
	nt := max(len(bp.series), 1)
	barW := min(56, (groupW-12)/nt)
	for gi, g := range bp.groups {
		gx := plot.Min.X + gi*groupW + (groupW-barW*nt)/2
		for i, v := range g.values {
			if v <= 0 {
				continue
			}
			v /= ax.div
			bx := gx + i*barW
			fill(img, image.Rect(bx+2, ax.y(v), bx+barW-2, plot.Max.Y), colourOf(bp.series[i], i))
			label := trimFloat(v)
			if 7*len(label) <= barW+6 {
				text(img, bx+barW/2-7*len(label)/2, ax.y(v)-4, label, colText)
			}
		}
		lx := plot.Min.X + gi*groupW + groupW/2 - 7*len(g.label)/2
		text(img, lx, plot.Max.Y+20, g.label, colText)
	}
}

func colourOf(name string, i int) color.RGBA {
	if c, ok := targetColours[name]; ok {
		return c
	}
	return extraColours[i%len(extraColours)]
}

// trimFloat prints a value with at most three significant digits after the point that matter.
func trimFloat(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	case v >= 1:
		return fmt.Sprintf("%.2f", v)
	}
	return fmt.Sprintf("%.3g", v)
}

func fill(img *image.RGBA, r image.Rectangle, c color.RGBA) {
	draw.Draw(img, r, image.NewUniform(c), image.Point{}, draw.Src)
}

// text draws s with its baseline at y. basicfont's 7x13 face has no "µ": it is drawn as "u".
func text(img *image.RGBA, x, y int, s string, c color.RGBA) {
	d := font.Drawer{Dst: img, Src: image.NewUniform(c), Face: basicfont.Face7x13, Dot: fixed.P(x, y)}
	out := make([]rune, 0, len(s))
	for _, r := range s {
		if r == 'µ' {
			r = 'u'
		}
		out = append(out, r)
	}
	d.DrawString(string(out))
}
