#!/usr/bin/env python3
"""Plots a `kvwire-bench fidelity --json` file: KL, top-1 agreement, retrieval and attention
error against the kept budget, one line per method. Usage: plot_fidelity.py RESULTS.json OUT.png"""
import json
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PANELS = [("kl", "KL(full || compressed) per token", "log"),
          ("top1_agreement", "top-1 agreement", "linear"),
          ("retrieval_rel", "retrieval, relative to full cache", "linear"),
          ("attn_rel_err", "attention-output relative error", "log")]


def main(path, out):
    with open(path) as f:
        data = json.load(f)
    by_method = defaultdict(list)
    for r in data["results"]:
        by_method[r["method"]].append(r)
    fig, axes = plt.subplots(2, 2, figsize=(14, 10))
    for ax, (key, title, scale) in zip(axes.flat, PANELS):
        for method, rows in sorted(by_method.items()):
            rows = sorted(rows, key=lambda r: r["budget"])
            pts = [(r["budget"], r[key]) for r in rows if r[key] is not None and
                   (scale != "log" or r[key] > 0)]
            if not pts:
                continue
            default = method == data["default_method"]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-" if default else ".--",
                    linewidth=2.5 if default else 1, label=method + (" (default)" if default else ""))
        ax.set(xlabel="kept fraction (budget)", title=title, yscale=scale)
        ax.grid(True, alpha=0.3)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"kvwire fidelity: contexts {data['contexts']} tokens, "
                 f"{data['continuation_tokens']} continuation tokens, "
                 f"{data['retrieval_tasks']} retrieval tasks")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
