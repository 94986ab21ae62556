// ChatML template recognition and rendering, including SmolLM2's default system turn.
#include "runtime/chat_template.h"

#include <string>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvwire::runtime {
namespace {

using ::testing::HasSubstr;

// SmolLM2-135M-Instruct's tokenizer.chat_template, as stored in its GGUF file.
constexpr char kSmolLm2Template[] =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}";

constexpr char kSmolLm2System[] =
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n";

// Plain ChatML, with the newlines written as Jinja escapes rather than raw characters.
constexpr char kPlainChatMl[] =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}";

ChatTemplate ParseOrDie(absl::string_view text) {
  absl::StatusOr<ChatTemplate> parsed = ChatTemplate::Parse(text);
  EXPECT_TRUE(parsed.ok()) << parsed.status();
  return parsed.ok() ? *parsed : ChatTemplate::Parse(kPlainChatMl).value();
}

TEST(ChatTemplate, SmolLm2InjectsDefaultSystemTurn) {
  const ChatTemplate chat = ParseOrDie(kSmolLm2Template);
  EXPECT_EQ(
      chat.Apply({{"user", "Hi"}}, /*add_generation_prompt=*/true),
      std::string(kSmolLm2System) + "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
}

TEST(ChatTemplate, SmolLm2KeepsCallerSystemTurn) {
  const ChatTemplate chat = ParseOrDie(kSmolLm2Template);
  EXPECT_EQ(chat.Apply({{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello."}}, false),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\nHello.<|im_end|>\n");
}

TEST(ChatTemplate, SmolLm2InjectsNothingIntoAnEmptyConversation) {
  const ChatTemplate chat = ParseOrDie(kSmolLm2Template);
  EXPECT_EQ(chat.Apply({}, true), "<|im_start|>assistant\n");
  EXPECT_EQ(chat.Apply({}, false), "");
}

TEST(ChatTemplate, SmolLm2LaterSystemTurnDoesNotSuppressDefault) {
  const ChatTemplate chat = ParseOrDie(kSmolLm2Template);
  EXPECT_EQ(chat.Apply({{"user", "a"}, {"system", "b"}}, false),
            std::string(kSmolLm2System) +
                "<|im_start|>user\na<|im_end|>\n<|im_start|>system\nb<|im_end|>\n");
}

TEST(ChatTemplate, ReadsTheDefaultSystemPrompt) {
  EXPECT_EQ(ParseOrDie(kSmolLm2Template).default_system_prompt(),
            "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
  EXPECT_FALSE(ParseOrDie(kPlainChatMl).default_system_prompt().has_value());
}

TEST(ChatTemplate, PlainChatMlRendersMessagesVerbatim) {
  const ChatTemplate chat = ParseOrDie(kPlainChatMl);
  EXPECT_EQ(chat.Apply({{"user", " two\nlines "}}, true),
            "<|im_start|>user\n two\nlines <|im_end|>\n<|im_start|>assistant\n");
}

TEST(ChatTemplate, UnescapesJinjaStringLiterals) {
  const std::string text =
      "{{ '<|im_start|>system\\nIt\\'s a \\\"test\\\"\\\\<|im_end|>\\n' }}<|im_end|>";
  EXPECT_EQ(ParseOrDie(text).default_system_prompt(), "It's a \"test\"\\");
}

TEST(ChatTemplate, RejectsOtherFamilies) {
  const char* llama3 =
      "{% for message in messages %}<|start_header_id|>{{ message['role'] }}<|end_header_id|>"
      "\n\n{{ message['content'] }}<|eot_id|>{% endfor %}";
  const absl::Status status = ChatTemplate::Parse(llama3).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(status.message()), HasSubstr("ChatML"));
}

TEST(ChatTemplate, RejectsAnEmptyTemplate) {
  EXPECT_EQ(ChatTemplate::Parse("").status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(ChatTemplate, RejectsAMalformedSystemLiteral) {
  const absl::Status status =
      ChatTemplate::Parse("{{ '<|im_start|>system\nno end' }}<|im_end|>").status();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(status.message()), HasSubstr("system-turn literal"));
}

}  // namespace
}  // namespace kvwire::runtime
