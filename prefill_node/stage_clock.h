// prefill_node/stage_clock.h — the monotonic clock the prefill stages are timed with.
#ifndef KVWIRE_PREFILL_NODE_STAGE_CLOCK_H_
#define KVWIRE_PREFILL_NODE_STAGE_CLOCK_H_

#include <chrono>

namespace kvwire::prefill {

using Clock = std::chrono::steady_clock;

// Seconds from `t` to now.
inline double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

}  // namespace kvwire::prefill

#endif  // KVWIRE_PREFILL_NODE_STAGE_CLOCK_H_
