// kvwire-dump-logits: runs one prefill over given token ids and writes the logits of every
// position as raw little-endian fp32 [L][vocab] — the input of tests/runtime/reference_forward.py.
//
//   kvwire-dump-logits --model M.gguf --ids 1,2,3 --out logits.f32
#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <iostream>

#include "runtime/runner.h"
#include "runtime/tools/token_ids.h"

int main(int argc, char** argv) {
  CLI::App app{"Write the prefill logits of every position as fp32 [L][vocab]"};
  std::string model_path, ids_text, out_path;
  int threads = 2;
  app.add_option("--model", model_path, "GGUF model file")->required();
  app.add_option("--ids", ids_text, "comma-separated prompt token ids")->required();
  app.add_option("--out", out_path, "output file")->required();
  app.add_option("--threads", threads, "threads");
  CLI11_PARSE(app, argc, argv);

  auto ids = kvwire::runtime::ParseTokenIds(ids_text);
  auto model = kvwire::runtime::Model::Load(model_path);
  if (!ids.ok() || !model.ok()) {
    std::cerr << "kvwire-dump-logits: " << (ids.ok() ? model.status() : ids.status()) << "\n";
    return 1;
  }
  kvwire::runtime::Runner runner(**model, threads);
  kvwire::cache::KvCache cache;
  auto logits = runner.Prefill(*ids, {.all_logits = true}, &cache);
  if (!logits.ok()) {
    std::cerr << "kvwire-dump-logits: " << logits.status() << "\n";
    return 1;
  }
  std::ofstream out(out_path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(logits->data()),
            static_cast<std::streamsize>(logits->size() * sizeof(float)));
  if (!out) {
    std::cerr << "kvwire-dump-logits: cannot write " << out_path << "\n";
    return 1;
  }
  std::cout << ids->size() << " x " << (*model)->config().vocab_size << "\n";
  return 0;
}
