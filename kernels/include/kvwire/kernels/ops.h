// kvwire/kernels/ops.h — elementwise and row operations of a Llama block.
//
// All buffers are fp32 row-major. Thread-safety: pure functions. Errors: none.
#ifndef KVWIRE_KERNELS_OPS_H_
#define KVWIRE_KERNELS_OPS_H_

#include <cstdint>

namespace kvwire::kernels {

// y[r] = x[r] / sqrt(mean(x[r]^2) + eps) * weight, for rows r of x fp32 [n_rows][n].
// y may equal x.
void RmsNorm(const float* x, const float* weight, int64_t n_rows, int64_t n, float eps, float* y);

// How RoPE pairs the dimensions of a head. kAdjacent rotates (2i, 2i+1) — llama.cpp's "normal"
// mode, right for GGUF arch `llama` whose converter permuted the Q/K rows. kHalves rotates
// (i, i + d/2) — the NeoX/HF rotate_half layout, used by arch `qwen2`.
enum class RopeStyle { kAdjacent, kHalves };

// Rotates x fp32 [n_tokens][n_heads][head_dim] in place; token t is at positions[t]. Pair i
// (i < head_dim/2) turns by positions[t] * theta^(-2i/head_dim) radians.
void Rope(float* x, int64_t n_tokens, int n_heads, int head_dim, const int32_t* positions,
          float theta, RopeStyle style);

// In-place softmax of x fp32 [n] (max-shifted).
void Softmax(float* x, int64_t n);

// out[i] = silu(gate[i]) * up[i]; out may alias gate.
void SwiGlu(const float* gate, const float* up, int64_t n, float* out);

// y[i] += x[i].
void AddInPlace(float* y, const float* x, int64_t n);

// sum_i a[i] * b[i] (vectorised with several accumulators).
float Dot(const float* a, const float* b, int64_t n);

}  // namespace kvwire::kernels

#endif  // KVWIRE_KERNELS_OPS_H_
