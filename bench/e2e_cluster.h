// bench/e2e_cluster.h — what `kvwire-bench e2e` drives: a deployment made by
// deploy/netns/kvwire-netns (loopback, or three network namespaces with a rate-limited data link)
// and requests sent through its control plane.
//
// Cluster::Up removes a stale deployment of the same prefix, builds the topology and returns an
// owner whose destructor (and Down) stops the services and removes the topology. Every script
// call runs under `timeout`, so nothing waits unbounded. SendRequest runs one Generate call and
// returns the control plane's final RequestStats with the client's own timings.
//
// Thread-safety: a Cluster is used from one thread; SendRequest is thread-safe (one stub may be
// shared). Errors: the script's exit status and output as INTERNAL / DEADLINE_EXCEEDED, gRPC
// errors as their status.
#ifndef KVWIRE_BENCH_E2E_CLUSTER_H_
#define KVWIRE_BENCH_E2E_CLUSTER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "kvwire/v1/control_plane.grpc.pb.h"

namespace kvwire::bench {

struct ClusterOptions {
  std::string script;  // deploy/netns/kvwire-netns
  std::string prefix = "kvwb";
  std::string net = "10.79";
  std::string bin;  // directory of kvwire-control, kvwire-prefill, kvwire-decode, kvwire
  std::string model;
};

// Bytes the data link carried, per direction: what its tbf qdisc sent and the veth's TX counter.
struct LinkCounters {
  uint64_t to_decode_qdisc = 0, to_decode_tx = 0;
  uint64_t to_prefill_qdisc = 0, to_prefill_tx = 0;
};

class Cluster {
 public:
  // `topology` is "loopback" or a tc rate for the namespace topology ("1gbit", "10gbit").
  static absl::StatusOr<std::unique_ptr<Cluster>> Up(const ClusterOptions& options,
                                                     const std::string& topology);
  ~Cluster();
  Cluster(const Cluster&) = delete;
  Cluster& operator=(const Cluster&) = delete;

  bool netns() const { return topology_ != "loopback"; }
  const std::string& topology() const { return topology_; }

  // Payload Gbit/s of a timed bulk TCP transfer prefill -> decode over the data link.
  absl::StatusOr<double> MeasureGbps();
  absl::StatusOr<LinkCounters> Counters();

  // Starts control plane, decode and prefill nodes (synthetic KV when `synthetic_kv` is set)
  // with extra flags for each node. Stops services that ran before.
  absl::Status StartServices(const std::string& synthetic_kv,
                             const std::vector<std::string>& prefill_args,
                             const std::vector<std::string>& decode_args);
  absl::Status StopServices();
  absl::Status Down();
  const std::string& control() const { return control_; }

 private:
  Cluster(ClusterOptions options, std::string topology)
      : options_(std::move(options)), topology_(std::move(topology)) {}
  absl::StatusOr<std::string> Script(const std::string& command, std::vector<std::string> args,
                                     absl::Duration timeout);

  ClusterOptions options_;
  std::string topology_;
  std::string control_;
  bool up_ = false;
};

// One request's outcome as the client saw it.
struct Sample {
  bool ok = false;
  std::string error;
  double client_ttft_ms = 0;  // Generate call to its first event
  double total_ms = 0;        // Generate call to the end of the stream
  kvwire::v1::RequestStats stats;
};

Sample SendRequest(kvwire::v1::ControlPlane::Stub& stub, const std::string& model,
                   const std::string& prompt, double budget, int max_tokens,
                   absl::Duration timeout);

// Runs argv (no shell) under `timeout`; its stdout, or an error with the exit status and output.
absl::StatusOr<std::string> RunCommand(const std::vector<std::string>& argv,
                                       absl::Duration timeout);

}  // namespace kvwire::bench

#endif  // KVWIRE_BENCH_E2E_CLUSTER_H_
