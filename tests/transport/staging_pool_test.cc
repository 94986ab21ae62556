// StagingPool: size classes, reuse, the leased-bytes limit, registration, quarantine, and leases
// that outlive their pool. Runs on the host with a fake copier.
#include "kvwire/transport/staging_pool.h"

#include <memory>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"
#include "tests/transport/fake_device_copier.h"

namespace kvwire::transport {
namespace {

using testing::FakeDeviceCopier;

constexpr size_t kKiB = 1024;
constexpr size_t kMiB = 1024 * 1024;

// A registration that records its lifetime.
class CountedRegion final : public MemoryRegion {
 public:
  CountedRegion(void* data, size_t size, int* live) : data_(data), size_(size), live_(live) {
    ++*live_;
  }
  ~CountedRegion() override { --*live_; }
  void* data() const override { return data_; }
  size_t size() const override { return size_; }
  MemoryKind kind() const override { return MemoryKind::kHost; }

 private:
  void* data_;
  size_t size_;
  int* live_;
};

TEST(StagingPool, SizeClassesArePowersOfTwoFrom64KiB) {
  EXPECT_EQ(StagingPool::BlockBytes(1), 64 * kKiB);
  EXPECT_EQ(StagingPool::BlockBytes(64 * kKiB), 64 * kKiB);
  EXPECT_EQ(StagingPool::BlockBytes(64 * kKiB + 1), 128 * kKiB);
  EXPECT_EQ(StagingPool::BlockBytes(3 * kMiB), 4 * kMiB);
}

TEST(StagingPool, ReusesAReturnedBlockOfTheSameClass) {
  auto copier = std::make_shared<FakeDeviceCopier>();
  StagingPool pool(copier, {});
  uint8_t* first = nullptr;
  {
    absl::StatusOr<StagingPool::Lease> a = pool.Acquire(100 * kKiB);
    ASSERT_TRUE(a.ok()) << a.status();
    EXPECT_EQ(a->size(), 100 * kKiB);
    first = a->data();
    EXPECT_EQ(pool.stats().leased_bytes, 128 * kKiB);
  }
  EXPECT_EQ(pool.stats().leased_bytes, 0u);
  EXPECT_EQ(pool.stats().idle_bytes, 128 * kKiB);
  absl::StatusOr<StagingPool::Lease> b = pool.Acquire(120 * kKiB);  // same class
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->data(), first);
  absl::StatusOr<StagingPool::Lease> c = pool.Acquire(120 * kKiB);  // that one is taken
  ASSERT_TRUE(c.ok());
  EXPECT_NE(c->data(), first);
  absl::StatusOr<StagingPool::Lease> d = pool.Acquire(300 * kKiB);  // another class
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(pool.stats().blocks_allocated, 3);
  EXPECT_EQ(pool.stats().leases, 4);
  EXPECT_EQ(copier->counts().pinned_allocations, 3);
}

TEST(StagingPool, RefusesPastTheLimitInsteadOfWaiting) {
  auto copier = std::make_shared<FakeDeviceCopier>();
  StagingPool::Options options;
  options.limit_bytes = 1 * kMiB;
  StagingPool pool(copier, options);
  absl::StatusOr<StagingPool::Lease> big = pool.Acquire(2 * kMiB);
  EXPECT_EQ(big.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(big.status().message().find("staging limit"), std::string::npos) << big.status();
  absl::StatusOr<StagingPool::Lease> half = pool.Acquire(512 * kKiB);
  ASSERT_TRUE(half.ok());
  absl::StatusOr<StagingPool::Lease> other = pool.Acquire(512 * kKiB);
  ASSERT_TRUE(other.ok());
  absl::StatusOr<StagingPool::Lease> more = pool.Acquire(1);
  EXPECT_EQ(more.status().code(), absl::StatusCode::kResourceExhausted);
  half = absl::InternalError("returned");  // ends the lease
  EXPECT_TRUE(pool.Acquire(1).ok());
  EXPECT_EQ(pool.Acquire(0).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(StagingPool, ConcurrentCallersNeverLeaseMoreThanTheLimit) {
  auto copier = std::make_shared<FakeDeviceCopier>();
  StagingPool::Options options;
  options.limit_bytes = 4 * 256 * kKiB;
  StagingPool pool(copier, options);
  absl::Mutex mu;
  size_t peak = 0;
  int refused = 0;
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 200; ++i) {
        absl::StatusOr<StagingPool::Lease> lease = pool.Acquire(200 * kKiB);
        absl::MutexLock lock(&mu);
        if (!lease.ok()) {
          ASSERT_EQ(lease.status().code(), absl::StatusCode::kResourceExhausted);
          ++refused;
          continue;
        }
        peak = std::max(peak, pool.stats().leased_bytes);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_LE(peak, options.limit_bytes);
  EXPECT_EQ(pool.stats().leased_bytes, 0u);
  // Blocks were reused: far fewer pinned allocations than leases.
  EXPECT_LE(copier->counts().pinned_allocations, 4);
}

TEST(StagingPool, KeepsOnlyKeepBytesOfIdleBlocks) {
  auto copier = std::make_shared<FakeDeviceCopier>();
  StagingPool::Options options;
  options.keep_bytes = 128 * kKiB;
  StagingPool pool(copier, options);
  {
    auto a = pool.Acquire(64 * kKiB);
    auto b = pool.Acquire(64 * kKiB);
    auto c = pool.Acquire(64 * kKiB);
    ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  }
  EXPECT_EQ(pool.stats().idle_bytes, 128 * kKiB);
  EXPECT_EQ(copier->counts().pinned_frees, 1);
}

TEST(StagingPool, RegistersEachBlockOnceAndReleasesRegistrationsWithThePool) {
  auto copier = std::make_shared<FakeDeviceCopier>();
  int live = 0;
  int registrations = 0;
  StagingPool::Options options;
  options.register_block = [&](void* data, size_t bytes)
      -> absl::StatusOr<std::unique_ptr<MemoryRegion>> {
    ++registrations;
    return std::make_unique<CountedRegion>(data, bytes, &live);
  };
  std::optional<StagingPool::Lease> outliving;
  {
    StagingPool pool(copier, options);
    for (int i = 0; i < 5; ++i) {
      auto lease = pool.Acquire(70 * kKiB);
      ASSERT_TRUE(lease.ok());
      ASSERT_NE(lease->region(), nullptr);
      EXPECT_EQ(lease->region()->data(), lease->data());
      EXPECT_GE(lease->region()->size(), lease->size());
    }
    EXPECT_EQ(registrations, 1);
    auto kept = pool.Acquire(70 * kKiB);
    ASSERT_TRUE(kept.ok());
    outliving = std::move(*kept);
    auto second = pool.Acquire(70 * kKiB);
    ASSERT_TRUE(second.ok());
    EXPECT_EQ(registrations, 2);
    EXPECT_EQ(live, 2);
  }
  // The pool is gone: every registration with it, the leased block's memory stays usable.
  EXPECT_EQ(live, 0);
  EXPECT_EQ(outliving->region(), nullptr);
  outliving->data()[0] = 1;
  const int64_t frees_before = copier->counts().pinned_frees;
  outliving.reset();
  EXPECT_EQ(copier->counts().pinned_frees, frees_before + 1);
  EXPECT_EQ(copier->counts().pinned_frees, copier->counts().pinned_allocations);
}

TEST(StagingPool, AFailedRegistrationFailsTheAcquireAndFreesTheBlock) {
  auto copier = std::make_shared<FakeDeviceCopier>();
  StagingPool::Options options;
  options.register_block = [](void*, size_t) -> absl::StatusOr<std::unique_ptr<MemoryRegion>> {
    return absl::UnavailableError("registration refused");
  };
  StagingPool pool(copier, options);
  absl::StatusOr<StagingPool::Lease> lease = pool.Acquire(kKiB);
  EXPECT_EQ(lease.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(pool.stats().leased_bytes, 0u);
  EXPECT_EQ(copier->counts().pinned_frees, copier->counts().pinned_allocations);
}

TEST(StagingPool, PinningFailureIsResourceExhaustedAndLeavesNothingLeased) {
  auto copier = std::make_shared<FakeDeviceCopier>();
  copier->FailPinning();
  StagingPool pool(copier, {});
  absl::StatusOr<StagingPool::Lease> lease = pool.Acquire(kKiB);
  EXPECT_EQ(lease.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(pool.stats().leased_bytes, 0u);
}

TEST(StagingPool, AQuarantinedBlockIsNeverLeasedAgain) {
  auto copier = std::make_shared<FakeDeviceCopier>();
  StagingPool pool(copier, {});
  uint8_t* bad = nullptr;
  {
    auto lease = pool.Acquire(kKiB);
    ASSERT_TRUE(lease.ok());
    bad = lease->data();
    lease->Quarantine();
    EXPECT_EQ(lease->data(), nullptr);
  }
  EXPECT_EQ(pool.stats().quarantined, 1);
  EXPECT_EQ(pool.stats().leased_bytes, 0u);
  EXPECT_EQ(pool.stats().idle_bytes, 0u);
  auto next = pool.Acquire(kKiB);
  ASSERT_TRUE(next.ok());
  EXPECT_NE(next->data(), bad);
}

}  // namespace
}  // namespace kvwire::transport
