// A DeviceCopier for tests on machines without a device: "device memory" is host memory this
// copier hands out (AllocateDevice) and tracks, so copies check their device range exactly as the
// CUDA copier does (a pointer outside every allocation is INVALID_ARGUMENT). Faults on demand:
// failing copies, slow copies, failing pinning. Counts what it did.
#ifndef KVWIRE_TESTS_TRANSPORT_FAKE_DEVICE_COPIER_H_
#define KVWIRE_TESTS_TRANSPORT_FAKE_DEVICE_COPIER_H_

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "kvwire/base/device_copier.h"
#include "kvwire/base/status.h"

namespace kvwire::transport::testing {

class FakeDeviceCopier final : public DeviceCopier {
 public:
  struct Counts {
    int64_t pinned_allocations = 0;
    int64_t pinned_frees = 0;
    int64_t to_host_copies = 0;
    int64_t to_device_copies = 0;
    uint64_t to_host_bytes = 0;
    uint64_t to_device_bytes = 0;
  };

  ~FakeDeviceCopier() override {
    absl::MutexLock lock(&mu_);
    for (auto& [p, n] : device_) std::free(reinterpret_cast<void*>(p));
  }

  std::string description() const override { return "fake device"; }

  // "Device" memory: only ranges inside these allocations are device memory to this copier.
  uint8_t* AllocateDevice(size_t bytes) {
    auto* p = static_cast<uint8_t*>(std::malloc(bytes == 0 ? 1 : bytes));
    absl::MutexLock lock(&mu_);
    device_[reinterpret_cast<uintptr_t>(p)] = bytes;
    return p;
  }

  absl::StatusOr<void*> AllocatePinned(size_t bytes) override {
    if (bytes == 0) return absl::InvalidArgumentError("pinning zero bytes");
    absl::MutexLock lock(&mu_);
    if (fail_pinning_) return absl::ResourceExhaustedError("fake: cannot pin");
    ++counts_.pinned_allocations;
    return std::malloc(bytes);
  }
  void FreePinned(void* host) override {
    if (host == nullptr) return;
    absl::MutexLock lock(&mu_);
    ++counts_.pinned_frees;
    std::free(host);
  }

  absl::Status ToHost(void* host, const void* device, size_t bytes, Deadline deadline) override {
    KVWIRE_RETURN_IF_ERROR(Check(device, bytes, /*to_device=*/false, deadline));
    if (bytes > 0) std::memcpy(host, device, bytes);
    absl::MutexLock lock(&mu_);
    ++counts_.to_host_copies;
    counts_.to_host_bytes += bytes;
    return absl::OkStatus();
  }
  absl::Status ToDevice(void* device, const void* host, size_t bytes, Deadline deadline) override {
    KVWIRE_RETURN_IF_ERROR(Check(device, bytes, /*to_device=*/true, deadline));
    if (bytes > 0) std::memcpy(device, host, bytes);
    absl::MutexLock lock(&mu_);
    ++counts_.to_device_copies;
    counts_.to_device_bytes += bytes;
    return absl::OkStatus();
  }

  // Copies toward the device (or the host) fail with `status` from now on.
  void FailToDevice(absl::Status status) {
    absl::MutexLock lock(&mu_);
    fail_to_device_ = std::move(status);
  }
  void FailToHost(absl::Status status) {
    absl::MutexLock lock(&mu_);
    fail_to_host_ = std::move(status);
  }
  // Copies wait out their deadline (DEADLINE_EXCEEDED), like a device that stopped answering.
  void Hang() {
    absl::MutexLock lock(&mu_);
    hang_ = true;
  }
  void FailPinning() {
    absl::MutexLock lock(&mu_);
    fail_pinning_ = true;
  }
  Counts counts() const {
    absl::MutexLock lock(&mu_);
    return counts_;
  }

 private:
  absl::Status Check(const void* device, size_t bytes, bool to_device, Deadline deadline) {
    bool hang = false;
    {
      absl::MutexLock lock(&mu_);
      if (bytes == 0) return absl::OkStatus();
      const auto p = reinterpret_cast<uintptr_t>(device);
      auto it = device_.upper_bound(p);
      if (it == device_.begin()) return absl::InvalidArgumentError("fake: not device memory");
      --it;
      if (p - it->first > it->second || bytes > it->second - (p - it->first)) {
        return absl::InvalidArgumentError("fake: not device memory");
      }
      const std::optional<absl::Status>& fail = to_device ? fail_to_device_ : fail_to_host_;
      if (fail.has_value()) return *fail;
      hang = hang_;
    }
    if (hang) {
      while (!deadline.Expired()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      return absl::DeadlineExceededError("fake: the copy did not finish");
    }
    return absl::OkStatus();
  }

  mutable absl::Mutex mu_;
  std::map<uintptr_t, size_t> device_ ABSL_GUARDED_BY(mu_);
  std::optional<absl::Status> fail_to_device_ ABSL_GUARDED_BY(mu_);
  std::optional<absl::Status> fail_to_host_ ABSL_GUARDED_BY(mu_);
  bool hang_ ABSL_GUARDED_BY(mu_) = false;
  bool fail_pinning_ ABSL_GUARDED_BY(mu_) = false;
  Counts counts_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kvwire::transport::testing

#endif  // KVWIRE_TESTS_TRANSPORT_FAKE_DEVICE_COPIER_H_
