// kvwire/compress/recon.h — query-agnostic importance by context reconstruction (KVzip-style,
// ALGORITHMS.md §1 `recon`).
//
// After the context's prefill, the model is asked to repeat its context: a chat turn with the
// instruction "Repeat the previous context exactly.", then the assistant turn holding the context
// itself, teacher-forced. The context is cut into chunks of `chunk_tokens`; each chunk is one
// forward pass of (instruction turn + chunk) at positions L, L+1, ..., attending over the cached
// context plus the pass's own causal KV. Chunks after the first ask to "Repeat the part of the
// previous context exactly, starting with" followed by the previous chunk's last `tail_tokens`
// tokens (as KVzip does). The pass's KV is discarded after every chunk, so chunks are independent
// and the context cache ends exactly as it started.
//
// Score of context entry i in (layer l, KV head h): the largest softmax probability A_{j,g,i} any
// query j of any pass (instruction and chunk tokens) gives it, over the query heads g of h's GQA
// group; the softmax runs over everything the query sees (context + its pass's earlier tokens),
// with the model's post-RoPE queries and keys and its 1/sqrt(head_dim) scale.
//
// Result layout (both entry points): scores[l] is fp32 [n_kv_heads][L], head-major
// (scores[l][h * L + i]), values in [0, 1]; what compress::LayerInput::external_scores takes.
//
// Cost: about one extra prefill of L tokens (each chunk's queries see L + chunk keys) plus the
// attention statistics of those queries.
//
// Thread-safety: uses the Runner (single-threaded object) exclusively for the call.
// Errors: INVALID_ARGUMENT for an empty context, a chunk size < 1, a model other than the runner's,
// a cache that is not the full uncompressed cache of the context, or a context too long for the
// model's window once the longest pass is added; FAILED_PRECONDITION when the model's chat
// template is not one runtime::ChatTemplate knows; the runner's own errors otherwise.
#ifndef KVWIRE_COMPRESS_RECON_H_
#define KVWIRE_COMPRESS_RECON_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kvwire/cache/kv_cache.h"
#include "kvwire/kernels/thread_pool.h"
#include "runtime/model.h"
#include "runtime/runner.h"
#include "runtime/tokenizer.h"

namespace kvwire::compress {

inline constexpr char kReconInstruction[] = "Repeat the previous context exactly.";
inline constexpr char kReconPartInstruction[] =
    "Repeat the part of the previous context exactly, starting with ";

// Where the instruction goes relative to the context.
enum class ReconTurn {
  // The context is a finished piece of a conversation (e.g. a whole chat prompt): the
  // instruction is a new user turn, then the assistant turn header.
  kNewTurn,
  // The context ends inside an open user turn (a document the question will follow, as with
  // prefix reuse and in KVzip): "\n\n" + instruction, the user turn is closed, then the
  // assistant turn header.
  kSameTurn,
};

// Token ids of the turns between the context (or a chunk's predecessor) and a chunk, rendered
// with the model's chat template.
struct ReconPrompt {
  std::vector<int32_t> first;      // before chunk 0: the turn with kReconInstruction
  std::vector<int32_t> part_head;  // before chunk k > 0: up to kReconPartInstruction, then ...
  std::vector<int32_t> part_tail;  // ... the previous chunk's last tokens, then this
  bool empty() const { return first.empty(); }
};

// The prompt from `tokenizer`'s chat template; FAILED_PRECONDITION for an unknown template.
absl::StatusOr<ReconPrompt> BuildReconPrompt(const runtime::Tokenizer& tokenizer, ReconTurn turn);
// Same, with the tokenizer read from the model's GGUF (costs a tokenizer load; cache the result).
absl::StatusOr<ReconPrompt> BuildReconPrompt(const runtime::Model& model, ReconTurn turn);

struct ReconOptions {
  int64_t chunk_tokens = 512;            // context tokens per reconstruction pass
  int tail_tokens = 8;                   // previous chunk's last tokens quoted before chunks k > 0
  ReconTurn turn = ReconTurn::kNewTurn;  // used only when `prompt` is empty
  ReconPrompt prompt;                    // empty: built from the model's tokenizer with `turn`
};

// Prefills `context_tokens` into a scratch cache, then scores it. Per layer fp32 [n_kv_heads][L].
absl::StatusOr<std::vector<std::vector<float>>> ReconScores(
    runtime::Runner& runner, const runtime::Model& model, absl::Span<const int32_t> context_tokens,
    const ReconOptions& options, kernels::ThreadPool* pool);

// Scores an existing full cache of `context_tokens` (every head holds positions 0..L-1, as
// Runner::Prefill leaves it). The reconstruction passes append to it and are cut off again: on
// return, success or error, *context_cache equals its state on entry.
absl::StatusOr<std::vector<std::vector<float>>> ReconScoresForCache(
    runtime::Runner& runner, const runtime::Model& model, absl::Span<const int32_t> context_tokens,
    cache::KvCache* context_cache, const ReconOptions& options, kernels::ThreadPool* pool);

}  // namespace kvwire::compress

#endif  // KVWIRE_COMPRESS_RECON_H_
