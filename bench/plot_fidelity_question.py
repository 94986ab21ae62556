#!/usr/bin/env python3
"""Plots a `kvwire-bench fidelity-question --json` file: answer KL, top-1 agreement and
retrieval against the kept budget, one line per method (query-agnostic scorers solid).
Usage: plot_fidelity_question.py RESULTS.json OUT.png"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PANELS = [("kl", "answer KL(full || compressed) per token", "log"),
          ("top1_agreement", "answer top-1 agreement", "linear"),
          ("retrieval_rel", "retrieval, relative to full cache", "linear")]


def series(results):
    """method -> (budgets, rows) with rows sorted by budget."""
    out = {}
    for method in sorted({r["method"] for r in results}):
        rows = sorted((r for r in results if r["method"] == method), key=lambda r: r["budget"])
        out[method] = rows
    return out


def main(path, out):
    with open(path) as f:
        data = json.load(f)
    lines = series(data["results"])
    fig, axes = plt.subplots(1, 3, figsize=(18, 6))
    for ax, (key, title, scale) in zip(axes, PANELS):
        for method, rows in lines.items():
            keep = [r for r in rows if r[key] is not None and (scale != "log" or r[key] > 0)]
            agnostic = method.startswith(("recon", "gate"))
            ax.plot([r["budget"] for r in keep], [r[key] for r in keep],
                    "o-" if agnostic else ".--", linewidth=2 if agnostic else 1, label=method)
        ax.set(xlabel="kept fraction (budget)", title=title, yscale=scale)
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=7)
    ratios = [c["recon_over_prefill"] for c in data["cost"]]
    fig.suptitle(f"kvwire, question after compression: documents {data['contexts']} tokens, "
                 f"{data['episodes']} episodes ({data['retrieval_tasks']} retrieval); "
                 f"recon costs {sum(ratios) / len(ratios):.2f}x the prefill")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
