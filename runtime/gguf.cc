// GGUF parsing: a bounds-checked cursor over the mapped bytes; every read names what it reads so
// errors say where the file went wrong.
#include "runtime/gguf.h"

#include <cstring>
#include <iterator>

#include "absl/strings/str_cat.h"
#include "kvwire/base/status.h"

namespace kvwire::runtime {

using kernels::QuantType;

namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" little-endian
constexpr int kMaxArrayDepth = 3;
constexpr int kMaxDims = 4;
constexpr int64_t kMaxDim = int64_t{1} << 40;
constexpr int64_t kMaxElements = int64_t{1} << 50;
constexpr uint64_t kMaxAlignment = 1 << 20;

absl::Status Corrupt(absl::string_view what) { return absl::DataLossError(what); }

class Cursor {
 public:
  Cursor(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  size_t offset() const { return offset_; }
  size_t remaining() const { return size_ - offset_; }

  absl::Status Need(uint64_t n, absl::string_view what) const {
    if (n > remaining()) {
      return Corrupt(absl::StrCat("truncated: ", what, " needs ", n, " bytes at offset ", offset_,
                                  ", ", remaining(), " left"));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<const uint8_t*> Take(uint64_t n, absl::string_view what) {
    KVWIRE_RETURN_IF_ERROR(Need(n, what));
    const uint8_t* p = data_ + offset_;
    offset_ += n;
    return p;
  }

  template <typename T>
  absl::StatusOr<T> Read(absl::string_view what) {
    KVWIRE_ASSIGN_OR_RETURN(const uint8_t* p, Take(sizeof(T), what));
    T v;
    std::memcpy(&v, p, sizeof(T));
    return v;
  }

  absl::StatusOr<absl::string_view> ReadString(absl::string_view what) {
    KVWIRE_ASSIGN_OR_RETURN(uint64_t len, Read<uint64_t>(what));
    KVWIRE_ASSIGN_OR_RETURN(const uint8_t* p, Take(len, what));
    return absl::string_view(reinterpret_cast<const char*>(p), len);
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t offset_ = 0;
};

// Smallest encoding of one element: lets a count be checked against the bytes left.
uint64_t MinElementSize(GgufType t) {
  if (t == GgufType::kString) return 8;
  if (t == GgufType::kArray) return 12;
  return GgufScalarSize(t);
}

absl::StatusOr<GgufType> ReadType(Cursor& c, absl::string_view what) {
  KVWIRE_ASSIGN_OR_RETURN(uint32_t raw, c.Read<uint32_t>(what));
  if (raw > static_cast<uint32_t>(GgufType::kFloat64)) {
    return Corrupt(absl::StrCat(what, ": unknown value type ", raw));
  }
  return static_cast<GgufType>(raw);
}

}  // namespace

const char* GgufTypeName(GgufType type) {
  static constexpr const char* kNames[] = {"UINT8",  "INT8",    "UINT16", "INT16",  "UINT32",
                                           "INT32",  "FLOAT32", "BOOL",   "STRING", "ARRAY",
                                           "UINT64", "INT64",   "FLOAT64"};
  const auto i = static_cast<uint32_t>(type);
  return i < std::size(kNames) ? kNames[i] : "?";
}

int GgufScalarSize(GgufType t) {
  switch (t) {
    case GgufType::kUint8:
    case GgufType::kInt8:
    case GgufType::kBool:
      return 1;
    case GgufType::kUint16:
    case GgufType::kInt16:
      return 2;
    case GgufType::kUint32:
    case GgufType::kInt32:
    case GgufType::kFloat32:
      return 4;
    case GgufType::kUint64:
    case GgufType::kInt64:
    case GgufType::kFloat64:
      return 8;
    case GgufType::kString:
    case GgufType::kArray:
      return 0;
  }
  return 0;
}

// Walks the file once, filling a GgufFile. Friend of GgufFile and GgufValue.
class GgufParser {
 public:
  explicit GgufParser(GgufFile* file) : file_(file), c_(file->bytes_, file->size_) {}

  absl::Status Run() {
    KVWIRE_ASSIGN_OR_RETURN(uint64_t n_tensors, Header());
    for (uint64_t i = 0; i < n_kv_; ++i) KVWIRE_RETURN_IF_ERROR(KeyValue(i));
    KVWIRE_RETURN_IF_ERROR(ReadAlignment());
    file_->tensors_.reserve(n_tensors);
    for (uint64_t i = 0; i < n_tensors; ++i) KVWIRE_RETURN_IF_ERROR(TensorInfo(i));
    return PlaceTensors();
  }

 private:
  absl::StatusOr<uint64_t> Header() {
    KVWIRE_ASSIGN_OR_RETURN(uint32_t magic, c_.Read<uint32_t>("magic"));
    if (magic != kMagic)
      return Corrupt(absl::StrCat("bad magic 0x", absl::Hex(magic), ", not GGUF"));
    KVWIRE_ASSIGN_OR_RETURN(file_->version_, c_.Read<uint32_t>("version"));
    if (file_->version_ != 2 && file_->version_ != 3) {
      return absl::FailedPreconditionError(
          absl::StrCat("unsupported GGUF version ", file_->version_, " (supported: 2, 3)"));
    }
    KVWIRE_ASSIGN_OR_RETURN(uint64_t n_tensors, c_.Read<uint64_t>("tensor count"));
    KVWIRE_ASSIGN_OR_RETURN(n_kv_, c_.Read<uint64_t>("metadata count"));
    // A tensor info takes >= 24 bytes, a key/value >= 12: counts beyond what the file could hold
    // are rejected before anything is reserved.
    if (n_tensors > c_.remaining() / 24 || n_kv_ > c_.remaining() / 12) {
      return Corrupt(absl::StrCat("absurd counts: ", n_tensors, " tensors, ", n_kv_,
                                  " metadata entries in a ", file_->size_, "-byte file"));
    }
    return n_tensors;
  }

  absl::Status KeyValue(uint64_t index) {
    const std::string what = absl::StrCat("metadata entry ", index);
    KVWIRE_ASSIGN_OR_RETURN(absl::string_view key, c_.ReadString(what + " key"));
    KVWIRE_ASSIGN_OR_RETURN(GgufType type, ReadType(c_, what));
    GgufValue value;
    KVWIRE_RETURN_IF_ERROR(Value(type, 0, absl::StrCat("value of '", key, "'"), &value));
    if (!file_->values_.emplace(std::string(key), std::move(value)).second) {
      return Corrupt(absl::StrCat("duplicate metadata key '", key, "'"));
    }
    file_->keys_.emplace_back(key);
    return absl::OkStatus();
  }

  absl::Status Value(GgufType type, int depth, const std::string& what, GgufValue* out) {
    out->type_ = type;
    out->data_ = nullptr;
    if (type == GgufType::kString) {
      KVWIRE_ASSIGN_OR_RETURN(absl::string_view s, c_.ReadString(what));
      out->data_ = reinterpret_cast<const uint8_t*>(s.data());
      out->count_ = s.size();
      return absl::OkStatus();
    }
    if (type == GgufType::kArray) return Array(depth, what, out);
    KVWIRE_ASSIGN_OR_RETURN(out->data_, c_.Take(GgufScalarSize(type), what));
    return absl::OkStatus();
  }

  absl::Status Array(int depth, const std::string& what, GgufValue* out) {
    if (depth >= kMaxArrayDepth) return Corrupt(absl::StrCat(what, ": arrays nested too deep"));
    KVWIRE_ASSIGN_OR_RETURN(out->element_type_, ReadType(c_, what + " element type"));
    KVWIRE_ASSIGN_OR_RETURN(out->count_, c_.Read<uint64_t>(what + " length"));
    const uint64_t min_size = MinElementSize(out->element_type_);
    if (out->count_ > c_.remaining() / min_size) {
      return Corrupt(absl::StrCat(what, ": array of ", out->count_, " ",
                                  GgufTypeName(out->element_type_), " runs past the end (",
                                  c_.remaining(), " bytes left)"));
    }
    out->data_ = c_.Take(0, what).value();
    if (GgufScalarSize(out->element_type_) > 0) {
      return c_.Take(out->count_ * min_size, what).status();
    }
    if (out->element_type_ == GgufType::kString) out->strings_.reserve(out->count_);
    for (uint64_t i = 0; i < out->count_; ++i) {
      GgufValue element;
      const std::string element_what = absl::StrCat(what, "[", i, "]");
      if (out->element_type_ == GgufType::kArray) {
        KVWIRE_RETURN_IF_ERROR(Array(depth + 1, element_what, &element));
        continue;
      }
      KVWIRE_ASSIGN_OR_RETURN(absl::string_view s, c_.ReadString(element_what));
      out->strings_.push_back(s);
    }
    return absl::OkStatus();
  }

  absl::Status ReadAlignment() {
    const GgufValue* v = file_->Find("general.alignment");
    if (v == nullptr) return absl::OkStatus();
    auto a = v->AsInt();
    if (!a.ok() || *a <= 0 || static_cast<uint64_t>(*a) > kMaxAlignment || (*a & (*a - 1)) != 0) {
      return Corrupt("general.alignment must be a power of two integer <= 1 MiB");
    }
    file_->alignment_ = static_cast<uint64_t>(*a);
    return absl::OkStatus();
  }

  absl::Status TensorInfo(uint64_t index) {
    GgufTensor t;
    KVWIRE_ASSIGN_OR_RETURN(absl::string_view name,
                            c_.ReadString(absl::StrCat("tensor ", index, " name")));
    t.name = std::string(name);
    const std::string what = absl::StrCat("tensor '", t.name, "'");
    KVWIRE_ASSIGN_OR_RETURN(uint32_t n_dims, c_.Read<uint32_t>(what + " rank"));
    if (n_dims == 0 || n_dims > kMaxDims) {
      return Corrupt(absl::StrCat(what, ": rank ", n_dims, " outside [1, ", kMaxDims, "]"));
    }
    int64_t elements = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      KVWIRE_ASSIGN_OR_RETURN(uint64_t dim, c_.Read<uint64_t>(what + " dims"));
      if (dim == 0 || dim > static_cast<uint64_t>(kMaxDim) ||
          elements > kMaxElements / static_cast<int64_t>(dim)) {
        return Corrupt(absl::StrCat(what, ": dimension ", d, " = ", dim, " out of range"));
      }
      elements *= static_cast<int64_t>(dim);
      t.dims.push_back(static_cast<int64_t>(dim));
    }
    KVWIRE_ASSIGN_OR_RETURN(uint32_t type_id, c_.Read<uint32_t>(what + " type"));
    KVWIRE_RETURN_IF_ERROR(TensorType(what, type_id, &t));
    KVWIRE_ASSIGN_OR_RETURN(t.offset, c_.Read<uint64_t>(what + " offset"));
    if (t.offset % file_->alignment_ != 0) {
      return Corrupt(absl::StrCat(what, ": offset ", t.offset, " is not a multiple of alignment ",
                                  file_->alignment_));
    }
    if (!file_->tensor_index_.emplace(t.name, file_->tensors_.size()).second) {
      return Corrupt(absl::StrCat("duplicate tensor name '", t.name, "'"));
    }
    file_->tensors_.push_back(std::move(t));
    return absl::OkStatus();
  }

  absl::Status TensorType(const std::string& what, uint32_t type_id, GgufTensor* t) {
    const kernels::QuantTypeInfo* info = kernels::FindQuantType(type_id);
    if (info == nullptr) {
      if (kernels::IsKnownGgmlTypeId(type_id)) {
        return absl::FailedPreconditionError(
            absl::StrCat(what, ": GGML type ", type_id, " is not supported by kvwire"));
      }
      return Corrupt(absl::StrCat(what, ": unknown tensor type ", type_id));
    }
    t->type = info->type;
    const int64_t row_bytes = kernels::RowBytes(t->type, t->dims[0]);
    if (row_bytes < 0) {
      return Corrupt(absl::StrCat(what, ": first dimension ", t->dims[0],
                                  " is not a multiple of the ", info->name, " block size ",
                                  info->block_elems));
    }
    t->n_bytes = row_bytes * t->rows();
    return absl::OkStatus();
  }

  absl::Status PlaceTensors() {
    const uint64_t a = file_->alignment_;
    const uint64_t data_start = (c_.offset() + a - 1) / a * a;
    if (file_->tensors_.empty()) return absl::OkStatus();
    if (data_start > file_->size_) return Corrupt("file ends before the tensor data section");
    const uint64_t data_size = file_->size_ - data_start;
    for (GgufTensor& t : file_->tensors_) {
      if (t.offset > data_size || static_cast<uint64_t>(t.n_bytes) > data_size - t.offset) {
        return Corrupt(
            absl::StrCat("tensor '", t.name, "' data [", t.offset, ", ", t.offset + t.n_bytes,
                         ") runs past the end of the data section (", data_size, " bytes)"));
      }
      t.data = file_->bytes_ + data_start + t.offset;
    }
    return absl::OkStatus();
  }

  GgufFile* file_;
  Cursor c_;
  uint64_t n_kv_ = 0;
};

absl::Status GgufFile::Parse() { return GgufParser(this).Run(); }

int64_t GgufTensor::rows() const {
  int64_t r = 1;
  for (size_t i = 1; i < dims.size(); ++i) r *= dims[i];
  return r;
}

}  // namespace kvwire::runtime
