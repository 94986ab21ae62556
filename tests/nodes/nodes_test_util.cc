#include "tests/nodes/nodes_test_util.h"

#include <unistd.h>

#include <fstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kvwire/base/status.h"
#include "kvwire/control/metrics.h"
#include "runtime/tiny_model.h"

namespace kvwire::nodes_testing {

using transport::testing::ChildProcess;

const std::string& ModelPath() {
  static const std::string path = [] {
    std::string file = absl::StrCat(::testing::TempDir(), "/nodes_tiny_", getpid(), ".gguf");
    auto bytes = runtime::MakeTinyModel({.n_layers = 3, .context_length = 1024});
    if (!bytes.ok()) return std::string();
    std::ofstream(file, std::ios::binary) << *bytes;
    return file;
  }();
  return path;
}

absl::StatusOr<Node> StartNode(const std::string& binary, std::vector<std::string> extra,
                               const std::string& model) {
  std::vector<std::string> argv = {binary,      "--listen", "127.0.0.1:0", "--model",    model,
                                   "--ucx-tls", "tcp",      "--metrics",   "127.0.0.1:0"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  Node node;
  KVWIRE_ASSIGN_OR_RETURN(node.process, ChildProcess::Spawn(argv));
  const Deadline deadline = Deadline::In(absl::Seconds(30));
  KVWIRE_ASSIGN_OR_RETURN(node.address, node.process->ReadTagged("listening ", deadline));
  KVWIRE_ASSIGN_OR_RETURN(node.metrics, node.process->ReadTagged("metrics ", deadline));
  return node;
}

absl::StatusOr<double> ReadMetric(const Node& node, absl::string_view name) {
  auto host_port = control::SplitHostPort(node.metrics);
  if (!host_port.ok()) return host_port.status();
  KVWIRE_ASSIGN_OR_RETURN(std::string page,
                          control::HttpGet(host_port->first, host_port->second, "/metrics",
                                           Deadline::In(absl::Seconds(5))));
  const std::string prefix = absl::StrCat("\n", name, " ");
  const size_t at = page.find(prefix);
  if (at == std::string::npos) return absl::NotFoundError(std::string(name));
  const size_t end = page.find('\n', at + prefix.size());
  double value = 0;
  if (!absl::SimpleAtod(page.substr(at + prefix.size(), end - at - prefix.size()), &value)) {
    return absl::DataLossError(page);
  }
  return value;
}

absl::StatusOr<double> WaitForMetric(const Node& node, absl::string_view name, double want,
                                     Deadline deadline) {
  absl::StatusOr<double> value;
  do {
    value = ReadMetric(node, name);
  } while (value.ok() && *value != want && !deadline.Expired() &&
           (absl::SleepFor(absl::Milliseconds(50)), true));
  return value;
}

}  // namespace kvwire::nodes_testing
