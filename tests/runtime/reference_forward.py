#!/usr/bin/env python3
"""Independent Llama forward in numpy, compared against kvwire's C++ runtime.

Weights are dequantized with the `gguf` package's own quantization code
(gguf.quants.dequantize), not kvwire's. The forward follows the Llama definition: RMSNorm,
Q/K/V projections, RoPE, causal grouped-query attention, SwiGLU FFN, tied or separate output
head. For GGUF arch `llama` the converter has permuted the Q/K rows so that RoPE rotates
adjacent pairs (2i, 2i+1); arch `qwen2` rotates (i, i + d/2).

For each fixed prompt (token ids) it runs `kvwire-dump-logits` and asserts that the arg-max token
is identical at every position and the largest absolute logit difference is below --tolerance.
With --tiny TOOL it instead checks random-weight tiny models written by `kvwire-tiny-model` in
every quantization type kvwire can write (weights and embeddings), llama and qwen2 arch: this pins
kvwire's dequantizers against gguf's for the types the real model does not use.
Exit codes: 0 pass, 1 mismatch, 77 skipped (no model / no Python packages).
"""
import argparse
import os
import subprocess
import sys
import tempfile
import types

SKIP = 77

# Fixed prompts as token ids of the SmolLM2 vocabulary: "The capital of France is Paris. The
# capital of Germany is", "Once upon a time, there was a little girl who lived in a village near
# the forest", and a ~120-token mix of both (longer positions).
PROMPT_A = [504, 3575, 282, 4649, 314, 7042, 1673, 378, 3575, 282, 4521, 314]
PROMPT_B = [6403, 1980, 253, 655, 3297, 665, 436, 253, 1838, 8180, 617, 4161, 281, 253, 6560,
            2141, 260, 3150]
PROMPT_C = [1] + (PROMPT_A + PROMPT_B) * 4


def import_packages():
    # gguf 0.10 imports sentencepiece for its vocab helpers, which this script does not use.
    sys.modules.setdefault("sentencepiece", types.SimpleNamespace(SentencePieceProcessor=None))
    import numpy
    import gguf
    return numpy, gguf


