// runtime/gguf_writer.h — builds GGUF v3 files in memory: metadata of every common type and
// tensors quantized from fp32 (any type kernels::CanQuantize accepts) or given as raw bytes.
// Used by tests and tools to make small models; tensor data is aligned to 32 bytes.
//
// Thread-safety: not synchronised. Errors: AddTensor returns INVALID_ARGUMENT for dims that do
// not fit the type's block size or a type without a quantizer; WriteFile returns the errno-based
// status of a failed write.
#ifndef KVWIRE_RUNTIME_GGUF_WRITER_H_
#define KVWIRE_RUNTIME_GGUF_WRITER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "kvwire/kernels/quant.h"

namespace kvwire::runtime {

class GgufWriter {
 public:
  static constexpr uint64_t kAlignment = 32;

  void SetU32(absl::string_view key, uint32_t v);
  void SetI32(absl::string_view key, int32_t v);
  void SetF32(absl::string_view key, float v);
  void SetBool(absl::string_view key, bool v);
  void SetString(absl::string_view key, absl::string_view v);
  void SetStringArray(absl::string_view key, const std::vector<std::string>& v);
  void SetI32Array(absl::string_view key, const std::vector<int32_t>& v);
  void SetF32Array(absl::string_view key, const std::vector<float>& v);

  // dims in GGUF order (dims[0] contiguous); values fp32 [product of dims].
  absl::Status AddTensor(absl::string_view name, const std::vector<int64_t>& dims,
                         kernels::QuantType type, const float* values);
  // Tensor with caller-provided bytes and type id, no checks (for corruption tests).
  void AddRawTensor(absl::string_view name, const std::vector<int64_t>& dims, uint32_t type_id,
                    std::string bytes);

  std::string Serialize() const;
  absl::Status WriteFile(const std::string& path) const;

 private:
  struct Tensor {
    std::string name;
    std::vector<int64_t> dims;
    uint32_t type_id;
    std::string bytes;
  };
  void BeginEntry(absl::string_view key, uint32_t type);

  std::string kv_bytes_;  // encoded key/value entries, in insertion order
  uint64_t n_kv_ = 0;
  std::vector<Tensor> tensors_;
};

}  // namespace kvwire::runtime

#endif  // KVWIRE_RUNTIME_GGUF_WRITER_H_
