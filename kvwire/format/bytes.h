// kvwire/format/bytes.h — little-endian byte writer and bounds-checked reader.
//
// ByteReader never reads past its span: every Read* returns false once the input is exhausted and
// leaves the reader in a failed state, so a decoder can read a whole structure and check once.
// Thread-compatible value types.
#ifndef KVWIRE_FORMAT_BYTES_H_
#define KVWIRE_FORMAT_BYTES_H_

#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>

#include "absl/types/span.h"

namespace kvwire::format {

// Appends little-endian scalars to a caller-owned buffer (x86 and Arm are little-endian; the
// static_assert below keeps a big-endian port from silently producing foreign bytes).
class ByteWriter {
 public:
  explicit ByteWriter(absl::Span<uint8_t> out) : out_(out) {}

  template <typename T>
  void Put(T value) {
    static_assert(std::is_trivially_copyable_v<T>);
    PutBytes(&value, sizeof(T));
  }
  void PutBytes(const void* data, size_t n) {
    // Writers are always sized by the matching *Size() function; overrunning is a programmer bug.
    if (n > out_.size() - pos_) __builtin_trap();
    if (n) std::memcpy(out_.data() + pos_, data, n);
    pos_ += n;
  }
  uint8_t* Reserve(size_t n) {
    if (n > out_.size() - pos_) __builtin_trap();
    uint8_t* p = out_.data() + pos_;
    pos_ += n;
    return p;
  }
  size_t position() const { return pos_; }
  size_t remaining() const { return out_.size() - pos_; }

 private:
  absl::Span<uint8_t> out_;
  size_t pos_ = 0;
};

class ByteReader {
 public:
  explicit ByteReader(absl::Span<const uint8_t> in) : in_(in) {}

  template <typename T>
  bool Get(T* value) {
    static_assert(std::is_trivially_copyable_v<T>);
    const uint8_t* p = Take(sizeof(T));
    if (p == nullptr) return false;
    std::memcpy(value, p, sizeof(T));
    return true;
  }
  // Returns a pointer to the next n bytes and advances, or nullptr (and fails) if fewer remain.
  const uint8_t* Take(uint64_t n) {
    if (failed_ || n > in_.size() - pos_) {
      failed_ = true;
      return nullptr;
    }
    const uint8_t* p = in_.data() + pos_;
    pos_ += static_cast<size_t>(n);
    return p;
  }
  bool failed() const { return failed_; }
  size_t position() const { return pos_; }
  size_t remaining() const { return in_.size() - pos_; }

 private:
  absl::Span<const uint8_t> in_;
  size_t pos_ = 0;
  bool failed_ = false;
};

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "kvwire wire format assumes little endian");

}  // namespace kvwire::format

#endif  // KVWIRE_FORMAT_BYTES_H_
