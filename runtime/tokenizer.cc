#include "runtime/tokenizer.h"

#include <algorithm>
#include <limits>
#include <queue>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kvwire/base/status.h"

namespace kvwire::runtime {
namespace {

using tokenizer_internal::CodepointToByte;
using tokenizer_internal::DecodeUtf8;
using tokenizer_internal::Utf8Result;
using tokenizer_internal::Utf8Step;

// Pieces longer than this are merged afresh every time: they are rare (long whitespace or symbol
// runs) and would crowd the cache.
constexpr size_t kMaxCachedPieceBytes = 64;
// Bound on cached pieces; the cache starts over when full (~10 MB at typical piece sizes).
constexpr size_t kMaxCacheEntries = 1 << 17;

uint64_t PairKey(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

// Quoted, escaped form of a vocabulary string for error messages.
std::string Quote(absl::string_view text) { return absl::StrFormat("\"%s\"", absl::CEscape(text)); }

// The raw bytes a byte-level vocabulary string stands for.
absl::StatusOr<std::string> BytesOfVocabString(absl::string_view text) {
  std::string bytes;
  bytes.reserve(text.size());
  for (size_t pos = 0; pos < text.size();) {
    const Utf8Step step = DecodeUtf8(text, pos);
    const int byte = step.result == Utf8Result::kComplete ? CodepointToByte(step.codepoint) : -1;
    if (byte < 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("character at byte %d is outside the byte-level alphabet", pos));
    }
    bytes.push_back(static_cast<char>(byte));
    pos += step.length;
  }
  return bytes;
}

bool IsMatchedWhole(TokenType type) {
  return type == TokenType::kControl || type == TokenType::kUserDefined;
}

// Moves the longest well-formed prefix of *pending into the result; ill-formed bytes become
// U+FFFD. An incomplete character at the end stays in *pending unless `final`.
std::string DrainUtf8(std::string* pending, bool final) {
  std::string out;
  size_t pos = 0;
  while (pos < pending->size()) {
    const Utf8Step step = DecodeUtf8(*pending, pos);
    if (step.result == Utf8Result::kTruncated && !final) break;
    if (step.result == Utf8Result::kComplete) {
      out.append(*pending, pos, step.length);
    } else {
      tokenizer_internal::AppendUtf8(0xFFFD, &out);
    }
    pos += step.length;
  }
  pending->erase(0, pos);
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Create(TokenizerSpec spec) {
  if (spec.model != "gpt2") {
    return absl::FailedPreconditionError(absl::StrCat(
        "unsupported tokenizer model ", Quote(spec.model), " (only \"gpt2\" byte-level BPE)"));
  }
  KVWIRE_ASSIGN_OR_RETURN(const auto pre, tokenizer_internal::PreTokenizerFromName(spec.pre));
  std::unique_ptr<Tokenizer> tokenizer(new Tokenizer());
  tokenizer->pre_ = pre;
  KVWIRE_RETURN_IF_ERROR(
      tokenizer->BuildVocabulary(std::move(spec.tokens), std::move(spec.token_types)));
  KVWIRE_RETURN_IF_ERROR(tokenizer->BuildMerges(spec.merges));
  KVWIRE_RETURN_IF_ERROR(tokenizer->SetSpecialIds(spec));
  tokenizer->chat_template_ = ChatTemplate::Parse(spec.chat_template);
  return tokenizer;
}

absl::Status Tokenizer::BuildVocabulary(std::vector<std::string> tokens,
                                        std::vector<int32_t> types) {
  if (tokens.empty()) return absl::InvalidArgumentError("the vocabulary is empty");
  if (tokens.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    return absl::InvalidArgumentError(absl::StrCat("vocabulary too large: ", tokens.size()));
  }
  if (!types.empty() && types.size() != tokens.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("token_types has ", types.size(), " entries for ", tokens.size(), " tokens"));
  }
  tokens_ = std::move(tokens);
  types_.assign(tokens_.size(), TokenType::kNormal);
  token_bytes_.resize(tokens_.size());
  token_ids_.reserve(tokens_.size());
  for (int32_t id = 0; id < vocab_size(); ++id) {
    if (!types.empty()) {
      if (types[id] < 0 || types[id] > static_cast<int32_t>(TokenType::kByte)) {
        return absl::InvalidArgumentError(
            absl::StrCat("token_types[", id, "] = ", types[id], " is not a token type (0..6)"));
      }
      types_[id] = static_cast<TokenType>(types[id]);
    }
    const auto [it, inserted] = token_ids_.try_emplace(tokens_[id], id);
    if (!inserted) {
      return absl::InvalidArgumentError(
          absl::StrCat("token ", id, " ", Quote(tokens_[id]), " duplicates token ", it->second));
    }
    if (types_[id] != TokenType::kNormal) {
      token_bytes_[id] = tokens_[id];  // control, added and placeholder tokens are plain text
      continue;
    }
    absl::StatusOr<std::string> bytes = BytesOfVocabString(tokens_[id]);
    if (!bytes.ok())
      return Annotate(bytes.status(), absl::StrCat("token ", id, " ", Quote(tokens_[id])));
    token_bytes_[id] = *std::move(bytes);
  }
  for (int b = 0; b < 256; ++b) {
    std::string text;
    tokenizer_internal::AppendUtf8(tokenizer_internal::ByteToCodepoint(b), &text);
    const int32_t id = FindToken(text);
    byte_tokens_[b] = id != kNoToken && types_[id] == TokenType::kNormal ? id : kNoToken;
  }
  return absl::OkStatus();
}

absl::Status Tokenizer::BuildMerges(const std::vector<std::string>& merges) {
  if (merges.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    return absl::InvalidArgumentError(absl::StrCat("too many merges: ", merges.size()));
  }
  merges_.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const std::string& merge = merges[rank];
    const size_t space = merge.find(' ');
    if (space == std::string::npos || space == 0 || space + 1 == merge.size() ||
        merge.find(' ', space + 1) != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("merge ", rank, " ", Quote(merge),
                                                     " is not two tokens separated by one space"));
    }
    const absl::string_view left(merge.data(), space);
    const absl::string_view right(merge.data() + space + 1, merge.size() - space - 1);
    const std::string joined = absl::StrCat(left, right);
    for (absl::string_view part : {left, right, absl::string_view(joined)}) {
      if (FindToken(part) == kNoToken) {
        return absl::InvalidArgumentError(absl::StrCat("merge ", rank, " ", Quote(merge), ": ",
                                                       Quote(part), " is not in the vocabulary"));
      }
    }
    // A repeated pair keeps its first (best) rank.
    merges_.try_emplace(PairKey(FindToken(left), FindToken(right)),
                        Merge{static_cast<int32_t>(rank), FindToken(joined)});
  }
  return absl::OkStatus();
}

