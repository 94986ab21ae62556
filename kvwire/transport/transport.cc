#include "kvwire/transport/transport.h"

#include <memory>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace kvwire::transport {

absl::Status Connection::Send(const FrameInfo& info, absl::Span<const uint8_t> frame_header,
                              absl::Span<const uint8_t> payload, Deadline deadline) {
  absl::StatusOr<std::unique_ptr<SendOperation>> op = StartSend(info, frame_header, payload);
  if (!op.ok()) return op.status();
  absl::Status status = (*op)->Wait(deadline);
  if (absl::IsDeadlineExceeded(status)) {
    // Destroying the operation cancels it and waits until its buffers are free.
    op->reset();
  }
  return status;
}

namespace {

class UnregisteredRegion final : public MemoryRegion {
 public:
  UnregisteredRegion(void* data, size_t size, MemoryKind kind)
      : data_(data), size_(size), kind_(kind) {}
  void* data() const override { return data_; }
  size_t size() const override { return size_; }
  MemoryKind kind() const override { return kind_; }

 private:
  void* data_;
  size_t size_;
  MemoryKind kind_;
};

}  // namespace

std::unique_ptr<MemoryRegion> MakeUnregisteredRegion(void* data, size_t bytes, MemoryKind kind) {
  return std::make_unique<UnregisteredRegion>(data, bytes, kind);
}

std::string AddressToHex(absl::string_view address) { return absl::BytesToHexString(address); }

absl::StatusOr<std::string> AddressFromHex(absl::string_view hex) {
  if (hex.size() % 2 != 0 || hex.find_first_not_of("0123456789abcdefABCDEF") != hex.npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("address is not an even-length hex string (", hex.size(), " characters)"));
  }
  return absl::HexStringToBytes(hex);
}

}  // namespace kvwire::transport
