// Layer payloads assembled on the device. See pack.h.
#include <cuda_runtime.h>

#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/internal.h"
#include "kernels/cuda/pack.h"

namespace kvwire::kernels::cuda {
namespace {

using format::DType;

constexpr int kThreads = 256;

__device__ __forceinline__ void StoreU16(uint8_t* p, uint16_t v) {
  if ((reinterpret_cast<uintptr_t>(p) & 1) == 0) {
    *reinterpret_cast<uint16_t*>(p) = v;
  } else {
    p[0] = static_cast<uint8_t>(v);
    p[1] = static_cast<uint8_t>(v >> 8);
  }
}

__device__ __forceinline__ void StoreU32(uint8_t* p, uint32_t v) {
  if ((reinterpret_cast<uintptr_t>(p) & 3) == 0) {
    *reinterpret_cast<uint32_t*>(p) = v;
  } else {
    StoreU16(p, static_cast<uint16_t>(v));
    StoreU16(p + 2, static_cast<uint16_t>(v >> 16));
  }
}

// format's StoredScale: the fp16-rounded max/127, as a float.
__device__ __forceinline__ float StoredScale(float max_abs) {
  return __half2float(__ushort_as_half(internal::ToHalfBits(max_abs / 127.0f)));
}

__device__ __forceinline__ int8_t Quantize(float x, float scale) {
  if (scale == 0.0f) return 0;
  return static_cast<int8_t>(fminf(fmaxf(rintf(x / scale), -127.0f), 127.0f));
}

__device__ __forceinline__ void StoreFloat(uint8_t* dst, int64_t i, float v, DType t) {
  switch (t) {
    case DType::kF32:
      StoreU32(dst + 4 * i, __float_as_uint(v));
      break;
    case DType::kF16:
      StoreU16(dst + 2 * i, internal::ToHalfBits(v));
      break;
    default:
      StoreU16(dst + 2 * i, internal::ToBf16Bits(v));
      break;
  }
}

// The sections of one head that are plain conversions: positions, votes, and keys/values in a
// float dtype (for int8 layouts: the fp16 tail).
struct PlainJob {
  const int32_t* positions;
  const float* votes;
  const float* keys;
  const float* values;
  uint8_t *pos_dst, *vote_dst, *key_dst, *value_dst;
  int64_t count, kv_elems;
  DType vote_dtype, kv_dtype;
};

__global__ void PlainKernel(const PlainJob j) {
  const int64_t total = 2 * j.count + 2 * j.kv_elems;
  for (int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; t < total;
       t += int64_t{gridDim.x} * blockDim.x) {
    if (t < j.count) {
      StoreU32(j.pos_dst + 4 * t, static_cast<uint32_t>(j.positions[t]));
    } else if (t < 2 * j.count) {
      StoreFloat(j.vote_dst, t - j.count, j.votes[t - j.count], j.vote_dtype);
    } else if (t < 2 * j.count + j.kv_elems) {
      const int64_t i = t - 2 * j.count;
      StoreFloat(j.key_dst, i, j.keys[i], j.kv_dtype);
    } else {
      const int64_t i = t - 2 * j.count - j.kv_elems;
      StoreFloat(j.value_dst, i, j.values[i], j.kv_dtype);
    }
  }
}

// One thread per (key group, channel): the group's scale, then its entries of that channel.
__global__ void I8KeysKernel(const float* keys, int64_t q, int d, int group, uint8_t* qdst,
                             uint8_t* scale_dst) {
  const int64_t groups = (q + group - 1) / group;
  for (int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; t < groups * d;
       t += int64_t{gridDim.x} * blockDim.x) {
    const int64_t gi = t / d;
    const int c = static_cast<int>(t - gi * d);
    const int64_t i0 = gi * group, i1 = min(q, i0 + group);
    float m = 0.0f;
    for (int64_t i = i0; i < i1; ++i) m = fmaxf(m, fabsf(keys[i * d + c]));
    const float scale = StoredScale(m);
    StoreU16(scale_dst + 2 * t, internal::ToHalfBits(scale));
    for (int64_t i = i0; i < i1; ++i) {
      qdst[i * d + c] = static_cast<uint8_t>(Quantize(keys[i * d + c], scale));
    }
  }
}

// One warp per entry: its scale (max over channels), then the entry.
__global__ void I8ValuesKernel(const float* values, int64_t q, int d, uint8_t* qdst,
                               uint8_t* scale_dst) {
  const int64_t i = blockIdx.x * int64_t{blockDim.x / 32} + threadIdx.x / 32;
  if (i >= q) return;
  const int lane = threadIdx.x % 32;
  const float* row = values + i * d;
  float m = 0.0f;
  for (int c = lane; c < d; c += 32) m = fmaxf(m, fabsf(row[c]));
  const float scale = StoredScale(internal::WarpMax(m));
  if (lane == 0) StoreU16(scale_dst + 2 * i, internal::ToHalfBits(scale));
  for (int c = lane; c < d; c += 32)
    qdst[i * d + c] = static_cast<uint8_t>(Quantize(row[c], scale));
}

// Byte offsets of one head's sections, in payload order (format/messages.h).
struct HeadOffsets {
  uint64_t positions, votes, keys, key_scales, values, value_scales, tail_keys, tail_values, end;
};

HeadOffsets Layout(const format::LayerLayout& l, uint64_t at, uint32_t count, uint32_t tail) {
  const uint64_t d = l.head_dim, c = count;
  HeadOffsets o{};
  o.positions = at;
  o.votes = at + 4 * c;
  o.keys = o.votes + format::DTypeSize(l.vote_dtype) * c;
  if (l.kv_dtype != DType::kI8) {
    o.values = o.keys + format::DTypeSize(l.kv_dtype) * c * d;
    o.end = o.values + format::DTypeSize(l.kv_dtype) * c * d;
    return o;
  }
  const uint64_t q = c - tail;
  o.key_scales = o.keys + q * d;
  o.values = o.key_scales + 2 * ((q + l.quant_group - 1) / l.quant_group) * d;
  o.value_scales = o.values + q * d;
  o.tail_keys = o.value_scales + 2 * q;
  o.tail_values = o.tail_keys + 2 * uint64_t{tail} * d;
  o.end = o.tail_values + 2 * uint64_t{tail} * d;
  return o;
}

// The fixed fields and head table, little-endian as format::EncodeLayer writes them.
std::vector<uint8_t> Preamble(const format::LayerLayout& l) {
  std::vector<uint8_t> out(12 + 8 * l.counts.size());
  auto put = [&out](size_t at, auto v) { std::memcpy(out.data() + at, &v, sizeof(v)); };
  put(0, l.layer);
  put(4, static_cast<uint16_t>(l.counts.size()));
  put(6, l.head_dim);
  put(8, static_cast<uint8_t>(l.kv_dtype));
  put(9, static_cast<uint8_t>(l.vote_dtype));
  put(10, l.quant_group);
  for (size_t h = 0; h < l.counts.size(); ++h) {
    put(12 + 8 * h, l.counts[h]);
    put(16 + 8 * h, l.tails[h]);
  }
  return out;
}

absl::Status EncodeHead(Context& ctx, const format::LayerLayout& l, const DeviceHeadInput& in,
                        uint32_t count, uint32_t tail, const HeadOffsets& o, uint8_t* p) {
  const int d = l.head_dim;
  const bool i8 = l.kv_dtype == DType::kI8;
  const int64_t q = i8 ? count - tail : 0;
  PlainJob j{in.positions,
             in.log_votes,
             in.keys + q * d,
             in.values + q * d,
             p + o.positions,
             p + o.votes,
             p + (i8 ? o.tail_keys : o.keys),
             p + (i8 ? o.tail_values : o.values),
             count,
             int64_t{i8 ? tail : count} * d,
             l.vote_dtype,
             i8 ? DType::kF16 : l.kv_dtype};
  const int64_t total = 2 * j.count + 2 * j.kv_elems;
  if (total > 0) {
    PlainKernel<<<internal::GridFor(total, kThreads, ctx), kThreads, 0, ctx.stream()>>>(j);
    KVWIRE_RETURN_IF_ERROR(ctx.CheckLaunch("PlainKernel"));
  }
  if (q == 0) return absl::OkStatus();
  const int64_t key_threads = internal::CeilDiv(q, l.quant_group) * d;
  I8KeysKernel<<<internal::GridFor(key_threads, kThreads, ctx), kThreads, 0, ctx.stream()>>>(
      in.keys, q, d, l.quant_group, p + o.keys, p + o.key_scales);
  constexpr int kEntriesPerBlock = kThreads / 32;
  I8ValuesKernel<<<static_cast<unsigned>(internal::CeilDiv(q, kEntriesPerBlock)), kThreads, 0,
                   ctx.stream()>>>(in.values, q, d, p + o.values, p + o.value_scales);
  return ctx.CheckLaunch("I8KeysKernel/I8ValuesKernel");
}

}  // namespace

absl::StatusOr<uint64_t> EncodeLayer(Context& ctx, const format::LayerLayout& layout,
                                     absl::Span<const DeviceHeadInput> heads, uint8_t* payload,
                                     size_t capacity) {
  KVWIRE_ASSIGN_OR_RETURN(const uint64_t size, format::LayerPayloadSize(layout));
  if (heads.size() != layout.counts.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "EncodeLayer: ", heads.size(), " heads given, layout has ", layout.counts.size()));
  }
  if (size > capacity) {
    return absl::InvalidArgumentError(
        absl::StrCat("EncodeLayer: payload needs ", size, " bytes, buffer has ", capacity));
  }
  const std::vector<uint8_t> preamble = Preamble(layout);
  // Pageable source: the copy is staged before cudaMemcpyAsync returns, so `preamble` may go.
  KVWIRE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(payload, preamble.data(), preamble.size(),
                                              cudaMemcpyHostToDevice, ctx.stream()));
  uint64_t at = preamble.size();
  for (size_t h = 0; h < heads.size(); ++h) {
    const HeadOffsets o = Layout(layout, at, layout.counts[h], layout.tails[h]);
    KVWIRE_RETURN_IF_ERROR(
        EncodeHead(ctx, layout, heads[h], layout.counts[h], layout.tails[h], o, payload));
    at = o.end;
  }
  if (at != size) {
    return absl::InternalError(
        absl::StrCat("EncodeLayer: device layout ends at ", at, ", format says ", size));
  }
  return size;
}

}  // namespace kvwire::kernels::cuda
