// kvwire/base/handle.h — a generic move-only owner for C handles.
//
//   struct WorkerTraits {
//     static constexpr ucp_worker_h kNull = nullptr;
//     static void Close(ucp_worker_h w) noexcept { ucp_worker_destroy(w); }
//   };
//   using WorkerHandle = UniqueHandle<ucp_worker_h, WorkerTraits>;
//
// Traits provide `kNull` (the empty value) and a noexcept `Close(T)` that releases a non-null
// handle and at most logs. Thread-compatible, like std::unique_ptr.
#ifndef KVWIRE_BASE_HANDLE_H_
#define KVWIRE_BASE_HANDLE_H_

#include <utility>

namespace kvwire {

template <typename T, typename Traits>
class UniqueHandle {
 public:
  UniqueHandle() = default;
  explicit UniqueHandle(T handle) : handle_(handle) {}
  ~UniqueHandle() { reset(); }

  UniqueHandle(const UniqueHandle&) = delete;
  UniqueHandle& operator=(const UniqueHandle&) = delete;
  UniqueHandle(UniqueHandle&& other) noexcept : handle_(other.release()) {}
  UniqueHandle& operator=(UniqueHandle&& other) noexcept {
    if (this != &other) reset(other.release());
    return *this;
  }

  T get() const { return handle_; }
  explicit operator bool() const { return handle_ != Traits::kNull; }

  // Gives up ownership without closing.
  [[nodiscard]] T release() { return std::exchange(handle_, Traits::kNull); }

  // Closes the current handle (if any) and takes `handle`.
  void reset(T handle = Traits::kNull) noexcept {
    T old = std::exchange(handle_, handle);
    if (old != Traits::kNull) Traits::Close(old);
  }

 private:
  T handle_ = Traits::kNull;
};

}  // namespace kvwire

#endif  // KVWIRE_BASE_HANDLE_H_
