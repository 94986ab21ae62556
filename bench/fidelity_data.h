// bench/fidelity_data.h — text and tasks for `kvwire-bench fidelity`.
//
// The corpus is any UTF-8 text file (gzip-compressed files are read through zlib); the default is
// the Jargon File from Debian's jargon-text package. Lines made of table-drawing characters are
// dropped and runs of white space folded, so contexts are prose. Needles for the retrieval tasks
// come from a seeded generator, so every run asks the same questions.
#ifndef KVWIRE_BENCH_FIDELITY_DATA_H_
#define KVWIRE_BENCH_FIDELITY_DATA_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace kvwire::bench {

inline constexpr char kDefaultCorpus[] = "/usr/share/doc/jargon-text/jargon.txt.gz";

// The corpus as one string of prose. NOT_FOUND / DATA_LOSS naming the file on failure.
absl::StatusOr<std::string> LoadCorpus(const std::string& path);

// A question whose answer is hidden in a long context.
struct RetrievalTask {
  std::string kind;      // "passkey" or "multikey"
  std::string prompt;    // the user turn: context with needle(s), then the question
  std::string expected;  // the digits the answer must contain
};

// `count` tasks of each kind, each about `approx_chars` characters of corpus text with the
// needle at a seeded depth.
std::vector<RetrievalTask> MakeRetrievalTasks(const std::string& corpus, int count,
                                              size_t approx_chars, uint32_t seed);

}  // namespace kvwire::bench

#endif  // KVWIRE_BENCH_FIDELITY_DATA_H_
