#include "kernels/cuda/device_copier.h"

#include <cuda.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "kernels/cuda/device.h"
#include "kvwire/base/log.h"
#include "kvwire/base/status.h"

namespace kvwire::kernels::cuda {
namespace {

// cuMemGetAddressRange's signature (CUDA >= 3.2), fetched from the runtime at start-up.
using GetAddressRange = CUresult (*)(CUdeviceptr* base, size_t* size, CUdeviceptr ptr);

class CudaCopier final : public DeviceCopier {
 public:
  static absl::StatusOr<std::shared_ptr<DeviceCopier>> Create(int device) {
    // The context checks the device and owns the copier's stream.
    KVWIRE_ASSIGN_OR_RETURN(std::unique_ptr<Context> ctx, Context::Create(device));
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found{};
    KVWIRE_RETURN_IF_ERROR(FromCuda(
        cudaGetDriverEntryPointByVersion("cuMemGetAddressRange", &fn, 12000, cudaEnableDefault,
                                         &found),
        "cudaGetDriverEntryPointByVersion(cuMemGetAddressRange)"));
    if (found != cudaDriverEntryPointSuccess || fn == nullptr) {
      return absl::UnavailableError("the CUDA driver has no cuMemGetAddressRange");
    }
    return std::shared_ptr<DeviceCopier>(
        new CudaCopier(std::move(ctx), reinterpret_cast<GetAddressRange>(fn)));
  }

  std::string description() const override {
    return absl::StrCat("cuda:", ordinal(), " ", ctx_->properties().name);
  }

  absl::StatusOr<void*> AllocatePinned(size_t bytes) override {
    if (bytes == 0) return absl::InvalidArgumentError("pinning zero bytes");
    KVWIRE_RETURN_IF_ERROR(FromCuda(cudaSetDevice(ordinal()), "cudaSetDevice"));
    void* host = nullptr;
    absl::Status s = FromCuda(cudaHostAlloc(&host, bytes, cudaHostAllocPortable),
                              absl::StrCat("cudaHostAlloc(", bytes, " bytes)"));
    if (!s.ok()) {
      // Pinning fails for want of lockable host memory, whatever code the runtime picked.
      return absl::ResourceExhaustedError(s.message());
    }
    return host;
  }

  void FreePinned(void* host) override {
    if (host == nullptr) return;
    if (cudaError_t e = cudaFreeHost(host); e != cudaSuccess) {
      cudaGetLastError();
      KVWIRE_LOG(WARNING) << "cudaFreeHost: " << cudaGetErrorString(e);
    }
  }

  absl::Status ToHost(void* host, const void* device, size_t bytes, Deadline deadline) override {
    return Copy(host, device, device, bytes, cudaMemcpyDeviceToHost, deadline);
  }

  absl::Status ToDevice(void* device, const void* host, size_t bytes, Deadline deadline) override {
    return Copy(device, host, device, bytes, cudaMemcpyHostToDevice, deadline);
  }

 private:
  CudaCopier(std::unique_ptr<Context> ctx, GetAddressRange range)
      : ctx_(std::move(ctx)), range_(range) {}

  int ordinal() const { return ctx_->properties().ordinal; }

  // INVALID_ARGUMENT unless [device, device + bytes) lies in one allocation of this device.
  absl::Status CheckDeviceRange(const void* device, size_t bytes) const {
    cudaPointerAttributes attr{};
    if (cudaError_t e = cudaPointerGetAttributes(&attr, device); e != cudaSuccess) {
      cudaGetLastError();
      return absl::InvalidArgumentError(
          absl::StrCat("not CUDA memory: ", cudaGetErrorString(e)));
    }
    if (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged) {
      return absl::InvalidArgumentError("a kCuda payload that is not device memory");
    }
    if (attr.device != ordinal()) {
      return absl::InvalidArgumentError(
          absl::StrCat("memory of CUDA device ", attr.device, " given to the copier of device ",
                       ordinal()));
    }
    CUdeviceptr base = 0;
    size_t size = 0;
    const auto ptr = reinterpret_cast<CUdeviceptr>(device);
    if (range_(&base, &size, ptr) != CUDA_SUCCESS) {
      return absl::InvalidArgumentError("cuMemGetAddressRange does not know this device pointer");
    }
    if (ptr - base > size || bytes > size - (ptr - base)) {
      return absl::InvalidArgumentError(absl::StrCat(
          bytes, " device bytes at offset ", ptr - base, " of an allocation of ", size));
    }
    return absl::OkStatus();
  }

  absl::Status Copy(void* dst, const void* src, const void* device, size_t bytes,
                    cudaMemcpyKind kind, Deadline deadline) {
    if (bytes == 0) return absl::OkStatus();
    absl::MutexLock lock(&mu_);
    KVWIRE_RETURN_IF_ERROR(FromCuda(cudaSetDevice(ordinal()), "cudaSetDevice"));
    KVWIRE_RETURN_IF_ERROR(CheckDeviceRange(device, bytes));
    KVWIRE_RETURN_IF_ERROR(FromCuda(cudaMemcpyAsync(dst, src, bytes, kind, ctx_->stream()),
                                    kind == cudaMemcpyDeviceToHost
                                        ? "cudaMemcpyAsync(device to host)"
                                        : "cudaMemcpyAsync(host to device)"));
    return ctx_->Synchronize(deadline.Remaining());
  }

  const std::unique_ptr<Context> ctx_;
  GetAddressRange range_;
  absl::Mutex mu_;  // one copy at a time on ctx_'s stream
};

}  // namespace

absl::StatusOr<std::shared_ptr<DeviceCopier>> MakeDeviceCopier(int device) {
  return CudaCopier::Create(device);
}

}  // namespace kvwire::kernels::cuda
