#include "kernels/cuda/device.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/internal.h"
#include "kvwire/base/deadline.h"
#include "kvwire/base/log.h"

namespace kvwire::kernels::cuda {
namespace {

absl::StatusCode CodeForCuda(cudaError_t e) {
  switch (e) {
    case cudaErrorMemoryAllocation:
      return absl::StatusCode::kResourceExhausted;
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorDevicesUnavailable:
    case cudaErrorInitializationError:
    case cudaErrorSystemDriverMismatch:
    case cudaErrorCompatNotSupportedOnDevice:
      return absl::StatusCode::kUnavailable;
    case cudaErrorInvalidValue:
    case cudaErrorInvalidConfiguration:
    case cudaErrorInvalidDevice:
    case cudaErrorInvalidDevicePointer:
    case cudaErrorInvalidMemcpyDirection:
      return absl::StatusCode::kInvalidArgument;
    case cudaErrorLaunchTimeout:
      return absl::StatusCode::kDeadlineExceeded;
    case cudaErrorNoKernelImageForDevice:
    case cudaErrorUnsupportedPtxVersion:
      return absl::StatusCode::kFailedPrecondition;
    default:
      return absl::StatusCode::kInternal;
  }
}

// Polls `query` (cudaStreamQuery / cudaEventQuery) until it stops answering cudaErrorNotReady or
// `timeout` passes. Yields between polls so a long kernel does not burn a host core.
template <typename Query>
absl::Status PollUntilDone(Query query, absl::Duration timeout, absl::string_view what) {
  const Deadline deadline = Deadline::In(timeout);
  while (true) {
    const cudaError_t e = query();
    if (e != cudaErrorNotReady) return FromCuda(e, what);
    if (deadline.Expired()) {
      return absl::DeadlineExceededError(
          absl::StrCat(what, ": device work not finished after ", absl::FormatDuration(timeout)));
    }
    std::this_thread::yield();
  }
}

}  // namespace

absl::Status FromCuda(int error, absl::string_view call) {
  const auto e = static_cast<cudaError_t>(error);
  if (e == cudaSuccess) return absl::OkStatus();
  // The runtime also recorded the error as the thread's last one: it is reported here, so clear
  // it, or the next CheckLaunch would blame an unrelated kernel (sticky errors stay sticky).
  (void)cudaGetLastError();
  return absl::Status(CodeForCuda(e), absl::StrCat(call, " failed: ", cudaGetErrorName(e), " (",
                                                   cudaGetErrorString(e), ")"));
}

absl::Status FromCublas(int status, absl::string_view call) {
  const auto s = static_cast<cublasStatus_t>(status);
  if (s == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  absl::StatusCode code = absl::StatusCode::kInternal;
  switch (s) {
    case CUBLAS_STATUS_ALLOC_FAILED:
      code = absl::StatusCode::kResourceExhausted;
      break;
    case CUBLAS_STATUS_INVALID_VALUE:
      code = absl::StatusCode::kInvalidArgument;
      break;
    case CUBLAS_STATUS_NOT_SUPPORTED:
    case CUBLAS_STATUS_ARCH_MISMATCH:
      code = absl::StatusCode::kFailedPrecondition;
      break;
    case CUBLAS_STATUS_NOT_INITIALIZED:
      code = absl::StatusCode::kUnavailable;
      break;
    default:
      break;
  }
  return absl::Status(code, absl::StrCat(call, " failed: ", cublasGetStatusName(s), " (",
                                         cublasGetStatusString(s), ")"));
}

absl::Status ProbeDevice() {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    // Clear the sticky-free error so later calls do not report it again.
    (void)cudaGetLastError();
    return absl::UnavailableError(
        absl::StrCat("no CUDA device: cudaGetDeviceCount: ", cudaGetErrorName(e), " (",
                     cudaGetErrorString(e), ")"));
  }
  if (count == 0) return absl::UnavailableError("no CUDA device: cudaGetDeviceCount returned 0");
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Context>> Context::Create(int device) {
  KVWIRE_RETURN_IF_ERROR(ProbeDevice());
  int count = 0;
  KVWIRE_CUDA_RETURN_IF_ERROR(cudaGetDeviceCount(&count));
  if (device < 0 || device >= count) {
    return absl::InvalidArgumentError(
        absl::StrCat("CUDA device ", device, " requested, ", count, " present"));
  }
  KVWIRE_CUDA_RETURN_IF_ERROR(cudaSetDevice(device));
  cudaDeviceProp prop{};
  KVWIRE_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, device));
  std::unique_ptr<Context> ctx(new Context());
  ctx->props_ = {prop.name,
                 device,
                 prop.major,
                 prop.minor,
                 prop.multiProcessorCount,
                 static_cast<int64_t>(prop.totalGlobalMem),
                 prop.l2CacheSize,
                 static_cast<int64_t>(prop.sharedMemPerBlockOptin)};
  cudaStream_t stream = nullptr;
  KVWIRE_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  ctx->stream_ = stream;
  cublasHandle_t handle = nullptr;
  KVWIRE_RETURN_IF_ERROR(FromCublas(cublasCreate(&handle), "cublasCreate"));
  ctx->cublas_ = handle;
  KVWIRE_RETURN_IF_ERROR(FromCublas(cublasSetStream(handle, stream), "cublasSetStream"));
  return ctx;
}

