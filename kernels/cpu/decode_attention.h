// kernels/cpu/decode_attention.h — the few-queries path of kernels::Attention (internal).
#ifndef KVWIRE_KERNELS_CPU_DECODE_ATTENTION_H_
#define KVWIRE_KERNELS_CPU_DECODE_ATTENTION_H_

#include "kvwire/kernels/attention.h"

namespace kvwire::kernels::internal {

// Same contract as kernels::Attention; efficient when n_queries is small.
void DecodeAttention(const AttentionShape& s, const float* q, const KvHeadView* kv, float* out,
                     ThreadPool* pool);

}  // namespace kvwire::kernels::internal

#endif  // KVWIRE_KERNELS_CPU_DECODE_ATTENTION_H_
