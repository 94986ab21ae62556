// kernels/cuda/device.h — the CUDA device layer of the kernels: device probe, error translation,
// a stream + cuBLAS context, device buffers and stream timing.
//
// Every function of kernels/cuda takes a Context and enqueues its work on the context's stream;
// results are visible to the host after Context::Synchronize (or a Download, which synchronises).
// This header declares CUDA handle types opaquely so callers never include CUDA headers.
//
// Thread-safety: a Context and its buffers are used by one thread at a time; different Contexts
// may be used concurrently. Errors: a CUDA/cuBLAS error becomes a Status naming the call
// (FromCuda/FromCublas); no device -> UNAVAILABLE "no CUDA device: <reason>"; out of device memory
// -> RESOURCE_EXHAUSTED; bad arguments -> INVALID_ARGUMENT; a wait past its timeout ->
// DEADLINE_EXCEEDED. Nothing throws.
#ifndef KVWIRE_KERNELS_CUDA_DEVICE_H_
#define KVWIRE_KERNELS_CUDA_DEVICE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

struct CUstream_st;    // cudaStream_t is CUstream_st*
struct CUevent_st;     // cudaEvent_t is CUevent_st*
struct cublasContext;  // cublasHandle_t is cublasContext*

namespace kvwire::kernels::cuda {

// `error` is a cudaError_t value; OK for cudaSuccess. The message names `call`, the CUDA error
// name and its description. Codes: memory allocation -> RESOURCE_EXHAUSTED; no device, driver
// missing or too old, device unavailable -> UNAVAILABLE; invalid value/configuration ->
// INVALID_ARGUMENT; launch timeout -> DEADLINE_EXCEEDED; anything else -> INTERNAL. A non-OK
// result also clears the thread's last CUDA error (cudaGetLastError), which the runtime set to the
// same error, so the next CheckLaunch reports only its own launch.
absl::Status FromCuda(int error, absl::string_view call);
// `status` is a cublasStatus_t value; same conventions (ALLOC_FAILED -> RESOURCE_EXHAUSTED,
// INVALID_VALUE -> INVALID_ARGUMENT, NOT_SUPPORTED/ARCH_MISMATCH -> FAILED_PRECONDITION).
absl::Status FromCublas(int status, absl::string_view call);

// OK when at least one CUDA device is usable, else UNAVAILABLE "no CUDA device: <reason>". Never
// blocks for long and never aborts: without a driver the CUDA runtime returns an error at once.
absl::Status ProbeDevice();

struct DeviceProperties {
  std::string name;
  int ordinal = 0;
  int major = 0, minor = 0;  // compute capability
  int sm_count = 0;
  int64_t total_memory = 0;      // bytes
  int64_t l2_bytes = 0;          // bytes
  int64_t max_shared_optin = 0;  // bytes of dynamic shared memory a block may opt into
};

// A device, its stream and its cuBLAS handle. Members are released in reverse acquisition order:
// scratch, cuBLAS handle, stream.
class Context {
 public:
  // UNAVAILABLE without a device; INVALID_ARGUMENT for an ordinal past the device count.
  static absl::StatusOr<std::unique_ptr<Context>> Create(int device = 0);
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  CUstream_st* stream() const { return stream_; }
  cublasContext* cublas() const { return cublas_; }
  const DeviceProperties& properties() const { return props_; }

  // Waits for everything enqueued so far, polling so the wait is bounded by `timeout`.
  absl::Status Synchronize(absl::Duration timeout = absl::Seconds(60));
  // Status of the last kernel launch, naming `kernel` (cudaGetLastError).
  absl::Status CheckLaunch(absl::string_view kernel) const;
  // Device scratch of at least `bytes` in one of kScratchSlots independent slots, valid until the
  // next Scratch call for the same slot. Functions that call each other use different slots
  // (documented where they are defined). Work enqueued before a growth still sees the old memory:
  // growing frees it only after the device finished with it (cudaFree synchronises).
  static constexpr int kScratchSlots = 4;
  absl::StatusOr<void*> Scratch(size_t bytes, int slot = 0);

 private:
  Context() = default;
  DeviceProperties props_;
  CUstream_st* stream_ = nullptr;
  cublasContext* cublas_ = nullptr;
  void* scratch_[kScratchSlots] = {};
  size_t scratch_bytes_[kScratchSlots] = {};
};

// Move-only owner of one device allocation.
class DeviceBuffer {
 public:
  // RESOURCE_EXHAUSTED when the device is out of memory. Zero bytes gives an empty buffer.
  static absl::StatusOr<DeviceBuffer> Allocate(size_t bytes);
  DeviceBuffer() = default;
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* data() const { return ptr_; }
  size_t size() const { return bytes_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }

  // Host -> device at byte `offset` (INVALID_ARGUMENT past the end), ordered on ctx's stream.
  absl::Status Upload(Context& ctx, const void* host, size_t bytes, size_t offset = 0);
  // Device -> host; waits for the copy (and the work before it) at most `timeout`.
  absl::Status Download(Context& ctx, void* host, size_t bytes, size_t offset = 0,
                        absl::Duration timeout = absl::Seconds(60)) const;
  absl::Status Zero(Context& ctx);

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// Allocates and uploads a host array.
template <typename T>
absl::StatusOr<DeviceBuffer> ToDevice(Context& ctx, const std::vector<T>& host) {
  absl::StatusOr<DeviceBuffer> buf = DeviceBuffer::Allocate(host.size() * sizeof(T));
  if (!buf.ok()) return buf;
  absl::Status s = buf->Upload(ctx, host.data(), host.size() * sizeof(T));
  if (!s.ok()) return s;
  return buf;
}

// Downloads `n` elements of type T.
template <typename T>
absl::StatusOr<std::vector<T>> ToHost(Context& ctx, const DeviceBuffer& buf, size_t n) {
  std::vector<T> host(n);
  absl::Status s = buf.Download(ctx, host.data(), n * sizeof(T));
  if (!s.ok()) return s;
  return host;
}

// Device-to-device copy on ctx's stream (cudaMemcpyAsync).
absl::Status CopyDeviceToDevice(Context& ctx, void* dst, const void* src, size_t bytes);
// Sets `bytes` bytes at dst (device) to zero on ctx's stream.
absl::Status ZeroDevice(Context& ctx, void* dst, size_t bytes);
// `rows` rows of `width` bytes, device to device, between pitched layouts (cudaMemcpy2DAsync),
// e.g. one head's rows out of an interleaved [rows][heads][dim] array.
absl::Status CopyRows(Context& ctx, void* dst, size_t dst_pitch, const void* src, size_t src_pitch,
                      size_t width, size_t rows);

// Measures stream time between Start and Stop with CUDA events.
class StreamTimer {
 public:
  static absl::StatusOr<StreamTimer> Create(Context& ctx);
  ~StreamTimer();
  StreamTimer(StreamTimer&& other) noexcept;
  StreamTimer& operator=(StreamTimer&&) = delete;
  StreamTimer(const StreamTimer&) = delete;

  absl::Status Start();
  // Records the stop event and waits for it (bounded); returns milliseconds between the events.
  absl::StatusOr<double> StopMillis(absl::Duration timeout = absl::Seconds(60));

 private:
  StreamTimer(Context* ctx, CUevent_st* start, CUevent_st* stop)
      : ctx_(ctx), start_(start), stop_(stop) {}
  Context* ctx_;
  CUevent_st* start_;
  CUevent_st* stop_;
};

}  // namespace kvwire::kernels::cuda

#endif  // KVWIRE_KERNELS_CUDA_DEVICE_H_