Context::~Context() {
  for (void* scratch : scratch_) {
    if (scratch == nullptr) continue;
    if (absl::Status s = FromCuda(cudaFree(scratch), "cudaFree(scratch)"); !s.ok()) {
      KVWIRE_LOG(WARNING) << s;
    }
  }
  if (cublas_ != nullptr) {
    if (absl::Status s = FromCublas(cublasDestroy(cublas_), "cublasDestroy"); !s.ok()) {
      KVWIRE_LOG(WARNING) << s;
    }
  }
  if (stream_ != nullptr) {
    if (absl::Status s = FromCuda(cudaStreamDestroy(stream_), "cudaStreamDestroy"); !s.ok()) {
      KVWIRE_LOG(WARNING) << s;
    }
  }
}

absl::Status Context::Synchronize(absl::Duration timeout) {
  return PollUntilDone([this] { return cudaStreamQuery(stream_); }, timeout, "cudaStreamQuery");
}

absl::Status Context::CheckLaunch(absl::string_view kernel) const {
  return FromCuda(cudaGetLastError(), absl::StrCat("launch of ", kernel));
}

absl::StatusOr<void*> Context::Scratch(size_t bytes, int slot) {
  if (slot < 0 || slot >= kScratchSlots) {
    return absl::InvalidArgumentError(absl::StrCat("scratch slot ", slot, " out of range"));
  }
  if (bytes <= scratch_bytes_[slot]) return scratch_[slot];
  if (scratch_[slot] != nullptr) {
    KVWIRE_CUDA_RETURN_IF_ERROR(cudaFree(scratch_[slot]));
    scratch_[slot] = nullptr;
    scratch_bytes_[slot] = 0;
  }
  // Grow geometrically so a slowly rising size does not reallocate every call.
  const size_t want = std::max<size_t>(256, bytes + bytes / 2);
  KVWIRE_RETURN_IF_ERROR(FromCuda(cudaMalloc(&scratch_[slot], want),
                                  absl::StrCat("cudaMalloc(", want, " bytes scratch)")));
  scratch_bytes_[slot] = want;
  return scratch_[slot];
}

absl::StatusOr<DeviceBuffer> DeviceBuffer::Allocate(size_t bytes) {
  DeviceBuffer buf;
  if (bytes == 0) return buf;
  KVWIRE_RETURN_IF_ERROR(
      FromCuda(cudaMalloc(&buf.ptr_, bytes), absl::StrCat("cudaMalloc(", bytes, " bytes)")));
  buf.bytes_ = bytes;
  return buf;
}

