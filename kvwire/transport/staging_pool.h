// kvwire/transport/staging_pool.h — pinned host buffers through which a transport carries
// payloads of device memory when its wire cannot touch device memory itself.
//
// A send of device memory copies the payload into a leased pinned block (DeviceCopier::ToHost)
// and sends the block; a receive into device memory lands in a leased block and is copied to its
// destination (DeviceCopier::ToDevice) before the frame completes. Blocks come in power-of-two
// size classes from 64 KiB, are registered once with the transport (Options::register_block, so
// rendezvous reads and writes them in place) and are reused; idle blocks beyond
// Options::keep_bytes are freed.
//
//   StagingPool pool(copier, {.limit_bytes = 1 << 30});
//   absl::StatusOr<StagingPool::Lease> lease = pool.Acquire(payload_bytes);   // or an error
//   copier->ToHost(lease->data(), device_payload, payload_bytes, deadline);
//   ... send lease->data() ... ; the lease returns the block when destroyed.
//
// Limits: at most Options::limit_bytes (counted in whole blocks) are leased at once; Acquire past
// that fails with RESOURCE_EXHAUSTED instead of waiting, so a burst of large transfers cannot pin
// all host memory. A block whose copy timed out is quarantined (Lease::Quarantine): the device may
// still write into it, so it is never leased again and only freed with the pool.
//
// Thread-safety: thread-safe. Leases may outlive the pool: destroying the pool releases every
// block's registration at once (the transport destroys its pool before its own resources) and
// the memory of a block still leased is freed when its lease ends.
#ifndef KVWIRE_TRANSPORT_STAGING_POOL_H_
#define KVWIRE_TRANSPORT_STAGING_POOL_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>

#include "absl/status/statusor.h"
#include "kvwire/base/device_copier.h"
#include "kvwire/transport/transport.h"

namespace kvwire::transport {

class StagingPool {
 public:
  struct Options {
    size_t limit_bytes = size_t{1} << 30;  // leased at once (whole blocks)
    size_t keep_bytes = size_t{256} << 20;  // idle blocks kept for reuse
    // Registers a new block with the transport; its result lives as long as the block (or the
    // pool). Unset: blocks are not registered. A failed registration fails the Acquire.
    std::function<absl::StatusOr<std::unique_ptr<MemoryRegion>>(void* data, size_t bytes)>
        register_block;
  };

  struct Stats {
    int64_t blocks_allocated = 0;  // pinned allocations made
    int64_t leases = 0;            // Acquire calls that succeeded
    int64_t quarantined = 0;
    size_t leased_bytes = 0;  // whole blocks, now
    size_t idle_bytes = 0;    // now
  };

  struct Block;
  struct State;

  // A leased block, move-only. Returns its block to the pool when destroyed.
  class Lease {
   public:
    Lease() = default;
    Lease(Lease&& other) noexcept;
    Lease& operator=(Lease&& other) noexcept;
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease();

    uint8_t* data() const;
    size_t size() const { return bytes_; }  // the bytes asked for (the block may be larger)
    // The block's registration (from Options::register_block), or nullptr.
    const MemoryRegion* region() const;
    // Never lease this block again (a copy into or out of it did not finish in time).
    void Quarantine();

   private:
    friend class StagingPool;
    void Release();
    std::shared_ptr<State> state_;
    Block* block_ = nullptr;
    size_t bytes_ = 0;
  };

  StagingPool(std::shared_ptr<DeviceCopier> copier, Options options);
  ~StagingPool();
  StagingPool(const StagingPool&) = delete;
  StagingPool& operator=(const StagingPool&) = delete;

  // A block of at least `bytes` (> 0) bytes: an idle one of the right class, else a new pinned
  // allocation. RESOURCE_EXHAUSTED past Options::limit_bytes or when pinning fails;
  // INVALID_ARGUMENT for zero bytes.
  absl::StatusOr<Lease> Acquire(size_t bytes);

  DeviceCopier& copier() const;
  Stats stats() const;

  // The size class of `bytes`: the next power of two, at least kMinBlockBytes.
  static size_t BlockBytes(size_t bytes);
  static constexpr size_t kMinBlockBytes = size_t{64} << 10;

 private:
  std::shared_ptr<State> state_;
};

}  // namespace kvwire::transport

#endif  // KVWIRE_TRANSPORT_STAGING_POOL_H_
