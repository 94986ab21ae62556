#include "kvwire/transport/staging_pool.h"

#include <bit>
#include <map>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace kvwire::transport {

struct StagingPool::Block {
  void* data = nullptr;
  size_t bytes = 0;
  std::unique_ptr<MemoryRegion> region;
};

// Shared by the pool and its leases, so that a lease may end after the pool.
struct StagingPool::State {
  std::shared_ptr<DeviceCopier> copier;
  Options options;
  absl::Mutex mu;
  bool closed ABSL_GUARDED_BY(mu) = false;
  // Idle blocks by size class; every block that exists is in `idle`, leased or quarantined.
  std::multimap<size_t, std::unique_ptr<Block>> idle ABSL_GUARDED_BY(mu);
  std::map<Block*, std::unique_ptr<Block>> leased ABSL_GUARDED_BY(mu);
  std::vector<std::unique_ptr<Block>> quarantined ABSL_GUARDED_BY(mu);
  Stats stats ABSL_GUARDED_BY(mu);

  void Free(std::unique_ptr<Block> block) {
    block->region.reset();
    copier->FreePinned(block->data);
  }
};

size_t StagingPool::BlockBytes(size_t bytes) {
  return std::bit_ceil(std::max(bytes, kMinBlockBytes));
}

StagingPool::StagingPool(std::shared_ptr<DeviceCopier> copier, Options options)
    : state_(std::make_shared<State>()) {
  state_->copier = std::move(copier);
  state_->options = std::move(options);
}

DeviceCopier& StagingPool::copier() const { return *state_->copier; }

StagingPool::~StagingPool() {
  std::vector<std::unique_ptr<Block>> to_free;
  {
    absl::MutexLock lock(&state_->mu);
    state_->closed = true;
    for (auto& [bytes, block] : state_->idle) to_free.push_back(std::move(block));
    state_->idle.clear();
    for (auto& block : state_->quarantined) to_free.push_back(std::move(block));
    state_->quarantined.clear();
    // Blocks still leased lose their registration now; their memory goes with the lease.
    for (auto& [raw, block] : state_->leased) block->region.reset();
  }
  for (auto& block : to_free) state_->Free(std::move(block));
}

absl::StatusOr<StagingPool::Lease> StagingPool::Acquire(size_t bytes) {
  if (bytes == 0) return absl::InvalidArgumentError("a staging buffer of zero bytes");
  State& s = *state_;
  if (bytes > s.options.limit_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("a payload of ", bytes, " bytes exceeds the staging limit of ",
                     s.options.limit_bytes, " pinned bytes"));
  }
  const size_t block_bytes = BlockBytes(bytes);
  Lease lease;
  lease.state_ = state_;
  lease.bytes_ = bytes;
  {
    absl::MutexLock lock(&s.mu);
    if (s.stats.leased_bytes + block_bytes > s.options.limit_bytes) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "staging ", bytes, " bytes would pass the limit of ", s.options.limit_bytes,
          " pinned bytes (", s.stats.leased_bytes, " in use)"));
    }
    if (auto it = s.idle.find(block_bytes); it != s.idle.end()) {
      lease.block_ = it->second.get();
      s.leased[lease.block_] = std::move(it->second);
      s.idle.erase(it);
      s.stats.idle_bytes -= block_bytes;
      s.stats.leased_bytes += block_bytes;
      ++s.stats.leases;
      return lease;
    }
    // Reserve the bytes now so concurrent callers respect the limit while this one allocates.
    s.stats.leased_bytes += block_bytes;
  }
  auto unreserve = [&s, block_bytes] {
    absl::MutexLock lock(&s.mu);
    s.stats.leased_bytes -= block_bytes;
  };
  absl::StatusOr<void*> data = s.copier->AllocatePinned(block_bytes);
  if (!data.ok()) {
    unreserve();
    return data.status();
  }
  auto block = std::make_unique<Block>();
  block->data = *data;
  block->bytes = block_bytes;
  if (s.options.register_block) {
    absl::StatusOr<std::unique_ptr<MemoryRegion>> region =
        s.options.register_block(block->data, block_bytes);
    if (!region.ok()) {
      unreserve();
      s.copier->FreePinned(block->data);
      return region.status();
    }
    block->region = std::move(*region);
  }
  lease.block_ = block.get();
  absl::MutexLock lock(&s.mu);
  s.leased[lease.block_] = std::move(block);
  ++s.stats.blocks_allocated;
  ++s.stats.leases;
  return lease;
}

StagingPool::Stats StagingPool::stats() const {
  absl::MutexLock lock(&state_->mu);
  return state_->stats;
}

StagingPool::Lease::Lease(Lease&& other) noexcept
    : state_(std::move(other.state_)),
      block_(std::exchange(other.block_, nullptr)),
      bytes_(std::exchange(other.bytes_, 0)) {}

StagingPool::Lease& StagingPool::Lease::operator=(Lease&& other) noexcept {
  if (this != &other) {
    Release();
    state_ = std::move(other.state_);
    block_ = std::exchange(other.block_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

StagingPool::Lease::~Lease() { Release(); }

uint8_t* StagingPool::Lease::data() const {
  return block_ == nullptr ? nullptr : static_cast<uint8_t*>(block_->data);
}

const MemoryRegion* StagingPool::Lease::region() const {
  if (block_ == nullptr) return nullptr;
  absl::MutexLock lock(&state_->mu);
  return block_->region.get();
}

void StagingPool::Lease::Quarantine() {
  if (block_ == nullptr) return;
  State& s = *state_;
  {
    absl::MutexLock lock(&s.mu);
    auto it = s.leased.find(block_);
    s.stats.leased_bytes -= block_->bytes;
    ++s.stats.quarantined;
    // After the pool closed the block is kept leaked: the device may still write into it.
    if (!s.closed) s.quarantined.push_back(std::move(it->second));
    else it->second.release();
    s.leased.erase(it);
  }
  block_ = nullptr;
  bytes_ = 0;
  state_.reset();
}

void StagingPool::Lease::Release() {
  if (block_ == nullptr) return;
  State& s = *state_;
  std::unique_ptr<Block> to_free;
  {
    absl::MutexLock lock(&s.mu);
    auto it = s.leased.find(block_);
    std::unique_ptr<Block> block = std::move(it->second);
    s.leased.erase(it);
    s.stats.leased_bytes -= block->bytes;
    if (!s.closed && s.stats.idle_bytes + block->bytes <= s.options.keep_bytes) {
      s.stats.idle_bytes += block->bytes;
      s.idle.emplace(block->bytes, std::move(block));
    } else {
      to_free = std::move(block);
    }
  }
  if (to_free) s.Free(std::move(to_free));
  block_ = nullptr;
  bytes_ = 0;
  state_.reset();
}

}  // namespace kvwire::transport
