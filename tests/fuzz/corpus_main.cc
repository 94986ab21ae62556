// Without libFuzzer: runs the fuzz target over files (regression mode), or writes a seed corpus.
//   fuzz_frame_decoder_replay FILE_OR_DIR...      decode every input; crash = failure
//   fuzz_frame_decoder_replay --write-seeds DIR   write valid inputs of every kind
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "kvwire/cache/frames.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

using namespace kvwire;

void Write(const std::filesystem::path& path, uint8_t mode, const std::vector<uint8_t>& body) {
  std::ofstream out(path, std::ios::binary);
  out.put(static_cast<char>(mode));
  out.write(reinterpret_cast<const char*>(body.data()), static_cast<std::streamsize>(body.size()));
}

cache::KvCache SeedCache(format::DType dtype) {
  cache::KvCache c = cache::KvCache::Empty({2, 2, 16}, 40);
  std::vector<float> k(16), v(16);
  for (int l = 0; l < 2; ++l) {
    for (int h = 0; h < 2; ++h) {
      for (int p = h; p < 40; p += 3) {
        for (int i = 0; i < 16; ++i) k[i] = 0.1f * (p - i), v[i] = 0.05f * (i + l - h);
        c.layers[l].heads[h].Append(p, (p % 4 == 0) ? 0.69f : 0.0f, k.data(), v.data(), 16);
      }
    }
  }
  return c;
}

int WriteSeeds(const std::filesystem::path& dir) {
  std::filesystem::create_directories(dir);
  int n = 0;
  for (format::DType dtype : {format::DType::kF16, format::DType::kBF16, format::DType::kI8}) {
    const cache::KvCache c = SeedCache(dtype);
    const format::Manifest m = cache::ManifestFor(c, 4, dtype, "snapkv/adaptive/merge", 0.3f);
    auto frames = cache::EncodeCacheFrames(77, m, c, cache::EncodeOptions{.fp16_tail = 4});
    if (!frames.ok()) return 1;
    std::vector<uint8_t> stream;
    for (const auto& f : *frames) stream.insert(stream.end(), f.begin(), f.end());
    const std::string tag(format::DTypeName(dtype));
    Write(dir / ("stream_" + tag), 0, stream);
    Write(dir / ("manifest_" + tag), 1, format::EncodeManifest(m));
    const auto& layer = (*frames)[1];
    Write(dir / ("layer_" + tag), 2,
          std::vector<uint8_t>(layer.begin() + format::kFrameHeaderSize, layer.end()));
    n += 3;
  }
  Write(dir / "commit", 3, format::EncodeCommit({2, 10, 1234}));
  Write(dir / "abort", 4, format::EncodeAbort({absl::StatusCode::kUnavailable, "gone"}));
  std::printf("wrote %d seeds to %s\n", n + 2, dir.c_str());
  return 0;
}

int Replay(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  const std::vector<uint8_t> data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  LLVMFuzzerTestOneInput(data.data(), data.size());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::string(argv[1]) == "--write-seeds") return WriteSeeds(argv[2]);
  int inputs = 0;
  for (int i = 1; i < argc; ++i) {
    const std::filesystem::path p(argv[i]);
    if (std::filesystem::is_directory(p)) {
      for (const auto& e : std::filesystem::directory_iterator(p)) inputs += Replay(e.path());
    } else {
      inputs += Replay(p);
    }
  }
  std::printf("replayed %d inputs without a crash\n", inputs);
  return inputs > 0 ? 0 : 1;
}
