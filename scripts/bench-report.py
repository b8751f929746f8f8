#!/usr/bin/env python3
"""Table and SVG plot for scripts/bench.sh (stdlib only; the SVG is written by hand).

usage: bench-report.py RESULTS SVG "SYSTEMS" "FLOWS"
RESULTS lines: system flows round offered_pps delivered_pps sent received
"""
import statistics
import sys

res, svg_path, systems, flows = sys.argv[1], sys.argv[2], sys.argv[3].split(), [int(f) for f in sys.argv[4].split()]
runs = {}
for line in open(res):
    f = line.split()
    if len(f) >= 5:
        runs.setdefault((f[0], int(f[1])), []).append((int(f[3] or 0), int(f[4])))

def med(s, n):
    r = runs.get((s, n))
    return statistics.median(d for _, d in r) if r else None

print(f"{'system':<10} {'flows':>7} {'delivered Mpps median':>22} {'min-max':>15} {'offered Mpps':>13} {'vs flowpath':>12}")
for n in flows:
    base = med("flowpath", n)
    for s in systems:
        r = runs.get((s, n))
        if not r:
            print(f"{s:<10} {n:>7} {'(no result)':>22}")
            continue
        d = [x for _, x in r]
        m = statistics.median(d)
        off = statistics.median(o for o, _ in r)
        ratio = f"{m / base:.2f}x" if base else "-"
        print(f"{s:<10} {n:>7} {m / 1e6:>22.3f} {min(d) / 1e6:>7.3f}-{max(d) / 1e6:.3f} {off / 1e6:>13.3f} {ratio:>12}")

# Throughput vs flow count, one polyline per system, min-max as error bars.
W, H, L, B, TOP, RGT = 640, 360, 60, 40, 30, 130
ymax = max([max(x for _, x in r) for r in runs.values()] + [1]) / 1e6
ymax = max(0.1, round(ymax * 1.15 + 0.05, 1))
colors = {"xdp_fwd": "#888888", "flowpath": "#1f77b4", "ovs": "#d62728", "kernel": "#2ca02c"}
def xp(i):
    return L + (W - L - RGT) * (i + 0.5) / len(flows)
def yp(v):
    return H - B - (H - B - TOP) * v / ymax
o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
     f'<rect width="{W}" height="{H}" fill="white"/>',
     f'<text x="{L}" y="18" font-size="14">Delivered Mpps on veth (median of rounds; bars: min-max)</text>']
for k in range(6):
    v = ymax * k / 5
    o.append(f'<line x1="{L}" x2="{W - RGT}" y1="{yp(v):.1f}" y2="{yp(v):.1f}" stroke="#ddd"/>')
    o.append(f'<text x="{L - 6}" y="{yp(v) + 4:.1f}" text-anchor="end">{v:.2f}</text>')
for i, n in enumerate(flows):
    o.append(f'<text x="{xp(i):.1f}" y="{H - B + 18}" text-anchor="middle">{n:,} flows</text>')
for j, s in enumerate(systems):
    c = colors.get(s, "#000")
    pts = []
    for i, n in enumerate(flows):
        r = runs.get((s, n))
        if not r:
            continue
        d = [x / 1e6 for _, x in r]
        x, y = xp(i), yp(statistics.median(d))
        pts.append(f"{x:.1f},{y:.1f}")
        o.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{yp(min(d)):.1f}" y2="{yp(max(d)):.1f}" stroke="{c}"/>')
        o.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{c}"/>')
    if pts:
        o.append(f'<polyline points="{" ".join(pts)}" fill="none" stroke="{c}" stroke-width="2"/>')
    o.append(f'<rect x="{W - RGT + 15}" y="{TOP + 20 * j}" width="12" height="12" fill="{c}"/>')
    o.append(f'<text x="{W - RGT + 32}" y="{TOP + 20 * j + 11}">{s}</text>')
o.append("</svg>")
open(svg_path, "w").write("\n".join(o) + "\n")
print(f"plot: {svg_path}")
