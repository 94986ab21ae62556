#include "control_plane/request_validation.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kvwire/base/status.h"
#include "kvwire/compress/spec.h"

namespace kvwire::control_plane {
namespace {

absl::Status ValidateInputText(const GenerateInput& in, const RequestLimits& limits) {
  if (!in.is_chat) {
    if (in.prompt.empty()) return absl::InvalidArgumentError("prompt is empty");
    if (in.prompt.size() > limits.max_prompt_bytes) {
      return absl::InvalidArgumentError(absl::StrCat("prompt of ", in.prompt.size(),
                                                     " bytes exceeds the limit of ",
                                                     limits.max_prompt_bytes, " bytes"));
    }
    return absl::OkStatus();
  }
  if (in.messages.empty()) return absl::InvalidArgumentError("chat has no messages");
  size_t total = 0;
  for (size_t i = 0; i < in.messages.size(); ++i) {
    const runtime::ChatMessage& m = in.messages[i];
    if (m.role != "system" && m.role != "user" && m.role != "assistant") {
      return absl::InvalidArgumentError(absl::StrCat("chat message ", i, " has role '", m.role,
                                                     "'; expected system, user or assistant"));
    }
    total += m.content.size();
  }
  if (total == 0) return absl::InvalidArgumentError("chat messages are all empty");
  if (total > limits.max_prompt_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "chat of ", total, " bytes exceeds the limit of ", limits.max_prompt_bytes, " bytes"));
  }
  return absl::OkStatus();
}

absl::Status ValidateSampling(const GenerateInput& in, const RequestLimits& limits) {
  if (in.max_tokens == 0) {
    return absl::InvalidArgumentError("sampling.max_tokens must be at least 1, got 0");
  }
  if (in.max_tokens > limits.max_tokens_limit) {
    return absl::InvalidArgumentError(absl::StrCat("sampling.max_tokens ", in.max_tokens,
                                                   " exceeds the server limit of ",
                                                   limits.max_tokens_limit));
  }
  if (!std::isfinite(in.temperature) || in.temperature < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("sampling.temperature must be >= 0, got %g", in.temperature));
  }
  if (!std::isfinite(in.top_p) || in.top_p < 0 || in.top_p > 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("sampling.top_p must be in [0, 1], got %g", in.top_p));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateRequest(const GenerateInput& in, const RequestLimits& limits) {
  KVWIRE_RETURN_IF_ERROR(ValidateInputText(in, limits));
  KVWIRE_RETURN_IF_ERROR(ValidateSampling(in, limits));
  if (in.budget.has_value()) KVWIRE_RETURN_IF_ERROR(ValidateBudget(*in.budget, "budget"));
  if (!in.method.empty()) {
    KVWIRE_RETURN_IF_ERROR(Annotate(compress::CompressionSpec::Parse(in.method).status(),
                                    absl::StrCat("compression method '", in.method, "'")));
  }
  if (!in.kv_dtype.empty() && in.kv_dtype != "f16" && in.kv_dtype != "bf16" &&
      in.kv_dtype != "f32" && in.kv_dtype != "i8") {
    return absl::InvalidArgumentError(
        absl::StrCat("compression kv_dtype '", in.kv_dtype, "' is not one of f16, bf16, f32, i8"));
  }
  return absl::OkStatus();
}

absl::Status ValidatePromptLength(size_t prompt_tokens, uint32_t max_tokens,
                                  const RequestLimits& limits) {
  if (prompt_tokens == 0) return absl::InvalidArgumentError("prompt has no tokens");
  if (limits.context_length == 0) return absl::OkStatus();
  if (prompt_tokens >= limits.context_length) {
    return absl::InvalidArgumentError(absl::StrCat("prompt of ", prompt_tokens,
                                                   " tokens is longer than the model context of ",
                                                   limits.context_length, " tokens"));
  }
  if (prompt_tokens + max_tokens > limits.context_length) {
    return absl::InvalidArgumentError(
        absl::StrCat("prompt of ", prompt_tokens, " tokens plus max_tokens ", max_tokens,
                     " exceeds the model context of ", limits.context_length, " tokens"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int32_t>> TokenizeInput(const runtime::Tokenizer& tokenizer,
                                                   const GenerateInput& in) {
  runtime::EncodeOptions user;
  user.parse_special = false;
  user.add_bos = tokenizer.add_bos();
  if (!in.is_chat) return tokenizer.Encode(in.prompt, user);

  // Render the template around placeholders, then encode the template's own text with special
  // tokens and each message's content without, so content can never open or close a turn.
  std::vector<runtime::ChatMessage> shells = in.messages;
  std::vector<std::string> markers;
  for (size_t i = 0; i < shells.size(); ++i) {
    markers.push_back(absl::StrCat("\x1dkvwire-content-", i, "\x1d"));
    shells[i].content = markers.back();
  }
  KVWIRE_ASSIGN_OR_RETURN(std::string rendered, tokenizer.ApplyChatTemplate(shells, true));
  std::vector<int32_t> ids;
  if (tokenizer.add_bos() && tokenizer.bos_id() != runtime::kNoToken) {
    ids.push_back(tokenizer.bos_id());
  }
  runtime::EncodeOptions trusted;
  trusted.parse_special = true;
  user.add_bos = false;
  size_t pos = 0;
  for (size_t i = 0; i < markers.size(); ++i) {
    const size_t at = rendered.find(markers[i], pos);
    if (at == std::string::npos) {
      return absl::FailedPreconditionError("chat template dropped a message's content");
    }
    for (int32_t id : tokenizer.Encode(rendered.substr(pos, at - pos), trusted)) ids.push_back(id);
    for (int32_t id : tokenizer.Encode(in.messages[i].content, user)) ids.push_back(id);
    pos = at + markers[i].size();
  }
  for (int32_t id : tokenizer.Encode(rendered.substr(pos), trusted)) ids.push_back(id);
  return ids;
}

}  // namespace kvwire::control_plane
