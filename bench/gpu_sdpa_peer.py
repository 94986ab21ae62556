#!/usr/bin/env python3
"""Unbiased fused attention peer for `kvwire-bench gpu`.

Times one decode step (one query token, every layer, distinct per-layer K/V so nothing stays in
L2) of torch.nn.functional.scaled_dot_product_attention with grouped KV heads, for the same model
shapes and cache lengths the bench uses: in fp32 like kvwire's cache (the comparison), and in
bf16 for information (half the bytes; torch's flash kernels). Writes one tab-separated line per
(model, cache, dtype): model, cache, dtype, median milliseconds, how GQA was run ("enable_gqa",
or "expanded" on a torch without it: K/V repeated per query head before timing, which reads G
times the bytes). Exits 3 when torch or a CUDA device is missing, so the bench can record why
there is no comparison.
"""
import argparse
import sys

SHAPES = {  # name: (layers, query heads, KV heads, head dim), as in bench/gpu.cc
    "smollm2": (30, 9, 3, 64),
    "llama3_8b": (32, 32, 8, 128),
}
WARMUPS = 3


def step_fn(torch, sdpa, dtype, layers, heads, kv_heads, dim, cache):
    """Returns (a callable running one decode step over all layers, the GQA mode)."""
    dev = torch.device("cuda")
    q = torch.randn(1, heads, 1, dim, device=dev, dtype=dtype)
    k0 = torch.randn(1, kv_heads, cache, dim, device=dev, dtype=dtype)
    v0 = torch.randn(1, kv_heads, cache, dim, device=dev, dtype=dtype)
    group = heads // kv_heads
    mode = "enable_gqa"
    try:
        sdpa(q, k0, v0, enable_gqa=group > 1)
    except TypeError:
        mode = "expanded"
        k0 = k0.repeat_interleave(group, dim=1)
        v0 = v0.repeat_interleave(group, dim=1)
    ks = [k0.clone() for _ in range(layers)]
    vs = [v0.clone() for _ in range(layers)]
    del k0, v0

    def run():
        for k, v in zip(ks, vs):
            if mode == "enable_gqa":
                sdpa(q, k, v, enable_gqa=group > 1)
            else:
                sdpa(q, k, v)

    return run, mode


def median_ms(torch, run, repeats):
    start = torch.cuda.Event(enable_timing=True)
    stop = torch.cuda.Event(enable_timing=True)
    for _ in range(WARMUPS):
        run()
    times = []
    for _ in range(repeats):
        start.record()
        run()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    times.sort()
    return times[len(times) // 2]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--caches", default="1024,4096,16384,32768")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    try:
        import torch
        import torch.nn.functional as F
    except ImportError as e:
        print(f"gpu_sdpa_peer: torch is not installed ({e})", file=sys.stderr)
        return 3
    if not torch.cuda.is_available():
        print("gpu_sdpa_peer: torch sees no CUDA device", file=sys.stderr)
        return 3
    caches = [int(c) for c in args.caches.split(",") if c]
    rows = []
    with torch.inference_mode():
        for name, (layers, heads, kv_heads, dim) in SHAPES.items():
            for cache in caches:
                for dtype in (torch.float32, torch.bfloat16):
                    run, mode = step_fn(torch, F.scaled_dot_product_attention, dtype, layers,
                                        heads, kv_heads, dim, cache)
                    ms = median_ms(torch, run, args.repeats)
                    dname = str(dtype).replace("torch.", "")
                    rows.append(f"{name}\t{cache}\t{dname}\t{ms:.6f}\t{mode}")
                    del run
                    torch.cuda.empty_cache()
    with open(args.out, "w") as f:
        f.write("\n".join(rows) + "\n")
    print(f"gpu_sdpa_peer: {len(rows)} shapes timed with torch {torch.__version__} on "
          f"{torch.cuda.get_device_name()}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
