// kvwire/base/device_copier.h — copies between one accelerator's memory and pinned host memory,
// behind an interface free of any device runtime.
//
// A transport whose wire cannot read or write device memory (a UCX build without CUDA support)
// still carries payloads of device memory when it is given a DeviceCopier: it stages them
// through pinned host buffers (kvwire/transport/staging_pool.h). The CUDA implementation is
// kernels::cuda::MakeDeviceCopier (kernels/cuda/device_copier.h); tests use a host-memory fake.
//
//   std::shared_ptr<DeviceCopier> copier = *kernels::cuda::MakeDeviceCopier(/*device=*/0);
//   UcxOptions options;
//   options.device_copier = copier;         // now StartSend(..., MemoryKind::kCuda) works
//
// Thread-safety: every method may be called from any thread at any time. Copies are synchronous
// (they return when the bytes are at the destination) and bounded by their deadline.
#ifndef KVWIRE_BASE_DEVICE_COPIER_H_
#define KVWIRE_BASE_DEVICE_COPIER_H_

#include <cstddef>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kvwire/base/deadline.h"

namespace kvwire {

class DeviceCopier {
 public:
  virtual ~DeviceCopier() = default;

  // "cuda:0 NVIDIA H100 80GB HBM3", for logs and benchmark reports.
  virtual std::string description() const = 0;

  // Page-locked host memory the device copies to and from at full bus speed. RESOURCE_EXHAUSTED
  // when the host cannot pin that much. Zero bytes is INVALID_ARGUMENT.
  virtual absl::StatusOr<void*> AllocatePinned(size_t bytes) = 0;
  // Frees memory from AllocatePinned; nullptr is a no-op.
  virtual void FreePinned(void* host) = 0;

  // Copies `bytes` bytes of device memory at `device` to host memory at `host`, or the other way.
  // INVALID_ARGUMENT when `device` is not memory of this copier's device (a host pointer, another
  // device's memory, a range past the allocation); DEADLINE_EXCEEDED when the copy has not
  // finished by `deadline` (it may still land later, so the caller must keep both buffers alive
  // until the copier is destroyed); device errors otherwise. Zero bytes is OK and touches nothing.
  virtual absl::Status ToHost(void* host, const void* device, size_t bytes, Deadline deadline) = 0;
  virtual absl::Status ToDevice(void* device, const void* host, size_t bytes,
                                Deadline deadline) = 0;
};

}  // namespace kvwire

#endif  // KVWIRE_BASE_DEVICE_COPIER_H_
