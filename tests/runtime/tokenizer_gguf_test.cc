#include "runtime/tokenizer_gguf.h"

#include <gtest/gtest.h>

#include "runtime/gguf_writer.h"
#include "runtime/tiny_model.h"

namespace kvwire::runtime {
namespace {

TEST(TokenizerGguf, LoadsTheTinyModelsVocabularyAndTemplate) {
  auto bytes = MakeTinyModel({});
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  auto gguf = GgufFile::FromBytes(*bytes);
  ASSERT_TRUE(gguf.ok()) << gguf.status();
  auto spec = TokenizerSpecFromGguf(**gguf);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->tokens.size(), static_cast<size_t>(TinyVocabSize()));
  EXPECT_EQ(spec->bos_id, 1);
  EXPECT_EQ(spec->eos_id, 2);
  EXPECT_FALSE(spec->merges.empty());
  auto tok = LoadTokenizer(**gguf);
  ASSERT_TRUE(tok.ok()) << tok.status();
  const std::string text = "the tiny model says hello, 123!";
  EXPECT_EQ(*(*tok)->Decode((*tok)->Encode(text)), text);
  const ChatMessage turn{"user", "hi"};
  auto prompt = (*tok)->ApplyChatTemplate({&turn, 1}, true);
  ASSERT_TRUE(prompt.ok()) << prompt.status();
  EXPECT_NE(prompt->find("<|im_start|>assistant"), std::string::npos);
}

TEST(TokenizerGguf, FileWithoutVocabularyIsNotFound) {
  GgufWriter writer;
  writer.SetString("general.architecture", "llama");
  auto gguf = GgufFile::FromBytes(writer.Serialize());
  ASSERT_TRUE(gguf.ok()) << gguf.status();
  EXPECT_EQ(TokenizerSpecFromGguf(**gguf).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace kvwire::runtime
