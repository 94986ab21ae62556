// kvwire/transport/nccl/nccl_transport.h — the Transport over NCCL, for GPU clusters.
//
// One NcclTransport is one end of one prefill/decode pair (one communicator per pair):
//   decode (receiver):  t = MakeNcclTransport(); address = t->LocalAddress();
//                       // "nccl1" + the 128-byte ncclUniqueId; carry it in the gRPC grant.
//                       // The first LocalAddress() call makes t the receiving end (rank 1) and
//                       // starts joining the communicator in the background.
//   prefill (sender):   c = MakeNcclTransport()->Connect(address, deadline);  // rank 0
// Payloads move by ncclSend/ncclRecv on a dedicated CUDA stream. Per frame, with a
// length-prefix protocol: the sender sends a fixed 4168-byte control block (transport header and
// frame header, see wire_header.h); the receiver runs the Acceptor and answers with a 256-byte
// status block; only after an accept does the payload follow, so a rejected frame writes nothing;
// a final status block confirms delivery. Host payloads and destinations are staged through a
// device buffer.
//
// Failure: a wait past its deadline, or an asynchronous NCCL error (peer gone: ncclRemoteError /
// ncclSystemError), aborts the communicator (ncclCommAbort) and fails everything with
// UNAVAILABLE (DEADLINE_EXCEEDED for the operation whose deadline passed). A clean shutdown
// (the sender's transport destroyed after its sends finished) ends with ncclCommDestroy.
//
// Thread-safety: as the Transport interface. This header is NCCL- and CUDA-free.
#ifndef KVWIRE_TRANSPORT_NCCL_NCCL_TRANSPORT_H_
#define KVWIRE_TRANSPORT_NCCL_NCCL_TRANSPORT_H_

#include <memory>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "kvwire/transport/transport.h"

namespace kvwire::transport {

struct NcclOptions {
  int cuda_device = 0;
  // How long a sender's Connect and every protocol step may take before the pair is aborted.
  absl::Duration step_timeout = absl::Seconds(30);
};

// FAILED_PRECONDITION when no CUDA device is usable.
absl::StatusOr<std::unique_ptr<Transport>> MakeNcclTransport(const NcclOptions& options = {});

}  // namespace kvwire::transport

#endif  // KVWIRE_TRANSPORT_NCCL_NCCL_TRANSPORT_H_
