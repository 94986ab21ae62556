// GgufFile loading (mmap or owned bytes) and typed metadata accessors.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "kvwire/base/status.h"
#include "runtime/gguf.h"

namespace kvwire::runtime {
namespace {

absl::Status WrongType(const GgufValue& v, absl::string_view wanted) {
  std::string have = GgufTypeName(v.type());
  if (v.is_array()) have = absl::StrCat("ARRAY of ", GgufTypeName(v.element_type()));
  return absl::InvalidArgumentError(absl::StrCat("value is ", have, ", not ", wanted));
}

bool IsIntegerType(GgufType t) {
  switch (t) {
    case GgufType::kUint8:
    case GgufType::kInt8:
    case GgufType::kUint16:
    case GgufType::kInt16:
    case GgufType::kUint32:
    case GgufType::kInt32:
    case GgufType::kUint64:
    case GgufType::kInt64:
    case GgufType::kBool:
      return true;
    default:
      return false;
  }
}

template <typename T>
T Load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

std::string ErrnoMessage(int err) { return std::strerror(err); }

}  // namespace

// Integer of `type` at p; uint64 values above INT64_MAX come back as -1 (callers check first).
int64_t GgufValue::IntAt(GgufType type, const uint8_t* p) const {
  switch (type) {
    case GgufType::kUint8:
    case GgufType::kBool:
      return Load<uint8_t>(p);
    case GgufType::kInt8:
      return Load<int8_t>(p);
    case GgufType::kUint16:
      return Load<uint16_t>(p);
    case GgufType::kInt16:
      return Load<int16_t>(p);
    case GgufType::kUint32:
      return Load<uint32_t>(p);
    case GgufType::kInt32:
      return Load<int32_t>(p);
    case GgufType::kInt64:
      return Load<int64_t>(p);
    case GgufType::kUint64: {
      const uint64_t v = Load<uint64_t>(p);
      return v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())
                 ? -1
                 : static_cast<int64_t>(v);
    }
    default:
      return 0;
  }
}

absl::StatusOr<int64_t> GgufValue::AsInt() const {
  if (!IsIntegerType(type_)) return WrongType(*this, "an integer");
  const int64_t v = IntAt(type_, data_);
  if (type_ == GgufType::kUint64 && v < 0) {
    return absl::InvalidArgumentError("UINT64 value does not fit in int64");
  }
  return v;
}

absl::StatusOr<double> GgufValue::AsFloat() const {
  if (type_ == GgufType::kFloat32) return Load<float>(data_);
  if (type_ == GgufType::kFloat64) return Load<double>(data_);
  return WrongType(*this, "a float");
}

absl::StatusOr<bool> GgufValue::AsBool() const {
  if (type_ != GgufType::kBool) return WrongType(*this, "BOOL");
  return data_[0] != 0;
}

absl::StatusOr<absl::string_view> GgufValue::AsString() const {
  if (type_ != GgufType::kString) return WrongType(*this, "STRING");
  return absl::string_view(reinterpret_cast<const char*>(data_), count_);
}

absl::StatusOr<std::vector<absl::string_view>> GgufValue::AsStringArray() const {
  if (!is_array() || element_type_ != GgufType::kString) return WrongType(*this, "ARRAY of STRING");
  return strings_;
}

absl::StatusOr<std::vector<int64_t>> GgufValue::AsIntArray() const {
  if (!is_array() || !IsIntegerType(element_type_)) return WrongType(*this, "ARRAY of integers");
  std::vector<int64_t> out(count_);
  const int size = GgufScalarSize(element_type_);
  for (uint64_t i = 0; i < count_; ++i) {
    out[i] = IntAt(element_type_, data_ + i * size);
    if (element_type_ == GgufType::kUint64 && out[i] < 0) {
      return absl::InvalidArgumentError(absl::StrCat("element ", i, " does not fit in int64"));
    }
  }
  return out;
}