absl::Status Tokenizer::SetSpecialIds(const TokenizerSpec& spec) {
  const std::pair<const char*, int32_t> ids[] = {{"bos_id", spec.bos_id},
                                                 {"eos_id", spec.eos_id},
                                                 {"pad_id", spec.pad_id},
                                                 {"unknown_id", spec.unknown_id}};
  for (const auto& [name, id] : ids) {
    if (id != kNoToken && (id < 0 || id >= vocab_size())) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, " ", id, " is outside the vocabulary (", vocab_size(), " tokens)"));
    }
  }
  bos_id_ = spec.bos_id;
  eos_id_ = spec.eos_id;
  pad_id_ = spec.pad_id;
  add_bos_ = spec.add_bos;
  im_start_id_ = FindToken("<|im_start|>");
  im_end_id_ = FindToken("<|im_end|>");
  for (int32_t id = 0; id < vocab_size(); ++id) {
    if (!IsMatchedWhole(types_[id]) || tokens_[id].empty()) continue;
    special_ids_.push_back(id);
    special_first_byte_[static_cast<uint8_t>(tokens_[id][0])] = true;
  }
  std::stable_sort(special_ids_.begin(), special_ids_.end(),
                   [this](int32_t a, int32_t b) { return tokens_[a].size() > tokens_[b].size(); });
  return absl::OkStatus();
}

std::vector<int32_t> Tokenizer::Encode(absl::string_view text, const EncodeOptions& options) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 2);
  if (options.add_bos && bos_id_ != kNoToken) ids.push_back(bos_id_);
  size_t start = 0;
  for (size_t pos = 0; pos < text.size() && !special_ids_.empty();) {
    int32_t id = kNoToken;
    const size_t length = MatchSpecial(text, pos, options.parse_special, &id);
    if (length == 0) {
      ++pos;
      continue;
    }
    EncodeOrdinary(text.substr(start, pos - start), &ids);
    ids.push_back(id);
    pos += length;
    start = pos;
  }
  EncodeOrdinary(text.substr(start), &ids);
  return ids;
}

size_t Tokenizer::MatchSpecial(absl::string_view text, size_t pos, bool parse_special,
                               int32_t* id) const {
  if (!special_first_byte_[static_cast<uint8_t>(text[pos])]) return 0;
  const absl::string_view rest = text.substr(pos);
  for (int32_t candidate : special_ids_) {
    if (!parse_special && types_[candidate] == TokenType::kControl) continue;
    if (absl::StartsWith(rest, tokens_[candidate])) {
      *id = candidate;
      return tokens_[candidate].size();
    }
  }
  return 0;
}

