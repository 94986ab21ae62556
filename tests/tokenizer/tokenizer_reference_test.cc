// The tokenizer on a real model's vocabulary, checked against the reference ids that
// reference_tokenize.py wrote (Hugging Face `tokenizers` and jinja2). Run through
// run_reference_check.sh, which produces that export; skipped when
// KVWIRE_TOKENIZER_REFERENCE_DIR does not name one. Also reports Encode throughput.
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "kvwire/base/status.h"
#include "runtime/tokenizer.h"
#include "runtime/tokenizer_text.h"

namespace kvwire::runtime {
namespace {

struct EncodeCase {
  std::string name;
  bool parse_special;
  std::string text;
  std::vector<int32_t> ids;
};

struct ChatCase {
  bool add_generation_prompt;
  std::string expected;
  std::vector<ChatMessage> messages;
};

struct Reference {
  TokenizerSpec spec;
  std::unique_ptr<Tokenizer> tokenizer;
  std::vector<EncodeCase> encode_cases;
  std::vector<ChatCase> chat_cases;
};

// A string field: "x" + hex of the bytes.
absl::StatusOr<std::string> Str(absl::string_view field) {
  if (field.empty() || field[0] != 'x' || field.size() % 2 == 0) {
    return absl::DataLossError(absl::StrCat("bad string field \"", field.substr(0, 40), "\""));
  }
  return absl::HexStringToBytes(field.substr(1));
}

absl::StatusOr<int32_t> Int(absl::string_view field) {
  int32_t value;
  if (!absl::SimpleAtoi(field, &value)) {
    return absl::DataLossError(absl::StrCat("bad integer field \"", field, "\""));
  }
  return value;
}

absl::StatusOr<std::vector<std::vector<absl::string_view>>> ReadRecords(const std::string& path,
                                                                        std::string* storage) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  storage->assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  std::vector<std::vector<absl::string_view>> records;
  for (absl::string_view line : absl::StrSplit(*storage, '\n', absl::SkipEmpty())) {
    records.push_back(absl::StrSplit(line, ' '));
  }
  return records;
}

absl::Status ApplySpecRecord(const std::vector<absl::string_view>& r, TokenizerSpec* spec) {
  if (r.size() == 3 && r[0] == "token") {
    KVWIRE_ASSIGN_OR_RETURN(const int32_t type, Int(r[1]));
    KVWIRE_ASSIGN_OR_RETURN(std::string text, Str(r[2]));
    spec->tokens.push_back(std::move(text));
    spec->token_types.push_back(type);
  } else if (r.size() == 2 && r[0] == "merge") {
    KVWIRE_ASSIGN_OR_RETURN(std::string merge, Str(r[1]));
    spec->merges.push_back(std::move(merge));
  } else if (r.size() == 2 && (r[0] == "model" || r[0] == "pre" || r[0] == "template")) {
    KVWIRE_ASSIGN_OR_RETURN(std::string value, Str(r[1]));
    (r[0] == "model" ? spec->model : r[0] == "pre" ? spec->pre : spec->chat_template) = value;
  } else if (r.size() == 2) {
    KVWIRE_ASSIGN_OR_RETURN(const int32_t value, Int(r[1]));
    if (r[0] == "bos") spec->bos_id = value;
    if (r[0] == "eos") spec->eos_id = value;
    if (r[0] == "pad") spec->pad_id = value;
    if (r[0] == "unk") spec->unknown_id = value;
    if (r[0] == "add_bos") spec->add_bos = value != 0;
  } else {
    return absl::DataLossError(absl::StrCat("bad spec record \"", r[0], "\""));
  }
  return absl::OkStatus();
}

absl::StatusOr<EncodeCase> ParseEncodeCase(const std::vector<absl::string_view>& r) {
  EncodeCase c;
  if (r.size() < 5) return absl::DataLossError("short encode record");
  KVWIRE_ASSIGN_OR_RETURN(c.name, Str(r[1]));
  c.parse_special = r[2] == "1";
  KVWIRE_ASSIGN_OR_RETURN(c.text, Str(r[3]));
  KVWIRE_ASSIGN_OR_RETURN(const int32_t n, Int(r[4]));
  if (r.size() != static_cast<size_t>(n) + 5) return absl::DataLossError("bad id count");
  for (size_t i = 5; i < r.size(); ++i) {
    KVWIRE_ASSIGN_OR_RETURN(const int32_t id, Int(r[i]));
    c.ids.push_back(id);
  }
  return c;
}

absl::StatusOr<ChatCase> ParseChatCase(const std::vector<absl::string_view>& r) {
  ChatCase c;
  if (r.size() < 4) return absl::DataLossError("short chat record");
  c.add_generation_prompt = r[1] == "1";
  KVWIRE_ASSIGN_OR_RETURN(c.expected, Str(r[2]));
  KVWIRE_ASSIGN_OR_RETURN(const int32_t n, Int(r[3]));
  if (r.size() != static_cast<size_t>(2 * n) + 4) return absl::DataLossError("bad message count");
  for (size_t i = 4; i < r.size(); i += 2) {
    KVWIRE_ASSIGN_OR_RETURN(std::string role, Str(r[i]));
    KVWIRE_ASSIGN_OR_RETURN(std::string content, Str(r[i + 1]));
    c.messages.push_back({std::move(role), std::move(content)});
  }
  return c;
}

absl::StatusOr<std::unique_ptr<Reference>> LoadReference(const std::string& dir) {
  auto ref = std::make_unique<Reference>();
  std::string storage;
  KVWIRE_ASSIGN_OR_RETURN(auto spec_records, ReadRecords(dir + "/spec.txt", &storage));
  for (const auto& r : spec_records) KVWIRE_RETURN_IF_ERROR(ApplySpecRecord(r, &ref->spec));
  KVWIRE_ASSIGN_OR_RETURN(ref->tokenizer, Tokenizer::Create(ref->spec));
  KVWIRE_ASSIGN_OR_RETURN(auto case_records, ReadRecords(dir + "/cases.txt", &storage));
  for (const auto& r : case_records) {
    if (r[0] == "encode") {
      KVWIRE_ASSIGN_OR_RETURN(EncodeCase c, ParseEncodeCase(r));
      ref->encode_cases.push_back(std::move(c));
    } else if (r[0] == "chat") {
      KVWIRE_ASSIGN_OR_RETURN(ChatCase c, ParseChatCase(r));
      ref->chat_cases.push_back(std::move(c));
    }
  }
  return ref;
}

// True when every byte of `text` has a token, so decoding gives the text back.
bool FullyRepresentable(const Tokenizer& tokenizer, absl::string_view text) {
  for (char c : text) {
    std::string vocab;
    tokenizer_internal::AppendUtf8(tokenizer_internal::ByteToCodepoint(static_cast<uint8_t>(c)),
                                   &vocab);
    if (tokenizer.FindToken(vocab) == kNoToken) return false;
  }
  return true;
}

// "id(text) id(text) ..." for ids[from, to), for failure messages.
std::string Describe(const Tokenizer& tokenizer, const std::vector<int32_t>& ids, size_t from,
                     size_t to) {
  std::string out;
  for (size_t i = from; i < std::min(to, ids.size()); ++i) {
    absl::StrAppend(&out, ids[i], "(", absl::CEscape(tokenizer.TokenBytes(ids[i])), ") ");
  }
  return out;
}

class TokenizerReference : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const char* dir = std::getenv("KVWIRE_TOKENIZER_REFERENCE_DIR");
    if (dir == nullptr || *dir == '\0') return;
    absl::StatusOr<std::unique_ptr<Reference>> loaded = LoadReference(dir);
    if (loaded.ok()) {
      reference_ = std::move(loaded).value().release();
    } else {
      load_error_ = new absl::Status(loaded.status());
    }
  }

  void SetUp() override {
    if (reference_ == nullptr && load_error_ == nullptr) {
      GTEST_SKIP() << "KVWIRE_TOKENIZER_REFERENCE_DIR unset: run through run_reference_check.sh";
    }
    ASSERT_EQ(load_error_, nullptr) << *load_error_;
  }

  const Tokenizer& tokenizer() { return *reference_->tokenizer; }

  static Reference* reference_;
  static absl::Status* load_error_;
};

