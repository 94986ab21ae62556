// kvwire-bench: the benchmark driver. `kvwire-bench <command> --help` lists each command's flags.
#include <algorithm>
#include <functional>
#include <iostream>

#include "bench/command.h"

namespace kvwire::bench {

std::vector<BenchCommand>& BenchRegistry() {
  static std::vector<BenchCommand> registry;
  return registry;
}

}  // namespace kvwire::bench

int main(int argc, char** argv) {
  using kvwire::bench::BenchRegistry;
  CLI::App app{"kvwire-bench: transfer, fidelity, runtime and end-to-end benchmarks"};
  app.require_subcommand(1);
  std::vector<std::function<int()>> runs(BenchRegistry().size());
  auto& registry = BenchRegistry();
  std::sort(registry.begin(), registry.end(),
            [](const auto& a, const auto& b) { return a.name < b.name; });
  for (size_t i = 0; i < registry.size(); ++i) {
    CLI::App* sub = app.add_subcommand(registry[i].name, registry[i].description);
    registry[i].setup(*sub, &runs[i]);
  }
  CLI11_PARSE(app, argc, argv);
  for (size_t i = 0; i < registry.size(); ++i) {
    if (app.got_subcommand(registry[i].name) && runs[i]) return runs[i]();
  }
  std::cerr << "kvwire-bench: no command ran\n";
  return 2;
}
