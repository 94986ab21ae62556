// runtime/gguf.h — a strict, memory-mapped GGUF (v2/v3) reader.
//
// Open() maps the file read-only and validates everything before returning: header, every
// metadata key/value (string and array lengths against the bytes left), every tensor info (rank,
// dims, type, alignment, data range inside the file). Nothing is allocated from a count that has
// not been checked against the bytes that would have to hold it. Tensor data stays in the mapping;
// GgufTensor::data points into it and lives as long as the GgufFile.
//
// Error codes:
//   DATA_LOSS           malformed file: bad magic, truncation, a length or count past the end,
//                       duplicate key or tensor name, unknown type id, tensor data out of the file,
//                       misaligned tensor offset, dims that do not fit the type's block size.
//   FAILED_PRECONDITION well-formed but unsupported: GGUF version other than 2/3, or a GGML
//                       tensor type this build does not implement (e.g. IQ2_XXS).
//   NOT_FOUND           missing file, metadata key or tensor.
//   INVALID_ARGUMENT    a typed accessor asked for a type the value does not have (e.g. GetU32 on
//                       a string, or a negative/oversized integer for the requested width).
//
// Thread-safety: immutable after Open(); concurrent reads are safe.
#ifndef KVWIRE_RUNTIME_GGUF_H_
#define KVWIRE_RUNTIME_GGUF_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kvwire/kernels/matmul.h"
#include "kvwire/kernels/quant.h"

namespace kvwire::runtime {

// Metadata value types, numbered as in the GGUF specification.
enum class GgufType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};

const char* GgufTypeName(GgufType type);
// Encoded size of a scalar value type; 0 for STRING and ARRAY.
int GgufScalarSize(GgufType type);

// One metadata value. Scalars and numeric arrays point into the mapping; string arrays keep
// views of every element (validated at Open).
class GgufValue {
 public:
  GgufType type() const { return type_; }
  bool is_array() const { return type_ == GgufType::kArray; }
  GgufType element_type() const { return element_type_; }  // arrays only
  uint64_t size() const { return count_; }                 // arrays: element count

  // Any integer type or bool, range-checked into int64.
  absl::StatusOr<int64_t> AsInt() const;
  // FLOAT32/FLOAT64.
  absl::StatusOr<double> AsFloat() const;
  absl::StatusOr<bool> AsBool() const;
  absl::StatusOr<absl::string_view> AsString() const;
  absl::StatusOr<std::vector<absl::string_view>> AsStringArray() const;
  absl::StatusOr<std::vector<int64_t>> AsIntArray() const;
  absl::StatusOr<std::vector<float>> AsFloatArray() const;

 private:
  friend class GgufParser;
  int64_t IntAt(GgufType type, const uint8_t* p) const;

  GgufType type_ = GgufType::kUint8;
  GgufType element_type_ = GgufType::kUint8;
  uint64_t count_ = 0;
  const uint8_t* data_ = nullptr;  // scalar bytes, string bytes, or first array element
  std::vector<absl::string_view> strings_;
};

struct GgufTensor {
  std::string name;
  std::vector<int64_t> dims;  // GGUF order: dims[0] (ne0) is the contiguous dimension
  kernels::QuantType type = kernels::QuantType::kF32;
  uint64_t offset = 0;  // from the start of the data section
  const void* data = nullptr;
  int64_t n_bytes = 0;

  int64_t cols() const { return dims.empty() ? 0 : dims[0]; }
  int64_t rows() const;  // product of dims[1..]
  int64_t elements() const { return cols() * rows(); }
  // The tensor as a rows x cols weight matrix for the kernels.
  kernels::WeightView AsWeight() const { return {type, data, rows(), cols()}; }
};

class GgufFile {
 public:
  // Maps and validates the file at `path`.
  static absl::StatusOr<std::unique_ptr<GgufFile>> Open(const std::string& path);
  // Validates a copy of `bytes` (tests, in-memory models).
  static absl::StatusOr<std::unique_ptr<GgufFile>> FromBytes(std::string bytes);
  ~GgufFile();
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  const std::vector<std::string>& keys() const { return keys_; }  // file order

  const GgufValue* Find(absl::string_view key) const;                 // nullptr when absent
  absl::StatusOr<const GgufValue*> Get(absl::string_view key) const;  // NOT_FOUND when absent
  absl::StatusOr<uint32_t> GetU32(absl::string_view key) const;       // any integer in range
  absl::StatusOr<int64_t> GetInt(absl::string_view key) const;
  absl::StatusOr<float> GetF32(absl::string_view key) const;
  absl::StatusOr<bool> GetBool(absl::string_view key) const;
  absl::StatusOr<absl::string_view> GetString(absl::string_view key) const;
  absl::StatusOr<std::vector<absl::string_view>> GetStringArray(absl::string_view key) const;
  absl::StatusOr<std::vector<int64_t>> GetIntArray(absl::string_view key) const;
  absl::StatusOr<std::vector<float>> GetFloatArray(absl::string_view key) const;

  const std::vector<GgufTensor>& tensors() const { return tensors_; }
  const GgufTensor* FindTensor(absl::string_view name) const;  // nullptr when absent

 private:
  friend class GgufParser;
  GgufFile() = default;
  absl::Status Parse();

  // Exactly one of the two backings holds the bytes.
  void* mapping_ = nullptr;
  size_t mapping_size_ = 0;
  std::string owned_;
  const uint8_t* bytes_ = nullptr;
  size_t size_ = 0;

  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  std::vector<std::string> keys_;
  absl::flat_hash_map<std::string, GgufValue> values_;
  std::vector<GgufTensor> tensors_;
  absl::flat_hash_map<std::string, size_t> tensor_index_;
};

}  // namespace kvwire::runtime

#endif  // KVWIRE_RUNTIME_GGUF_H_
