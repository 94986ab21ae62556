#!/usr/bin/env python3
"""Plots a `kvwire-bench transfer --json` file: bandwidth and latency against payload size,
kvwire beside ucx_perftest. Usage: plot_transfer.py RESULTS.json OUT.png"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(path, out):
    with open(path) as f:
        data = json.load(f)
    rows = data["results"]
    sizes = [r["size_bytes"] for r in rows]
    fig, (bw, lat) = plt.subplots(1, 2, figsize=(12, 4.5))
    bw.plot(sizes, [r["gbps"] for r in rows], "o-", label="kvwire")
    bw.plot(sizes, [r["perftest_gbps"] for r in rows], "s--", label="ucx_perftest tag_bw")
    bw.set(xscale="log", xlabel="payload bytes", ylabel="GB/s (decimal)", title="bandwidth")
    lat.plot(sizes, [r["p50_us"] for r in rows], "o-", label="kvwire p50 (round trip)")
    lat.plot(sizes, [r["p99_us"] for r in rows], "^:", label="kvwire p99")
    lat.plot(sizes, [2 * r["perftest_lat_us"] if r["perftest_lat_us"] is not None else None
                     for r in rows], "s--", label="ucx_perftest tag_lat x2 (round trip)")
    lat.set(xscale="log", yscale="log", xlabel="payload bytes", ylabel="µs", title="latency")
    for ax in (bw, lat):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(f"kvwire transfer: {data['transport']} over {data['tls']} "
                 f"(UCX_TLS={data['ucx_tls']})")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