absl::StatusOr<std::vector<float>> GgufValue::AsFloatArray() const {
  if (!is_array() || (element_type_ != GgufType::kFloat32 && element_type_ != GgufType::kFloat64)) {
    return WrongType(*this, "ARRAY of floats");
  }
  std::vector<float> out(count_);
  for (uint64_t i = 0; i < count_; ++i) {
    out[i] = element_type_ == GgufType::kFloat32 ? Load<float>(data_ + 4 * i)
                                                 : static_cast<float>(Load<double>(data_ + 8 * i));
  }
  return out;
}

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    const std::string msg = absl::StrCat("cannot open ", path, ": ", ErrnoMessage(err));
    return err == ENOENT ? absl::NotFoundError(msg) : absl::PermissionDeniedError(msg);
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || st.st_size <= 0) {
    ::close(fd);
    return absl::DataLossError(absl::StrCat(path, " is empty or unreadable"));
  }
  void* map = ::mmap(nullptr, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) {
    return absl::ResourceExhaustedError(absl::StrCat("mmap ", path, ": ", ErrnoMessage(errno)));
  }
  std::unique_ptr<GgufFile> file(new GgufFile());
  file->mapping_ = map;
  file->mapping_size_ = static_cast<size_t>(st.st_size);
  file->bytes_ = static_cast<const uint8_t*>(map);
  file->size_ = file->mapping_size_;
  KVWIRE_RETURN_IF_ERROR(Annotate(file->Parse(), path));
  return file;
}

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::FromBytes(std::string bytes) {
  std::unique_ptr<GgufFile> file(new GgufFile());
  file->owned_ = std::move(bytes);
  file->bytes_ = reinterpret_cast<const uint8_t*>(file->owned_.data());
  file->size_ = file->owned_.size();
  KVWIRE_RETURN_IF_ERROR(file->Parse());
  return file;
}

GgufFile::~GgufFile() {
  if (mapping_ != nullptr) ::munmap(mapping_, mapping_size_);
}

const GgufValue* GgufFile::Find(absl::string_view key) const {
  auto it = values_.find(key);
  return it == values_.end() ? nullptr : &it->second;
}

absl::StatusOr<const GgufValue*> GgufFile::Get(absl::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return absl::NotFoundError(absl::StrCat("no metadata key '", key, "'"));
  return v;
}

// Applies a GgufValue accessor to key `key`, prefixing errors with the key.
#define KVWIRE_GGUF_GET(key, call)                           \
  KVWIRE_ASSIGN_OR_RETURN(const GgufValue* value, Get(key)); \
  auto result = value->call;                                 \
  if (!result.ok()) return Annotate(result.status(), key);   \
  return *std::move(result)

absl::StatusOr<int64_t> GgufFile::GetInt(absl::string_view key) const {
  KVWIRE_GGUF_GET(key, AsInt());
}

absl::StatusOr<uint32_t> GgufFile::GetU32(absl::string_view key) const {
  KVWIRE_ASSIGN_OR_RETURN(int64_t v, GetInt(key));
  if (v < 0 || v > std::numeric_limits<uint32_t>::max()) {
    return absl::InvalidArgumentError(absl::StrCat(key, ": ", v, " does not fit in uint32"));
  }
  return static_cast<uint32_t>(v);
}

absl::StatusOr<float> GgufFile::GetF32(absl::string_view key) const {
  KVWIRE_ASSIGN_OR_RETURN(const GgufValue* value, Get(key));
  auto result = value->AsFloat();
  if (!result.ok()) return Annotate(result.status(), key);
  return static_cast<float>(*result);
}

absl::StatusOr<bool> GgufFile::GetBool(absl::string_view key) const {
  KVWIRE_GGUF_GET(key, AsBool());
}

absl::StatusOr<absl::string_view> GgufFile::GetString(absl::string_view key) const {
  KVWIRE_GGUF_GET(key, AsString());
}

absl::StatusOr<std::vector<absl::string_view>> GgufFile::GetStringArray(
    absl::string_view key) const {
  KVWIRE_GGUF_GET(key, AsStringArray());
}

absl::StatusOr<std::vector<int64_t>> GgufFile::GetIntArray(absl::string_view key) const {
  KVWIRE_GGUF_GET(key, AsIntArray());
}

absl::StatusOr<std::vector<float>> GgufFile::GetFloatArray(absl::string_view key) const {
  KVWIRE_GGUF_GET(key, AsFloatArray());
}

#undef KVWIRE_GGUF_GET

const GgufTensor* GgufFile::FindTensor(absl::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

}  // namespace kvwire::runtime
