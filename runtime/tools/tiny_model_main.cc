// kvwire-tiny-model: writes a small random-weight Llama GGUF (runtime/tiny_model.h), e.g. for
// checking the runtime against the Python reference in every quantization type.
//
//   kvwire-tiny-model --weights Q4_K --embedding Q6_K --out tiny.gguf
#include <CLI/CLI.hpp>
#include <fstream>
#include <iostream>

#include "runtime/gguf_writer.h"
#include "runtime/tiny_model.h"

namespace {

bool ParseType(const std::string& name, kvwire::kernels::QuantType* type) {
  for (uint32_t id = 0; id < 64; ++id) {
    const auto* info = kvwire::kernels::FindQuantType(id);
    if (info != nullptr && name == info->name) {
      *type = info->type;
      return true;
    }
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Write a tiny random-weight Llama GGUF"};
  std::string weights = "Q8_0", embedding = "Q8_0", out;
  kvwire::runtime::TinyModelOptions o;
  bool untied = false;
  app.add_option("--weights", weights, "type of projection/FFN weights");
  app.add_option("--embedding", embedding, "type of token_embd (and output)");
  app.add_option("--arch", o.arch, "llama or qwen2");
  app.add_option("--layers", o.n_layers, "layers");
  app.add_option("--seed", o.seed, "weight seed");
  app.add_flag("--untied", untied, "separate output.weight");
  app.add_option("--out", out, "output file")->required();
  CLI11_PARSE(app, argc, argv);
  o.tied_output = !untied;
  if (!ParseType(weights, &o.weight_type) || !ParseType(embedding, &o.embedding_type)) {
    std::cerr << "kvwire-tiny-model: unknown type name\n";
    return 2;
  }
  auto bytes = kvwire::runtime::MakeTinyModel(o);
  absl::Status status = bytes.status();
  if (bytes.ok()) {
    std::ofstream f(out, std::ios::binary | std::ios::trunc);
    f.write(bytes->data(), static_cast<std::streamsize>(bytes->size()));
    if (!f) status = absl::InternalError("cannot write " + out);
  }
  if (!status.ok()) {
    std::cerr << "kvwire-tiny-model: " << status << "\n";
    return 1;
  }
  return 0;
}
