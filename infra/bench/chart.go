package main

import (
	"fmt"
	"math"
	"strings"
)

// A chart plots series against size (1k, 10k, 100k; log scale).
type chart struct {
	file, title, unit string
	series            []series
}

type series struct {
	label, bench, unit string
}

var sizes = []int{1000, 10000, 100000}

var colors = []string{"#1f77b4", "#d62728", "#2ca02c"}

// render draws a small self-contained SVG line chart.
func (c chart) render(r Results) string {
	const w, h, left, right, top, bottom = 640, 360, 70, 20, 40, 70
	maxY := 0.0
	for _, s := range c.series {
		for _, n := range sizes {
			if v, ok := r.Get(fmt.Sprintf("%s/%d", s.bench, n), s.unit); ok {
				maxY = math.Max(maxY, v)
			}
		}
	}
	if maxY == 0 {
		maxY = 1
	}
	maxY = niceCeil(maxY)
	x := func(i int) float64 { return left + float64(i)*float64(w-left-right)/float64(len(sizes)-1) }
	y := func(v float64) float64 { return float64(h-bottom) - v/maxY*float64(h-top-bottom) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", w, h, w, h)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", w, h)
	fmt.Fprintf(&b, `<text x="%d" y="22" font-size="14" font-weight="bold">%s</text>`+"\n", left, c.title)
	for i := 0; i <= 4; i++ {
		v := maxY * float64(i) / 4
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", left, w-right, y(v), y(v))
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", left-6, y(v)+4, num(v))
	}
	for i, n := range sizes {
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", x(i), h-bottom+18, commas(int64(n)))
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">incidents (log scale)</text>`+"\n", (w+left)/2, h-bottom+36)
	fmt.Fprintf(&b, `<text x="14" y="%d" transform="rotate(-90 14 %d)" text-anchor="middle">%s</text>`+"\n", (h)/2, h/2, c.unit)
	for si, s := range c.series {
		var pts []string
		for i, n := range sizes {
			if v, ok := r.Get(fmt.Sprintf("%s/%d", s.bench, n), s.unit); ok {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(i), y(v)))
				fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s"><title>%s: %s</title></circle>`+"\n", x(i), y(v), colors[si%len(colors)], s.label, num(v))
			}
		}
		if len(pts) > 1 {
			fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", colors[si%len(colors)], strings.Join(pts, " "))
		}
		ly := h - 18 + 0*si
		lx := left + si*280
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="12" height="4" fill="%s"/><text x="%d" y="%d">%s</text>`+"\n", lx, ly-4, colors[si%len(colors)], lx+18, ly, s.label)
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// niceCeil rounds up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}
