#include "control_plane/request_stats.h"

#include <algorithm>
#include <cmath>

namespace kvwire::control_plane {

double Percentile(std::vector<double> values, double q) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const double rank = std::ceil(std::clamp(q, 0.0, 1.0) * values.size());
  const size_t index = rank < 1 ? 0 : static_cast<size_t>(rank) - 1;
  return values[std::min(index, values.size() - 1)];
}

void RequestStatsCollector::Started() {
  absl::MutexLock lock(&mu_);
  ++totals_.requests_total;
  ++totals_.requests_in_flight;
}

void RequestStatsCollector::Succeeded(const RequestRecord& record) {
  absl::MutexLock lock(&mu_);
  if (totals_.requests_in_flight > 0) --totals_.requests_in_flight;
  totals_.raw_kv_bytes_total += record.raw_kv_bytes;
  totals_.wire_bytes_total += record.wire_bytes;
  recent_.push_front(record);
  if (recent_.size() > recent_capacity_) recent_.pop_back();
  ttft_ms_.push_back(record.ttft_ms);
  if (ttft_ms_.size() > ttft_window_) ttft_ms_.pop_front();
}

void RequestStatsCollector::Failed() {
  absl::MutexLock lock(&mu_);
  if (totals_.requests_in_flight > 0) --totals_.requests_in_flight;
  ++totals_.requests_failed;
}

StatsSnapshot RequestStatsCollector::Snapshot() const {
  absl::MutexLock lock(&mu_);
  StatsSnapshot out = totals_;
  out.recent.assign(recent_.begin(), recent_.end());
  const std::vector<double> ttft(ttft_ms_.begin(), ttft_ms_.end());
  out.ttft_p50_ms = Percentile(ttft, 0.50);
  out.ttft_p99_ms = Percentile(ttft, 0.99);
  return out;
}

}  // namespace kvwire::control_plane
