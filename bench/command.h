// bench/command.h — subcommand registry for the `kvwire-bench` program.
//
// Each benchmark lives in its own bench/<name>.cc and registers itself:
//
//   KVWIRE_BENCH_COMMAND(transfer, "UCX transfer sweep beside ucx_perftest", SetupTransfer);
//
// where `void SetupTransfer(CLI::App& sub, std::function<int()>* run)` declares its flags on
// `sub` and stores the function that runs it (returning the process exit code). Registration
// happens during static initialisation; all bench sources are linked straight into the program.
#ifndef KVWIRE_BENCH_COMMAND_H_
#define KVWIRE_BENCH_COMMAND_H_

#include <functional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

namespace kvwire::bench {

using BenchSetup = void (*)(CLI::App& sub, std::function<int()>* run);

struct BenchCommand {
  std::string name;
  std::string description;
  BenchSetup setup;
};

std::vector<BenchCommand>& BenchRegistry();

struct BenchRegistrar {
  BenchRegistrar(const char* name, const char* description, BenchSetup setup) {
    BenchRegistry().push_back({name, description, setup});
  }
};

}  // namespace kvwire::bench

#define KVWIRE_BENCH_COMMAND(name, description, setup) \
  static ::kvwire::bench::BenchRegistrar kvwire_bench_registrar_##name(#name, description, setup)

#endif  // KVWIRE_BENCH_COMMAND_H_
