#include "runtime/gguf_writer.h"

#include <cerrno>
#include <cstring>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "runtime/gguf.h"

namespace kvwire::runtime {
namespace {

template <typename T>
void Put(std::string* out, T v) {
  char buf[sizeof(T)];
  std::memcpy(buf, &v, sizeof(T));
  out->append(buf, sizeof(T));
}

void PutString(std::string* out, absl::string_view s) {
  Put<uint64_t>(out, s.size());
  out->append(s.data(), s.size());
}

void PadTo(std::string* out, uint64_t alignment) {
  out->append((alignment - out->size() % alignment) % alignment, '\0');
}

constexpr uint32_t Type(GgufType t) { return static_cast<uint32_t>(t); }

}  // namespace

void GgufWriter::BeginEntry(absl::string_view key, uint32_t type) {
  PutString(&kv_bytes_, key);
  Put<uint32_t>(&kv_bytes_, type);
  ++n_kv_;
}

void GgufWriter::SetU32(absl::string_view key, uint32_t v) {
  BeginEntry(key, Type(GgufType::kUint32));
  Put(&kv_bytes_, v);
}

void GgufWriter::SetI32(absl::string_view key, int32_t v) {
  BeginEntry(key, Type(GgufType::kInt32));
  Put(&kv_bytes_, v);
}

void GgufWriter::SetF32(absl::string_view key, float v) {
  BeginEntry(key, Type(GgufType::kFloat32));
  Put(&kv_bytes_, v);
}

void GgufWriter::SetBool(absl::string_view key, bool v) {
  BeginEntry(key, Type(GgufType::kBool));
  Put<uint8_t>(&kv_bytes_, v ? 1 : 0);
}

void GgufWriter::SetString(absl::string_view key, absl::string_view v) {
  BeginEntry(key, Type(GgufType::kString));
  PutString(&kv_bytes_, v);
}

void GgufWriter::SetStringArray(absl::string_view key, const std::vector<std::string>& v) {
  BeginEntry(key, Type(GgufType::kArray));
  Put<uint32_t>(&kv_bytes_, Type(GgufType::kString));
  Put<uint64_t>(&kv_bytes_, v.size());
  for (const auto& s : v) PutString(&kv_bytes_, s);
}

void GgufWriter::SetI32Array(absl::string_view key, const std::vector<int32_t>& v) {
  BeginEntry(key, Type(GgufType::kArray));
  Put<uint32_t>(&kv_bytes_, Type(GgufType::kInt32));
  Put<uint64_t>(&kv_bytes_, v.size());
  for (int32_t x : v) Put(&kv_bytes_, x);
}

void GgufWriter::SetF32Array(absl::string_view key, const std::vector<float>& v) {
  BeginEntry(key, Type(GgufType::kArray));
  Put<uint32_t>(&kv_bytes_, Type(GgufType::kFloat32));
  Put<uint64_t>(&kv_bytes_, v.size());
  for (float x : v) Put(&kv_bytes_, x);
}

absl::Status GgufWriter::AddTensor(absl::string_view name, const std::vector<int64_t>& dims,
                                   kernels::QuantType type, const float* values) {
  if (dims.empty()) return absl::InvalidArgumentError(absl::StrCat(name, ": no dims"));
  const int64_t row_bytes = kernels::RowBytes(type, dims[0]);
  if (row_bytes < 0 || !kernels::CanQuantize(type)) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": cannot write ", dims[0], "-wide rows as ", kernels::Info(type).name));
  }
  int64_t rows = 1;
  for (size_t i = 1; i < dims.size(); ++i) rows *= dims[i];
  std::string bytes(static_cast<size_t>(row_bytes * rows), '\0');
  for (int64_t r = 0; r < rows; ++r) {
    kernels::QuantizeRow(type, values + r * dims[0], bytes.data() + r * row_bytes, dims[0]);
  }
  AddRawTensor(name, dims, static_cast<uint32_t>(type), std::move(bytes));
  return absl::OkStatus();
}

void GgufWriter::AddRawTensor(absl::string_view name, const std::vector<int64_t>& dims,
                              uint32_t type_id, std::string bytes) {
  tensors_.push_back({std::string(name), dims, type_id, std::move(bytes)});
}

std::string GgufWriter::Serialize() const {
  std::string out;
  Put<uint32_t>(&out, 0x46554747);  // "GGUF"
  Put<uint32_t>(&out, 3);
  Put<uint64_t>(&out, tensors_.size());
  Put<uint64_t>(&out, n_kv_);
  out += kv_bytes_;
  uint64_t offset = 0;
  for (const Tensor& t : tensors_) {
    PutString(&out, t.name);
    Put<uint32_t>(&out, static_cast<uint32_t>(t.dims.size()));
    for (int64_t d : t.dims) Put<uint64_t>(&out, static_cast<uint64_t>(d));
    Put<uint32_t>(&out, t.type_id);
    Put<uint64_t>(&out, offset);
    offset += (t.bytes.size() + kAlignment - 1) / kAlignment * kAlignment;
  }
  PadTo(&out, kAlignment);
  for (const Tensor& t : tensors_) {
    out += t.bytes;
    PadTo(&out, kAlignment);
  }
  return out;
}

absl::Status GgufWriter::WriteFile(const std::string& path) const {
  const std::string bytes = Serialize();
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  f.close();
  if (!f) {
    return absl::InternalError(absl::StrCat("writing ", path, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace kvwire::runtime
