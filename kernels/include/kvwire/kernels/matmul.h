// kvwire/kernels/matmul.h — products of a (possibly quantized) weight matrix with fp32
// activations, working directly on GGML blocks.
//
// W is `rows` x `cols`, row-major, each row RowBytes(type, cols) bytes (the GGUF layout of a
// [cols, rows] tensor: ne0 = cols is the contiguous dimension). x is fp32 [n_tokens][cols],
// y is fp32 [n_tokens][rows]: y[t][r] = sum_c W[r][c] * x[t][c].
//
// Few tokens (decode) use fused dequantize+dot per row, rows split across the pool. Many tokens
// (prefill) dequantize W in row tiles to fp32 and multiply with BLAS sgemm, one single-threaded
// sgemm per pool chunk: the first such call sets OpenBLAS to one thread for the whole process so
// its own threads do not fight the pool for the cores.
//
// Thread-safety: reentrant; uses thread-local scratch. Errors: none (cols must be a multiple of
// the block size, pointers must not alias).
#ifndef KVWIRE_KERNELS_MATMUL_H_
#define KVWIRE_KERNELS_MATMUL_H_

#include <cstdint>

#include "kvwire/kernels/quant.h"
#include "kvwire/kernels/thread_pool.h"

namespace kvwire::kernels {

struct WeightView {
  QuantType type = QuantType::kF32;
  const void* data = nullptr;  // rows * RowBytes(type, cols) bytes
  int64_t rows = 0;
  int64_t cols = 0;
};

void MatMul(const WeightView& w, const float* x, int64_t n_tokens, float* y, ThreadPool* pool);

// Number of tokens from which MatMul switches from fused dot products to dequantize + sgemm.
inline constexpr int64_t kGemmMinTokens = 8;

}  // namespace kvwire::kernels

#endif  // KVWIRE_KERNELS_MATMUL_H_