Reference* TokenizerReference::reference_ = nullptr;
absl::Status* TokenizerReference::load_error_ = nullptr;

TEST_F(TokenizerReference, EncodeMatchesReferenceIds) {
  size_t mismatches = 0, tokens = 0;
  for (const EncodeCase& c : reference_->encode_cases) {
    const std::vector<int32_t> ids = tokenizer().Encode(c.text, {.parse_special = c.parse_special});
    tokens += ids.size();
    if (ids == c.ids) continue;
    if (++mismatches > 10) continue;
    size_t at = 0;
    while (at < ids.size() && at < c.ids.size() && ids[at] == c.ids[at]) ++at;
    const size_t from = at < 3 ? 0 : at - 3;
    ADD_FAILURE() << c.name << " (parse_special=" << c.parse_special << "): first difference at "
                  << at << "\n  expected: " << Describe(tokenizer(), c.ids, from, at + 5)
                  << "\n  actual:   " << Describe(tokenizer(), ids, from, at + 5);
  }
  EXPECT_EQ(mismatches, 0u) << "of " << reference_->encode_cases.size() << " cases";
  std::cout << "compared " << reference_->encode_cases.size() << " texts, " << tokens
            << " tokens\n";
}

TEST_F(TokenizerReference, DecodeRestoresText) {
  size_t checked = 0;
  for (const EncodeCase& c : reference_->encode_cases) {
    if (!FullyRepresentable(tokenizer(), c.text)) continue;
    ++checked;
    absl::StatusOr<std::string> text =
        tokenizer().Decode(tokenizer().Encode(c.text, {.parse_special = c.parse_special}));
    ASSERT_TRUE(text.ok()) << text.status();
    EXPECT_EQ(*text, c.text) << c.name;
  }
  EXPECT_GT(checked, reference_->encode_cases.size() / 2);
}

