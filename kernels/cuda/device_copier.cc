#include "kernels/cuda/device_copier.h"

#include <cuda.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>
#include <thread>

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
    KVWIRE_RETURN_IF_ERROR(ProbeDevice());
    int count = 0;
    KVWIRE_RETURN_IF_ERROR(FromCuda(cudaGetDeviceCount(&count), "cudaGetDeviceCount"));
    if (device < 0 || device >= count) {
      return absl::InvalidArgumentError(
          absl::StrCat("CUDA device ", device, " requested, ", count, " present"));
    }
    KVWIRE_RETURN_IF_ERROR(FromCuda(cudaSetDevice(device), "cudaSetDevice"));
    cudaDeviceProp prop{};
    KVWIRE_RETURN_IF_ERROR(FromCuda(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties"));
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found{};
    KVWIRE_RETURN_IF_ERROR(FromCuda(
        cudaGetDriverEntryPointByVersion("cuMemGetAddressRange", &fn, 12000, cudaEnableDefault,
                                         &found),
        "cudaGetDriverEntryPointByVersion(cuMemGetAddressRange)"));
    if (found != cudaDriverEntryPointSuccess || fn == nullptr) {
      return absl::UnavailableError("the CUDA driver has no cuMemGetAddressRange");
    }
    cudaStream_t stream = nullptr;
    KVWIRE_RETURN_IF_ERROR(
        FromCuda(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate"));
    return std::shared_ptr<DeviceCopier>(new CudaCopier(
        device, absl::StrCat("cuda:", device, " ", prop.name), stream,
        reinterpret_cast<GetAddressRange>(fn)));
  }

  ~CudaCopier() override {
    cudaSetDevice(device_);
    if (cudaError_t e = cudaStreamDestroy(stream_); e != cudaSuccess) {
      KVWIRE_LOG(WARNING) << "cudaStreamDestroy: " << cudaGetErrorString(e);
    }
  }

  std::string description() const override { return description_; }

  absl::StatusOr<void*> AllocatePinned(size_t bytes) override {
    if (bytes == 0) return absl::InvalidArgumentError("pinning zero bytes");
    KVWIRE_RETURN_IF_ERROR(FromCuda(cudaSetDevice(device_), "cudaSetDevice"));
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
  CudaCopier(int device, std::string description, cudaStream_t stream, GetAddressRange range)
      : device_(device), description_(std::move(description)), stream_(stream), range_(range) {}

  // INVALID_ARGUMENT unless [device, device + bytes) lies in one allocation of device_.
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
    if (attr.device != device_) {
      return absl::InvalidArgumentError(
          absl::StrCat("memory of CUDA device ", attr.device, " given to the copier of device ",
                       device_));
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
    KVWIRE_RETURN_IF_ERROR(FromCuda(cudaSetDevice(device_), "cudaSetDevice"));
    KVWIRE_RETURN_IF_ERROR(CheckDeviceRange(device, bytes));
    KVWIRE_RETURN_IF_ERROR(FromCuda(cudaMemcpyAsync(dst, src, bytes, kind, stream_),
                                    kind == cudaMemcpyDeviceToHost
                                        ? "cudaMemcpyAsync(device to host)"
                                        : "cudaMemcpyAsync(host to device)"));
    while (true) {
      const cudaError_t e = cudaStreamQuery(stream_);
      if (e != cudaErrorNotReady) return FromCuda(e, "cudaStreamQuery(staging copy)");
      if (deadline.Expired()) {
        return absl::DeadlineExceededError(
            absl::StrCat("a staging copy of ", bytes, " bytes did not finish in time"));
      }
      std::this_thread::yield();
    }
  }

  const int device_;
  const std::string description_;
  cudaStream_t stream_;
  GetAddressRange range_;
  absl::Mutex mu_;  // one copy at a time on stream_
};

}  // namespace

absl::StatusOr<std::shared_ptr<DeviceCopier>> MakeDeviceCopier(int device) {
  return CudaCopier::Create(device);
}

}  // namespace kvwire::kernels::cuda
