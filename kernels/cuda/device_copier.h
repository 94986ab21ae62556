// kernels/cuda/device_copier.h — kvwire::DeviceCopier for one CUDA device: pinned host memory
// (cudaHostAlloc) and bounded copies on a private stream, so a transport that cannot touch device
// memory can stage device payloads (UcxOptions::device_copier).
//
//   KVWIRE_ASSIGN_OR_RETURN(std::shared_ptr<DeviceCopier> copier, MakeDeviceCopier(0));
//
// Every copy first checks that the device range lies inside one allocation of this copier's
// device (cuMemGetAddressRange, reached through the runtime so nothing links the driver library):
// a host pointer, another device's memory or a range past its allocation (as far as the driver
// records it, which may round the size up) is INVALID_ARGUMENT and nothing is copied. Copies run one at a time on the copier's stream and are polled to their
// deadline. The device is made current on the calling thread for each call.
#ifndef KVWIRE_KERNELS_CUDA_DEVICE_COPIER_H_
#define KVWIRE_KERNELS_CUDA_DEVICE_COPIER_H_

#include <memory>

#include "absl/status/statusor.h"
#include "kvwire/base/device_copier.h"

namespace kvwire::kernels::cuda {

// UNAVAILABLE without a device; INVALID_ARGUMENT for an ordinal past the device count.
absl::StatusOr<std::shared_ptr<DeviceCopier>> MakeDeviceCopier(int device);

}  // namespace kvwire::kernels::cuda

#endif  // KVWIRE_KERNELS_CUDA_DEVICE_COPIER_H_
