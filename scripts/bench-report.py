#!/usr/bin/env python3
"""Tables and SVG plot for scripts/bench.sh (stdlib only; the SVG is written by hand).

usage: bench-report.py OUT "SYSTEMS" "FLOWS" "CONN_SYSTEMS"
OUT/results.txt lines:  system flows round offered delivered sent received tracked zero_loss trials
OUT/connrate.txt lines: system round conns_per_s attempted established failed timeouts p50_us p99_us accepted
Writes OUT/bench.svg (the headline rate against flow count) and prints
Markdown tables (median, min-max, ratio of medians to flowpath's).
"""
import statistics
import sys

out, systems, flows = sys.argv[1], sys.argv[2].split(), [int(f) for f in sys.argv[3].split()]
conn_systems = sys.argv[4].split() if len(sys.argv) > 4 else []


def num(x):
    try:
        return int(x)
    except ValueError:
        return None


runs = {}
for line in open(f"{out}/results.txt"):
    f = line.split()
    if len(f) >= 5 and not line.startswith("#"):
        runs.setdefault((f[0], int(f[1])), []).append(
            {"offered": num(f[3]) or 0, "delivered": num(f[4]) or 0,
             "tracked": num(f[7]) if len(f) > 7 else None,
             "zero_loss": num(f[8]) if len(f) > 8 else None})

have_zl = any(r["zero_loss"] is not None for rs in runs.values() for r in rs)


def series(s, n, key):
    return [r[key] for r in runs.get((s, n), []) if r[key] is not None]


def table(key, title):
    print(f"\n{title}\n")
    print("| system | flows | Mpps (median) | min-max | vs flowpath | offered Mpps | tracked conns |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for n in flows:
        base = series("flowpath", n, key)
        base = statistics.median(base) if base else None
        for s in systems:
            d = series(s, n, key)
            if not d:
                print(f"| {s} | {n:,} | (no result) | | | | |")
                continue
            m = statistics.median(d)
            off = statistics.median(series(s, n, "offered"))
            tr = series(s, n, "tracked")
            tr = f"{min(tr):,}-{max(tr):,}" if tr else "-"
            ratio = f"{m / base:.2f}x" if base else "-"
            print(f"| {s} | {n:,} | {m / 1e6:.3f} | {min(d) / 1e6:.3f}-{max(d) / 1e6:.3f} | {ratio} | {off / 1e6:.3f} | {tr} |")


if have_zl:
    table("zero_loss", "Zero-loss throughput (RFC 2544 binary search):")
table("delivered", "Offered vs delivered (generator at full rate):")

conns = {}
try:
    for line in open(f"{out}/connrate.txt"):
        f = line.split()
        if len(f) >= 10 and not line.startswith("#"):
            conns.setdefault(f[0], []).append([num(x) or 0 for x in f[2:10]])
except FileNotFoundError:
    pass
if conns:
    print("\nTCP connection setup rate (RFC 9693-style):\n")
    print("| system | handshakes/s (median) | min-max | vs flowpath | failed+timeouts | p50 / p99 connect latency (us) |")
    print("|---|---:|---:|---:|---:|---:|")
    base = statistics.median(r[0] for r in conns["flowpath"]) if "flowpath" in conns else None
    for s in conn_systems:
        r = conns.get(s)
        if not r:
            print(f"| {s} | (no result) | | | | |")
            continue
        rate = [x[0] for x in r]
        m = statistics.median(rate)
        ratio = f"{m / base:.2f}x" if base else "-"
        bad = sum(x[3] + x[4] for x in r)
        p50 = statistics.median(x[5] for x in r)
        p99 = statistics.median(x[6] for x in r)
        print(f"| {s} | {m:,.0f} | {min(rate):,}-{max(rate):,} | {ratio} | {bad:,} | {p50:,.0f} / {p99:,.0f} |")

# The headline rate vs flow count, one polyline per system, min-max as bars.
key = "zero_loss" if have_zl else "delivered"
W, H, L, B, TOP, RGT = 640, 360, 60, 40, 30, 130
vals = [v for (s, n) in runs for v in series(s, n, key)]
ymax = max(vals + [1]) / 1e6
ymax = max(0.1, round(ymax * 1.15 + 0.05, 1))
colors = {"xdp_fwd": "#888888", "flowpath": "#1f77b4", "ovs": "#d62728", "kernel": "#2ca02c"}


def xp(i):
    return L + (W - L - RGT) * (i + 0.5) / len(flows)


def yp(v):
    return H - B - (H - B - TOP) * v / ymax


what = "Zero-loss Mpps (RFC 2544)" if have_zl else "Delivered Mpps"
o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
     f'<rect width="{W}" height="{H}" fill="white"/>',
     f'<text x="{L}" y="18" font-size="14">{what} on veth (median of rounds; bars: min-max)</text>']
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
        d = [x / 1e6 for x in series(s, n, key)]
        if not d:
            continue
        x, y = xp(i), yp(statistics.median(d))
        pts.append(f"{x:.1f},{y:.1f}")
        o.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{yp(min(d)):.1f}" y2="{yp(max(d)):.1f}" stroke="{c}"/>')
        o.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{c}"/>')
    if pts:
        o.append(f'<polyline points="{" ".join(pts)}" fill="none" stroke="{c}" stroke-width="2"/>')
    o.append(f'<rect x="{W - RGT + 15}" y="{TOP + 20 * j}" width="12" height="12" fill="{c}"/>')
    o.append(f'<text x="{W - RGT + 32}" y="{TOP + 20 * j + 11}">{s}</text>')
o.append("</svg>")
open(f"{out}/bench.svg", "w").write("\n".join(o) + "\n")
print(f"\nplot: {out}/bench.svg")
