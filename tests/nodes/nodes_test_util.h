// Helpers shared by the node integration tests: the tiny model written to a temporary file, real
// node processes started on loopback, and reads of their /metrics pages. Not thread-safe beyond
// what each function says; errors are returned as absl::Status (UNAVAILABLE when a node does not
// answer, NOT_FOUND for a metric that is not exported).
#ifndef KVWIRE_TESTS_NODES_NODES_TEST_UTIL_H_
#define KVWIRE_TESTS_NODES_NODES_TEST_UTIL_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "kvwire/base/deadline.h"
#include "tests/transport/transport_test_util.h"

namespace kvwire::nodes_testing {

// The tiny random model (3 layers, context 1024) in a per-process temporary file; empty when it
// could not be written. Thread-safe (made once).
const std::string& ModelPath();

struct Node {
  std::unique_ptr<transport::testing::ChildProcess> process;
  std::string address;  // gRPC HOST:PORT
  std::string metrics;  // /metrics HOST:PORT
};

// Starts a kvwire-prefill or kvwire-decode binary on loopback with UCX over TCP and a metrics
// endpoint, and waits (bounded) until it prints both addresses.
absl::StatusOr<Node> StartNode(const std::string& binary, std::vector<std::string> extra,
                               const std::string& model = ModelPath());

// The value of an unlabelled metric in a node's /metrics page.
absl::StatusOr<double> ReadMetric(const Node& node, absl::string_view name);

// Polls `name` until it equals `want` or the deadline passes; returns the last value read.
absl::StatusOr<double> WaitForMetric(const Node& node, absl::string_view name, double want,
                                     Deadline deadline);

template <typename Context>
void SetDeadline(Context* context, absl::Duration timeout) {
  context->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
}

}  // namespace kvwire::nodes_testing

#endif  // KVWIRE_TESTS_NODES_NODES_TEST_UTIL_H_
