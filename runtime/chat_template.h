// runtime/chat_template.h — renders conversations the way a model's Jinja chat template
// (GGUF `tokenizer.chat_template`) would, for the template families kvwire knows, without a
// Jinja engine.
//
// Known family: ChatML (the template text contains both <|im_start|> and <|im_end|>). Each
// message renders as "<|im_start|>" + role + "\n" + content + "<|im_end|>\n" and the generation
// prompt as "<|im_start|>assistant\n". A template that carries a literal system turn, such as
// SmolLM2's '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, ...<|im_end|>\n',
// injects that turn before the first message when the first message's role is not "system"
// (nothing is injected into an empty conversation, exactly as the template's loop.first guard).
//
// Thread-safety: immutable value; safe to share.
// Error codes: Parse -> FAILED_PRECONDITION for a template outside the known families.
#ifndef KVWIRE_RUNTIME_CHAT_TEMPLATE_H_
#define KVWIRE_RUNTIME_CHAT_TEMPLATE_H_

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace kvwire::runtime {

struct ChatMessage {
  std::string role;  // "system", "user", "assistant", ... rendered verbatim
  std::string content;
};

class ChatTemplate {
 public:
  // Recognises `template_text`; FAILED_PRECONDITION names what was not recognised.
  static absl::StatusOr<ChatTemplate> Parse(absl::string_view template_text);

  std::string Apply(absl::Span<const ChatMessage> messages, bool add_generation_prompt) const;

  // The system prompt injected when a conversation does not start with one, if any.
  const std::optional<std::string>& default_system_prompt() const { return default_system_; }

 private:
  std::optional<std::string> default_system_;
};

}  // namespace kvwire::runtime

#endif  // KVWIRE_RUNTIME_CHAT_TEMPLATE_H_
