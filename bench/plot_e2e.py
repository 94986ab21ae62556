#!/usr/bin/env python3
"""Plots `kvwire-bench e2e --json` files. Usage: plot_e2e.py RESULTS.json OUT.png [MORE.json ...]

Several files (runs of different topologies) are plotted together; a (topology, mode) measured
in a later file replaces the same one from an earlier file.

Writes three figures: OUT.png (median TTFT split into its parts, per budget, at the longest
prompt of each mode and topology), OUT_speedup.png (TTFT speed-up over budget 1 against prompt
length) and OUT_concurrency.png (throughput and TTFT percentiles against requests in flight)."""
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PARTS = [("prefill_ms", "prefill compute"), ("compress_ms", "compression"),
         ("pack_ms", "packing"), ("transfer_ms", "transfer (blocked)"),
         ("other_ms", "other (routing, install tail, decode)")]


def ordered(values):
    seen = []
    for v in values:
        if v not in seen:
            seen.append(v)
    return seen


def label_of(mode, data):
    if mode == "synthetic":
        return f"synthetic KV {data.get('synthetic_kv', '')}"
    return os.path.basename(data.get("model", "model")).replace(".gguf", "")


def breakdown(data, out):
    rows = data["summary"]
    modes = ordered(r["mode"] for r in rows)
    topologies = ordered(r["topology"] for r in rows)
    fig, axes = plt.subplots(len(modes), len(topologies), squeeze=False,
                             figsize=(4.2 * len(topologies), 3.8 * len(modes)))
    for i, mode in enumerate(modes):
        for j, topo in enumerate(topologies):
            ax = axes[i][j]
            cell = [r for r in rows if r["mode"] == mode and r["topology"] == topo]
            if not cell:
                ax.axis("off")
                continue
            longest = max(r["target_tokens"] for r in cell)
            cell = sorted((r for r in cell if r["target_tokens"] == longest),
                          key=lambda r: r["budget"])
            x = list(range(len(cell)))
            bottom = [0.0] * len(cell)
            for key, name in PARTS:
                vals = [max(r[key] or 0.0, 0.0) for r in cell]
                ax.bar(x, vals, bottom=bottom, label=name)
                bottom = [b + v for b, v in zip(bottom, vals)]
            for xi, r in zip(x, cell):
                ax.text(xi, r["ttft_ms"], f"{r['ttft_ms']:.0f}", ha="center", va="bottom",
                        fontsize=8)
            ax.set_xticks(x, [f"{r['budget']:g}" for r in cell])
            ax.set(xlabel="budget (kept fraction)", ylabel="median TTFT, ms",
                   title=f"{topo}: {label_of(mode, data)}\n{cell[0]['prompt_tokens']:.0f} tokens")
            ax.grid(True, axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"kvwire end to end: TTFT by part ({data['reps']} repetitions, medians)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def speedup(data, out):
    rows = [r for r in data["summary"] if r["budget"] < 1]
    modes = ordered(r["mode"] for r in rows)
    fig, axes = plt.subplots(1, max(len(modes), 1), squeeze=False,
                             figsize=(6 * max(len(modes), 1), 4.2))
    for ax, mode in zip(axes[0], modes):
        for topo in ordered(r["topology"] for r in rows if r["mode"] == mode):
            for budget in sorted({r["budget"] for r in rows if r["mode"] == mode}):
                pts = sorted((r["prompt_tokens"], r["speedup_vs_uncompressed"]) for r in rows
                             if r["mode"] == mode and r["topology"] == topo
                             and r["budget"] == budget and r["speedup_vs_uncompressed"])
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-",
                            label=f"{topo}, budget {budget:g}")
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set(xscale="log", xlabel="prompt tokens", ylabel="TTFT(budget 1) / TTFT(budget)",
               title=f"speed-up over uncompressed: {label_of(mode, data)}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def concurrency(data, out):
    rows = data["concurrency"]
    if not rows:
        return
    fig, (thr, lat) = plt.subplots(1, 2, figsize=(12, 4.2))
    for topo in ordered(r["topology"] for r in rows):
        pts = sorted((r for r in rows if r["topology"] == topo), key=lambda r: r["in_flight"])
        x = [r["in_flight"] for r in pts]
        thr.plot(x, [r["throughput_rps"] for r in pts], "o-", label=topo)
        lat.plot(x, [r["ttft_p50_ms"] for r in pts], "o-", label=f"{topo} p50")
        lat.plot(x, [r["ttft_p99_ms"] for r in pts], "^:", label=f"{topo} p99")
        for r in pts:
            if r["lost"]:
                thr.annotate(f"lost {r['lost']}", (r["in_flight"], r["throughput_rps"]))
    thr.set(xscale="log", xlabel="requests in flight", ylabel="completed requests / s",
            title="throughput")
    lat.set(xscale="log", yscale="log", xlabel="requests in flight", ylabel="TTFT, ms",
            title="TTFT")
    for ax in (thr, lat):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    r0 = rows[0]
    fig.suptitle(f"concurrency sweep: {r0['prompt_tokens']}-token prompts, budget {r0['budget']:g}, "
                 f"lost requests: {sum(r['lost'] for r in rows)}")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def load(paths):
    data = None
    for path in paths:
        with open(path) as f:
            more = json.load(f)
        if data is None:
            data = more
            continue
        for key in ("summary", "concurrency", "blocks"):
            newer = {(r["topology"], r["mode"]) for r in more[key]}
            data[key] = [r for r in data[key] if (r["topology"], r["mode"]) not in newer]
            data[key] += more[key]
    return data


def main(path, out, more):
    data = load([path] + more)
    stem = out[:-4] if out.endswith(".png") else out
    breakdown(data, out)
    speedup(data, f"{stem}_speedup.png")
    concurrency(data, f"{stem}_concurrency.png")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
