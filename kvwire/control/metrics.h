// kvwire/control/metrics.h — Prometheus text-format metrics and a tiny HTTP endpoint for them.
//
// A MetricsRegistry owns counters, gauges and histograms; each metric has a name, a help line and
// optional constant labels. Several metrics may share a name with different labels (one family,
// one HELP/TYPE block). RenderText() produces the Prometheus text exposition format 0.0.4.
// MetricsHttpServer answers `GET /metrics` (404 for other paths, 405 for other methods) over a
// plain TCP socket; every connection is served with a read/write deadline so a stuck client
// cannot wedge it.
//
// Thread-safety: metric updates are lock-free or briefly locked and safe from any thread; the
// registry is safe to add to and render concurrently; metric pointers stay valid for the
// registry's lifetime. Error codes: Add* returns INVALID_ARGUMENT for a bad name or a kind clash,
// MetricsHttpServer::Start returns INVALID_ARGUMENT for an unparsable address and UNAVAILABLE when
// it cannot bind; HttpGet returns UNAVAILABLE / DEADLINE_EXCEEDED / DATA_LOSS.
#ifndef KVWIRE_CONTROL_METRICS_H_
#define KVWIRE_CONTROL_METRICS_H_

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "kvwire/base/deadline.h"

namespace kvwire::control {

using MetricLabels = std::vector<std::pair<std::string, std::string>>;

// Monotonically increasing value.
class Counter {
 public:
  void Increment(double delta = 1.0) { value_.fetch_add(delta, std::memory_order_relaxed); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

// A value that goes up and down.
class Gauge {
 public:
  void Set(double value) { value_.store(value, std::memory_order_relaxed); }
  void Add(double delta) { value_.fetch_add(delta, std::memory_order_relaxed); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

// Cumulative buckets with fixed upper bounds (ascending), plus sum and count.
class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);
  void Observe(double value);

  struct Snapshot {
    std::vector<double> upper_bounds;
    std::vector<uint64_t> cumulative_counts;  // one per bound, then +Inf last
    double sum = 0;
    uint64_t count = 0;
  };
  Snapshot Read() const;

 private:
  const std::vector<double> upper_bounds_;
  mutable absl::Mutex mu_;
  std::vector<uint64_t> counts_ ABSL_GUARDED_BY(mu_);  // per bucket (not cumulative), +Inf last
  double sum_ ABSL_GUARDED_BY(mu_) = 0;
};

// Exponential bucket bounds: start, start*factor, ... (count bounds). For latencies in ms.
std::vector<double> ExponentialBuckets(double start, double factor, int count);

class MetricsRegistry {
 public:
  absl::StatusOr<Counter*> AddCounter(absl::string_view name, absl::string_view help,
                                      MetricLabels labels = {});
  absl::StatusOr<Gauge*> AddGauge(absl::string_view name, absl::string_view help,
                                  MetricLabels labels = {});
  absl::StatusOr<Histogram*> AddHistogram(absl::string_view name, absl::string_view help,
                                          std::vector<double> upper_bounds,
                                          MetricLabels labels = {});
  std::string RenderText() const;

  // Like Add*, but never fail: on an error (a name registered twice, e.g. two services of one
  // kind in a test process) they log it and return a metric that counts but is not exported.
  Counter* CounterOrDetached(absl::string_view name, absl::string_view help);
  Gauge* GaugeOrDetached(absl::string_view name, absl::string_view help);
  Histogram* HistogramOrDetached(absl::string_view name, absl::string_view help,
                                 std::vector<double> upper_bounds);

 private:
  enum class Kind { kCounter, kGauge, kHistogram };
  struct Entry {
    std::string name;
    std::string help;
    Kind kind = Kind::kCounter;
    MetricLabels labels;
    std::unique_ptr<Counter> counter;
    std::unique_ptr<Gauge> gauge;
    std::unique_ptr<Histogram> histogram;
  };
  absl::StatusOr<Entry*> Add(absl::string_view name, absl::string_view help, Kind kind,
                             MetricLabels labels);
  static void RenderEntry(const Entry& entry, std::string* out);

  mutable absl::Mutex mu_;
  std::vector<std::unique_ptr<Entry>> entries_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<Entry>> detached_ ABSL_GUARDED_BY(mu_);
};

class MetricsHttpServer {
 public:
  // Listens on `address` ("host:port", port 0 picks one) and serves `registry`, which must
  // outlive the server.
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(absl::string_view address,
                                                                  const MetricsRegistry* registry);
  ~MetricsHttpServer();  // stops serving and joins its thread
  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;

  int port() const { return port_; }

 private:
  MetricsHttpServer(int listen_fd, int wake_fd_read, int wake_fd_write, int port,
                    const MetricsRegistry* registry);
  void Serve();
  void ServeOne(int fd);

  const int listen_fd_;
  const int wake_read_;  // self-pipe: the destructor writes to stop Serve()
  const int wake_write_;
  const int port_;
  const MetricsRegistry* registry_;
  std::thread thread_;
};

// Minimal HTTP/1.0 GET client (for tests and health probes): the response body on 200,
// UNAVAILABLE if nobody listens, DEADLINE_EXCEEDED, DATA_LOSS for a malformed or non-200 reply.
absl::StatusOr<std::string> HttpGet(absl::string_view host, int port, absl::string_view path,
                                    Deadline deadline);

// Splits "host:port" (host may be "[v6]"). INVALID_ARGUMENT when malformed.
absl::StatusOr<std::pair<std::string, int>> SplitHostPort(absl::string_view address);

}  // namespace kvwire::control

#endif  // KVWIRE_CONTROL_METRICS_H_