TEST_F(TokenizerReference, StreamDecodeRestoresText) {
  for (const EncodeCase& c : reference_->encode_cases) {
    if (!FullyRepresentable(tokenizer(), c.text)) continue;
    StreamDecoder stream(tokenizer());
    std::string text;
    for (int32_t id : c.ids) {
      absl::StatusOr<std::string> chunk = stream.Push(id);
      ASSERT_TRUE(chunk.ok()) << chunk.status();
      text += *chunk;
    }
    text += stream.Finish();
    EXPECT_EQ(text, c.text) << c.name;
  }
}

TEST_F(TokenizerReference, ChatTemplateMatchesJinja) {
  ASSERT_FALSE(reference_->chat_cases.empty());
  for (const ChatCase& c : reference_->chat_cases) {
    absl::StatusOr<std::string> text =
        tokenizer().ApplyChatTemplate(c.messages, c.add_generation_prompt);
    ASSERT_TRUE(text.ok()) << text.status();
    EXPECT_EQ(*text, c.expected) << c.messages.size() << " messages";
  }
}

TEST_F(TokenizerReference, FindsChatMarkers) {
  EXPECT_EQ(tokenizer().TokenText(tokenizer().im_start_id()), "<|im_start|>");
  EXPECT_EQ(tokenizer().TokenText(tokenizer().im_end_id()), "<|im_end|>");
  EXPECT_EQ(tokenizer().bos_id(), reference_->spec.bos_id);
  EXPECT_EQ(tokenizer().eos_id(), reference_->spec.eos_id);
}

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

TEST_F(TokenizerReference, ReportsEncodeThroughput) {
  const EncodeCase* megabyte = nullptr;
  for (const EncodeCase& c : reference_->encode_cases) {
    if (c.name == "jargon-1MB" && !c.parse_special) megabyte = &c;
  }
  ASSERT_NE(megabyte, nullptr);
  auto start = std::chrono::steady_clock::now();
  absl::StatusOr<std::unique_ptr<Tokenizer>> fresh = Tokenizer::Create(reference_->spec);
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  const double create_s = Seconds(start);
  for (const char* pass : {"cold cache", "warm cache"}) {
    start = std::chrono::steady_clock::now();
    const std::vector<int32_t> ids = (*fresh)->Encode(megabyte->text);
    const double s = Seconds(start);
    EXPECT_EQ(ids, megabyte->ids);
    std::cout << "Encode " << megabyte->text.size() << " bytes -> " << ids.size() << " tokens ("
              << pass << "): " << s << " s, " << static_cast<int64_t>(ids.size() / s)
              << " tokens/s, " << megabyte->text.size() / s / 1e6 << " MB/s\n";
    RecordProperty(absl::StrCat("tokens_per_s_", pass[0] == 'c' ? "cold" : "warm"),
                   static_cast<int>(ids.size() / s));
  }
  std::cout << "Create from spec (" << reference_->spec.tokens.size() << " tokens, "
            << reference_->spec.merges.size() << " merges): " << create_s << " s\n";
}

}  // namespace
}  // namespace kvwire::runtime
