#include "runtime/chat_template.h"

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace kvwire::runtime {
namespace {

constexpr absl::string_view kImStart = "<|im_start|>";
constexpr absl::string_view kImEnd = "<|im_end|>";
constexpr absl::string_view kSystemHead = "<|im_start|>system\n";
constexpr absl::string_view kTurnTail = "<|im_end|>\n";

// Value of the escape "\c" inside a Jinja (Python-syntax) string literal; 0 when the pair has
// no special meaning and stays as written.
char EscapedChar(char c) {
  switch (c) {
    case 'n':
      return '\n';
    case 't':
      return '\t';
    case 'r':
      return '\r';
    case '\\':
    case '\'':
    case '"':
      return c;
    default:
      return 0;
  }
}

// Reads the string literal whose opening quote is text[quote_pos]; nullopt if unterminated.
std::optional<std::string> ReadStringLiteral(absl::string_view text, size_t quote_pos) {
  const char quote = text[quote_pos];
  std::string value;
  for (size_t i = quote_pos + 1; i < text.size(); ++i) {
    const char c = text[i];
    if (c == quote) return value;
    if (c != '\\' || i + 1 >= text.size()) {
      value.push_back(c);
      continue;
    }
    const char escaped = EscapedChar(text[++i]);
    if (escaped == 0) value.push_back('\\');
    value.push_back(escaped == 0 ? text[i] : escaped);
  }
  return std::nullopt;
}

// Finds a literal system turn ('<|im_start|>system\n...<|im_end|>\n') in the template and
// returns its content; nullopt when the template has none.
absl::StatusOr<std::optional<std::string>> FindDefaultSystem(absl::string_view text) {
  for (size_t pos = text.find("<|im_start|>system"); pos != absl::string_view::npos;
       pos = text.find("<|im_start|>system", pos + 1)) {
    if (pos == 0 || (text[pos - 1] != '\'' && text[pos - 1] != '"')) continue;
    std::optional<std::string> literal = ReadStringLiteral(text, pos - 1);
    if (!literal || !absl::StartsWith(*literal, kSystemHead) ||
        !absl::EndsWith(*literal, kTurnTail)) {
      return absl::FailedPreconditionError(
          absl::StrCat("chat template has a system-turn literal at offset ", pos,
                       " that is not of the form '<|im_start|>system\\n...<|im_end|>\\n'"));
    }
    return literal->substr(kSystemHead.size(),
                           literal->size() - kSystemHead.size() - kTurnTail.size());
  }
  return std::nullopt;
}

void AppendTurn(absl::string_view role, absl::string_view content, std::string* out) {
  absl::StrAppend(out, kImStart, role, "\n", content, kTurnTail);
}

}  // namespace

absl::StatusOr<ChatTemplate> ChatTemplate::Parse(absl::string_view template_text) {
  if (template_text.empty()) {
    return absl::FailedPreconditionError("the model has no chat template");
  }
  if (!absl::StrContains(template_text, kImStart) || !absl::StrContains(template_text, kImEnd)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "unrecognised chat template (", template_text.size(),
        " bytes): only ChatML templates, which use <|im_start|> and <|im_end|>, are supported"));
  }
  absl::StatusOr<std::optional<std::string>> system = FindDefaultSystem(template_text);
  if (!system.ok()) return system.status();
  ChatTemplate result;
  result.default_system_ = *std::move(system);
  return result;
}

std::string ChatTemplate::Apply(absl::Span<const ChatMessage> messages,
                                bool add_generation_prompt) const {
  std::string out;
  if (default_system_ && !messages.empty() && messages.front().role != "system") {
    AppendTurn("system", *default_system_, &out);
  }
  for (const ChatMessage& message : messages) AppendTurn(message.role, message.content, &out);
  if (add_generation_prompt) absl::StrAppend(&out, kImStart, "assistant\n");
  return out;
}

}  // namespace kvwire::runtime
