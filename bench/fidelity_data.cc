#include "bench/fidelity_data.h"

#include <zlib.h>

#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

namespace kvwire::bench {
namespace {

bool IsTableLine(absl::string_view line) {
  // U+2500..U+257F box drawing characters are E2 94 xx / E2 95 xx in UTF-8.
  return line.find("\xE2\x94") != absl::string_view::npos ||
         line.find("\xE2\x95") != absl::string_view::npos;
}

std::string FoldWhitespace(absl::string_view raw) {
  std::string out;
  out.reserve(raw.size());
  bool space = false;
  for (absl::string_view line : absl::StrSplit(raw, '\n')) {
    if (IsTableLine(line)) continue;
    for (char c : line) {
      if (c == ' ' || c == '\t' || c == '\r') {
        space = true;
        continue;
      }
      if (space && !out.empty()) out.push_back(' ');
      space = false;
      out.push_back(c);
    }
    space = true;
  }
  return out;
}

// A window of the corpus starting at a word boundary.
std::string Excerpt(const std::string& corpus, size_t start, size_t chars) {
  start = corpus.find(' ', start);
  if (start == std::string::npos || start + chars > corpus.size()) start = 0;
  return corpus.substr(start + 1, chars);
}

std::string InsertAtDepth(std::string text, const std::string& needle, double depth) {
  size_t at = text.find(". ", static_cast<size_t>(depth * text.size()));
  if (at == std::string::npos) at = text.size();
  text.insert(at + (at < text.size() ? 2 : 0), needle + " ");
  return text;
}

}  // namespace

absl::StatusOr<std::string> LoadCorpus(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");  // Reads plain files too (transparent mode).
  if (f == nullptr) return absl::NotFoundError(absl::StrCat("cannot open corpus ", path));
  std::string raw;
  char buf[1 << 16];
  int n;
  while ((n = gzread(f, buf, sizeof(buf))) > 0) raw.append(buf, n);
  const bool failed = n < 0;
  gzclose(f);
  if (failed) return absl::DataLossError(absl::StrCat("corrupt compressed corpus ", path));
  std::string text = FoldWhitespace(raw);
  if (text.size() < 20000) {
    return absl::InvalidArgumentError(absl::StrCat("corpus ", path, " has only ", text.size(),
                                                   " characters of prose; need 20000"));
  }
  return text;
}

std::vector<RetrievalTask> MakeRetrievalTasks(const std::string& corpus, int count,
                                              size_t approx_chars, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> digits(10000, 99999);
  std::uniform_real_distribution<double> depth(0.1, 0.9);
  std::uniform_int_distribution<size_t> offset(0, corpus.size() - approx_chars - 2);
  const char* kColors[] = {"red", "blue", "green", "yellow"};
  std::vector<RetrievalTask> tasks;
  for (int i = 0; i < count; ++i) {
    const std::string key = absl::StrCat(digits(rng));
    std::string text = InsertAtDepth(Excerpt(corpus, offset(rng), approx_chars),
                                      absl::StrCat("The pass key is ", key, ". Remember it."),
                                      depth(rng));
    tasks.push_back({"passkey",
                     absl::StrCat(text, "\n\nWhat is the pass key? Answer with the number only."),
                     key});
  }
  for (int i = 0; i < count; ++i) {
    std::string text = Excerpt(corpus, offset(rng), approx_chars);
    std::string expected;
    const int ask = static_cast<int>(rng() % 4);
    for (int c = 0; c < 4; ++c) {
      const std::string code = absl::StrCat(digits(rng));
      if (c == ask) expected = code;
      text = InsertAtDepth(text, absl::StrCat("The code for the ", kColors[c], " door is ", code, "."),
                           0.15 + 0.2 * c);
    }
    tasks.push_back({"multikey",
                     absl::StrCat(text, "\n\nWhat is the code for the ", kColors[ask],
                                  " door? Answer with the number only."),
                     expected});
  }
  return tasks;
}

}  // namespace kvwire::bench
