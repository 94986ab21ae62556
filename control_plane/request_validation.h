// control_plane/request_validation.h — checks on a Generate request before any node is involved,
// and prompt tokenization that keeps user text from forging special tokens.
//
// Validation order: input present and non-empty, sampling parameters, budget override,
// compression method; then (after tokenization) prompt length against the model context. Every
// failure is INVALID_ARGUMENT with a message naming the field and the offending value.
// Tokenization: raw prompts and chat message contents are encoded with parse_special = false;
// only the chat template's own text (turn markers, injected system prompt) may produce control
// tokens. Thread-safety: pure functions.
#ifndef KVWIRE_CONTROL_PLANE_REQUEST_VALIDATION_H_
#define KVWIRE_CONTROL_PLANE_REQUEST_VALIDATION_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "control_plane/budget_policy.h"
#include "runtime/chat_template.h"
#include "runtime/tokenizer.h"

namespace kvwire::control_plane {

// kvwire.v1.GenerateRequest without protobuf.
struct GenerateInput {
  std::string tenant;
  std::string model;
  bool is_chat = false;
  std::string prompt;                          // when !is_chat
  std::vector<runtime::ChatMessage> messages;  // when is_chat
  uint32_t max_tokens = 0;
  float temperature = 0;
  float top_p = 0;
  std::optional<Budget> budget;  // per-request override
  std::string method;            // per-request compression method override
  std::string kv_dtype;
};

struct RequestLimits {
  uint32_t max_tokens_limit = 1024;
  uint32_t context_length = 0;         // model context in tokens; 0 = unknown (not checked)
  size_t max_prompt_bytes = 1u << 20;  // raw text, before tokenization
};

absl::Status ValidateRequest(const GenerateInput& input, const RequestLimits& limits);
// The prompt must leave room for max_tokens within the model context.
absl::Status ValidatePromptLength(size_t prompt_tokens, uint32_t max_tokens,
                                  const RequestLimits& limits);

// The prompt's token ids: raw text as is (BOS per the tokenizer), chat through the model's chat
// template with a generation prompt. FAILED_PRECONDITION when the model has no usable template.
absl::StatusOr<std::vector<int32_t>> TokenizeInput(const runtime::Tokenizer& tokenizer,
                                                   const GenerateInput& input);

}  // namespace kvwire::control_plane

#endif  // KVWIRE_CONTROL_PLANE_REQUEST_VALIDATION_H_