DeviceBuffer::~DeviceBuffer() {
  if (ptr_ == nullptr) return;
  if (absl::Status s = FromCuda(cudaFree(ptr_), "cudaFree"); !s.ok()) KVWIRE_LOG(WARNING) << s;
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : ptr_(std::exchange(other.ptr_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    DeviceBuffer old(std::move(*this));
    ptr_ = std::exchange(other.ptr_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

absl::Status DeviceBuffer::Upload(Context& ctx, const void* host, size_t bytes, size_t offset) {
  if (offset > bytes_ || bytes > bytes_ - offset) {
    return absl::InvalidArgumentError(absl::StrCat("upload of ", bytes, " bytes at ", offset,
                                                   " into a ", bytes_, "-byte device buffer"));
  }
  if (bytes == 0) return absl::OkStatus();
  return FromCuda(cudaMemcpyAsync(static_cast<char*>(ptr_) + offset, host, bytes,
                                  cudaMemcpyHostToDevice, ctx.stream()),
                  "cudaMemcpyAsync(host to device)");
}

absl::Status DeviceBuffer::Download(Context& ctx, void* host, size_t bytes, size_t offset,
                                    absl::Duration timeout) const {
  if (offset > bytes_ || bytes > bytes_ - offset) {
    return absl::InvalidArgumentError(absl::StrCat("download of ", bytes, " bytes at ", offset,
                                                   " from a ", bytes_, "-byte device buffer"));
  }
  if (bytes == 0) return absl::OkStatus();
  KVWIRE_RETURN_IF_ERROR(FromCuda(cudaMemcpyAsync(host, static_cast<const char*>(ptr_) + offset,
                                                  bytes, cudaMemcpyDeviceToHost, ctx.stream()),
                                  "cudaMemcpyAsync(device to host)"));
  return ctx.Synchronize(timeout);
}

absl::Status DeviceBuffer::Zero(Context& ctx) {
  if (bytes_ == 0) return absl::OkStatus();
  return FromCuda(cudaMemsetAsync(ptr_, 0, bytes_, ctx.stream()), "cudaMemsetAsync");
}

absl::Status CopyDeviceToDevice(Context& ctx, void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return absl::OkStatus();
  return FromCuda(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, ctx.stream()),
                  "cudaMemcpyAsync(device to device)");
}

absl::Status ZeroDevice(Context& ctx, void* dst, size_t bytes) {
  if (bytes == 0) return absl::OkStatus();
  return FromCuda(cudaMemsetAsync(dst, 0, bytes, ctx.stream()), "cudaMemsetAsync");
}

absl::Status CopyRows(Context& ctx, void* dst, size_t dst_pitch, const void* src, size_t src_pitch,
                      size_t width, size_t rows) {
  if (width == 0 || rows == 0) return absl::OkStatus();
  return FromCuda(cudaMemcpy2DAsync(dst, dst_pitch, src, src_pitch, width, rows,
                                    cudaMemcpyDeviceToDevice, ctx.stream()),
                  "cudaMemcpy2DAsync(device to device)");
}

absl::StatusOr<StreamTimer> StreamTimer::Create(Context& ctx) {
  cudaEvent_t start = nullptr, stop = nullptr;
  KVWIRE_CUDA_RETURN_IF_ERROR(cudaEventCreate(&start));
  if (absl::Status s = FromCuda(cudaEventCreate(&stop), "cudaEventCreate"); !s.ok()) {
    (void)cudaEventDestroy(start);
    return s;
  }
  return StreamTimer(&ctx, start, stop);
}

StreamTimer::~StreamTimer() {
  if (start_ != nullptr) (void)cudaEventDestroy(start_);
  if (stop_ != nullptr) (void)cudaEventDestroy(stop_);
}

StreamTimer::StreamTimer(StreamTimer&& other) noexcept
    : ctx_(other.ctx_),
      start_(std::exchange(other.start_, nullptr)),
      stop_(std::exchange(other.stop_, nullptr)) {}

absl::Status StreamTimer::Start() {
  return FromCuda(cudaEventRecord(start_, ctx_->stream()), "cudaEventRecord(start)");
}

absl::StatusOr<double> StreamTimer::StopMillis(absl::Duration timeout) {
  KVWIRE_RETURN_IF_ERROR(FromCuda(cudaEventRecord(stop_, ctx_->stream()), "cudaEventRecord(stop)"));
  KVWIRE_RETURN_IF_ERROR(
      PollUntilDone([this] { return cudaEventQuery(stop_); }, timeout, "cudaEventQuery"));
  float ms = 0;
  KVWIRE_CUDA_RETURN_IF_ERROR(cudaEventElapsedTime(&ms, start_, stop_));
  return static_cast<double>(ms);
}

}  // namespace kvwire::kernels::cuda