void Tokenizer::EncodeOrdinary(absl::string_view text, std::vector<int32_t>* ids) const {
  if (text.empty()) return;
  std::vector<absl::string_view> pieces;
  tokenizer_internal::PreTokenize(text, pre_, &pieces);
  for (absl::string_view piece : pieces) EncodePiece(piece, ids);
}

void Tokenizer::EncodePiece(absl::string_view piece, std::vector<int32_t>* ids) const {
  const bool cacheable = piece.size() <= kMaxCachedPieceBytes;
  if (cacheable) {
    absl::MutexLock lock(&cache_mu_);
    const auto it = cache_.find(piece);
    if (it != cache_.end()) {
      ids->insert(ids->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> merged = MergePiece(piece);
  ids->insert(ids->end(), merged.begin(), merged.end());
  if (!cacheable) return;
  absl::MutexLock lock(&cache_mu_);
  if (cache_.size() >= kMaxCacheEntries) cache_.clear();
  cache_.try_emplace(piece, std::move(merged));
}

// Classic BPE: start from one symbol per byte and repeatedly apply the best-ranked merge among
// adjacent pairs (leftmost on ties) until none applies. Symbols form a linked list over their
// starting positions; the heap holds candidate pairs and stale entries are skipped on pop.
std::vector<int32_t> Tokenizer::MergePiece(absl::string_view piece) const {
  struct Symbol {
    int32_t id;  // kNoToken once merged into its left neighbour
    int32_t prev;
    int32_t next;  // -1 at either end
  };
  struct Candidate {
    int32_t rank;
    int32_t left;  // position of the left symbol
    int32_t left_id;
    int32_t right_id;
    int32_t result;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : left > o.left;
    }
  };
  std::vector<Symbol> symbols;
  symbols.reserve(piece.size());
  for (char c : piece) {
    const int32_t id = byte_tokens_[static_cast<uint8_t>(c)];
    if (id == kNoToken) continue;  // no token for this byte: dropped, as the reference does
    const auto n = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, n - 1, n + 1});
  }
  if (symbols.empty()) return {};
  symbols.back().next = -1;
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap;
  const auto consider = [&](int32_t left) {
    const int32_t right = symbols[left].next;
    if (right < 0) return;
    const auto it = merges_.find(PairKey(symbols[left].id, symbols[right].id));
    if (it == merges_.end()) return;
    heap.push({it->second.rank, left, symbols[left].id, symbols[right].id, it->second.result});
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) consider(i);
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    Symbol& left = symbols[c.left];
    if (left.id != c.left_id || left.next < 0 || symbols[left.next].id != c.right_id) continue;
    Symbol& right = symbols[left.next];
    left.id = c.result;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = c.left;
    right.id = kNoToken;
    if (left.prev >= 0) consider(left.prev);
    consider(c.left);
  }
  std::vector<int32_t> ids;
  for (int32_t i = 0; i >= 0; i = symbols[i].next) ids.push_back(symbols[i].id);
  return ids;
}

absl::StatusOr<std::string> Tokenizer::Decode(absl::Span<const int32_t> ids) const {
  std::string text;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab_size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "ids[", i, "] = ", ids[i], " is outside the vocabulary (", vocab_size(), " tokens)"));
    }
    text.append(token_bytes_[ids[i]]);
  }
  return text;
}

absl::string_view Tokenizer::TokenBytes(int32_t id) const {
  return id >= 0 && id < vocab_size() ? absl::string_view(token_bytes_[id]) : absl::string_view();
}

absl::string_view Tokenizer::TokenText(int32_t id) const {
  return id >= 0 && id < vocab_size() ? absl::string_view(tokens_[id]) : absl::string_view();
}

TokenType Tokenizer::token_type(int32_t id) const {
  return id >= 0 && id < vocab_size() ? types_[id] : TokenType::kUndefined;
}

int32_t Tokenizer::FindToken(absl::string_view text) const {
  const auto it = token_ids_.find(text);
  return it == token_ids_.end() ? kNoToken : it->second;
}

absl::StatusOr<std::string> Tokenizer::ApplyChatTemplate(absl::Span<const ChatMessage> messages,
                                                         bool add_generation_prompt) const {
  if (!chat_template_.ok()) return chat_template_.status();
  return chat_template_->Apply(messages, add_generation_prompt);
}

absl::StatusOr<std::string> StreamDecoder::Push(int32_t id) {
  if (id < 0 || id >= tokenizer_->vocab_size()) {
    return absl::InvalidArgumentError(absl::StrCat("token id ", id, " is outside the vocabulary (",
                                                   tokenizer_->vocab_size(), " tokens)"));
  }
  const absl::string_view bytes = tokenizer_->TokenBytes(id);
  pending_.append(bytes.data(), bytes.size());
  return DrainUtf8(&pending_, /*final=*/false);
}

std::string StreamDecoder::Finish() { return DrainUtf8(&pending_, /*final=*/true); }

}  // namespace kvwire::runtime