class Reference:
    def __init__(self, path, np, gguf):
        self.np = np
        reader = gguf.GGUFReader(path)
        self.fields = reader.fields
        arch = self.field("general.architecture")
        self.arch = arch
        p = arch + "."
        self.n_layers = self.field(p + "block_count")
        self.n_heads = self.field(p + "attention.head_count")
        self.n_kv = self.field(p + "attention.head_count_kv")
        self.theta = self.field(p + "rope.freq_base")
        self.eps = self.field(p + "attention.layer_norm_rms_epsilon")
        self.w = {}
        for t in reader.tensors:
            data = gguf.quants.dequantize(t.data, t.tensor_type)
            self.w[t.name] = np.asarray(data, dtype=np.float32).reshape(
                [int(d) for d in reversed(t.shape)])
        self.hidden = self.w["token_embd.weight"].shape[1]
        self.head_dim = self.hidden // self.n_heads

    def field(self, key):
        f = self.fields[key]
        part = f.parts[f.data[0]]
        if f.types[0] == 8:  # string
            return bytes(part).decode()
        return part.tolist()[0]

    def rms(self, x, weight):
        np = self.np
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * weight

    def rope(self, x, positions):
        # x [L][heads][d]: rotate pairs as complex numbers z * e^{i pos theta^(-2i/d)}.
        np = self.np
        d = x.shape[-1]
        freq = self.theta ** (-np.arange(0, d, 2, dtype=np.float64) / d)
        angle = np.outer(positions, freq)[:, None, :]
        if self.arch == "qwen2":
            z = x[..., : d // 2] + 1j * x[..., d // 2:]
        else:
            z = x[..., 0::2] + 1j * x[..., 1::2]
        z = z * np.exp(1j * angle)
        out = np.empty_like(x)
        if self.arch == "qwen2":
            out[..., : d // 2], out[..., d // 2:] = z.real, z.imag
        else:
            out[..., 0::2], out[..., 1::2] = z.real, z.imag
        return out

    def attention(self, q, k, v):
        np = self.np
        L, d = q.shape[0], self.head_dim
        group = self.n_heads // self.n_kv
        k = np.repeat(k, group, axis=1)
        v = np.repeat(v, group, axis=1)
        scores = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(d)
        scores = scores + np.triu(np.full((L, L), -np.inf), k=1)
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        scores /= scores.sum(axis=-1, keepdims=True)
        return np.einsum("hqk,khd->qhd", scores, v).reshape(L, -1)

    def layer(self, i, x, positions):
        np = self.np
        w = lambda name: self.w[f"blk.{i}.{name}"]
        b = lambda name: self.w.get(f"blk.{i}.{name}", 0.0)
        L, d = x.shape[0], self.head_dim
        h = self.rms(x, w("attn_norm.weight"))
        q = (h @ w("attn_q.weight").T + b("attn_q.bias")).reshape(L, self.n_heads, d)
        k = (h @ w("attn_k.weight").T + b("attn_k.bias")).reshape(L, self.n_kv, d)
        v = (h @ w("attn_v.weight").T + b("attn_v.bias")).reshape(L, self.n_kv, d)
        q, k = self.rope(q, positions), self.rope(k, positions)
        x = x + self.attention(q, k, v) @ w("attn_output.weight").T
        h = self.rms(x, w("ffn_norm.weight"))
        gate, up = h @ w("ffn_gate.weight").T, h @ w("ffn_up.weight").T
        return x + (gate / (1.0 + np.exp(-gate)) * up) @ w("ffn_down.weight").T

    def logits(self, ids):
        np = self.np
        x = self.w["token_embd.weight"][ids].astype(np.float64)
        positions = np.arange(len(ids))
        for i in range(self.n_layers):
            x = self.layer(i, x, positions)
        head = self.w.get("output.weight", self.w["token_embd.weight"])
        return self.rms(x, self.w["output_norm.weight"]) @ head.T


def run_kvwire(dump, model, ids, np):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "logits.f32")
        subprocess.run([dump, "--model", model, "--ids", ",".join(map(str, ids)), "--out", out],
                       check=True, stdout=subprocess.DEVNULL)
        return np.fromfile(out, dtype=np.float32).reshape(len(ids), -1)


# (weights, embedding, arch, untied) for --tiny.
TINY_MODELS = [("Q4_0", "F16", "llama", False), ("Q4_1", "Q8_0", "llama", True),
               ("Q5_0", "BF16", "llama", False), ("Q5_1", "F32", "llama", False),
               ("Q8_0", "Q4_K", "llama", True), ("Q4_K", "Q6_K", "llama", False),
               ("Q6_K", "Q8_0", "qwen2", False), ("F16", "Q5_0", "qwen2", True)]
TINY_PROMPT = [1] + [3 + (i * 37 + 11) % 256 for i in range(40)]


def compare(name, want, got, tolerance, np):
    diff = float(np.max(np.abs(want - got)))
    mismatched = [int(p) for p in np.nonzero(want.argmax(axis=-1) != got.argmax(axis=-1))[0]]
    ok = diff < tolerance and not mismatched
    print(f"{name}: {want.shape[0]} tokens, max |logit diff| {diff:.2e} (tolerance {tolerance}), "
          f"top-1 mismatches at {mismatched or 'none'} -> {'ok' if ok else 'FAIL'}")
    return ok


def check_tiny(args, np, gguf):
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for weights, embedding, arch, untied in TINY_MODELS:
            path = os.path.join(tmp, f"tiny-{weights}-{embedding}.gguf")
            cmd = [args.tiny, "--weights", weights, "--embedding", embedding, "--arch", arch,
                   "--out", path] + (["--untied"] if untied else [])
            subprocess.run(cmd, check=True)
            want = Reference(path, np, gguf).logits(TINY_PROMPT)
            got = run_kvwire(args.dump, path, TINY_PROMPT, np)
            ok &= compare(f"tiny {arch} {weights}/{embedding}", want, got, args.tolerance, np)
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dump", required=True, help="path of kvwire-dump-logits")
    ap.add_argument("--model", default=os.environ.get("KVWIRE_MODEL", ""))
    ap.add_argument("--tiny", help="path of kvwire-tiny-model: check tiny models instead")
    ap.add_argument("--tolerance", type=float, default=2e-3,
                    help="max |logit difference| allowed (logits are O(10-30))")
    args = ap.parse_args()
    if args.tiny:
        try:
            np, gguf = import_packages()
        except ImportError as e:
            print(f"SKIP: python packages missing ({e}); run scripts/install-deps")
            return SKIP
        return check_tiny(args, np, gguf)
    if not args.model or not os.path.isfile(args.model):
        print("SKIP: set KVWIRE_MODEL to the SmolLM2 GGUF (scripts/fetch-model prints it)")
        return SKIP
    try:
        np, gguf = import_packages()
    except ImportError as e:
        print(f"SKIP: python packages missing ({e}); run scripts/install-deps")
        return SKIP
    ref = Reference(args.model, np, gguf)
    failed = False
    for name, ids in (("A", PROMPT_A), ("B", PROMPT_B), ("C", PROMPT_C)):
        got = run_kvwire(args.dump, args.model, ids, np)
        failed |= not compare(f"prompt {name}", ref.logits(ids), got, args.tolerance, np)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
