// control_plane/request_stats.h — control-plane request accounting: totals, failures, in-flight,
// KV bytes before and after compression, TTFT percentiles and the most recent requests.
//
// TTFT percentiles are nearest-rank over the last `ttft_window` completed requests; `recent`
// keeps the last `recent_capacity` completed requests, newest first. Thread-safety: thread-safe.
// No error codes.
#ifndef KVWIRE_CONTROL_PLANE_REQUEST_STATS_H_
#define KVWIRE_CONTROL_PLANE_REQUEST_STATS_H_

#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace kvwire::control_plane {

// kvwire.v1.RequestStats without protobuf.
struct RequestRecord {
  uint64_t request_id = 0;
  uint32_t prompt_tokens = 0;
  uint32_t generated_tokens = 0;
  float budget_kept_fraction = 0;
  std::string method;
  uint64_t raw_kv_bytes = 0;
  uint64_t wire_bytes = 0;
  uint64_t kept_entries = 0;
  double prefill_ms = 0;
  double compress_ms = 0;
  double transfer_ms = 0;
  double install_ms = 0;
  double pack_ms = 0;
  double queue_ms = 0;
  double ttft_ms = 0;
  double decode_tokens_per_s = 0;
  std::string prefill_node_id;
  std::string decode_node_id;
  std::string finish_reason;
};

struct StatsSnapshot {
  uint64_t requests_total = 0;  // started
  uint64_t requests_failed = 0;
  uint64_t requests_in_flight = 0;
  uint64_t raw_kv_bytes_total = 0;
  uint64_t wire_bytes_total = 0;
  double ttft_p50_ms = 0;
  double ttft_p99_ms = 0;
  std::vector<RequestRecord> recent;  // newest first
};

// Nearest-rank percentile (q in [0, 1]) of `values`; 0 when empty. Sorts a copy.
double Percentile(std::vector<double> values, double q);

class RequestStatsCollector {
 public:
  explicit RequestStatsCollector(size_t recent_capacity = 32, size_t ttft_window = 1024)
      : recent_capacity_(recent_capacity), ttft_window_(ttft_window) {}

  void Started();
  void Succeeded(const RequestRecord& record);
  void Failed();
  StatsSnapshot Snapshot() const;

 private:
  const size_t recent_capacity_;
  const size_t ttft_window_;
  mutable absl::Mutex mu_;
  StatsSnapshot totals_ ABSL_GUARDED_BY(mu_);  // `recent` and percentiles unused here
  std::deque<RequestRecord> recent_ ABSL_GUARDED_BY(mu_);
  std::deque<double> ttft_ms_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kvwire::control_plane

#endif  // KVWIRE_CONTROL_PLANE_REQUEST_STATS_H_
