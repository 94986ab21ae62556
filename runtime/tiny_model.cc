#include "runtime/tiny_model.h"

#include <cmath>
#include <random>

#include "absl/strings/str_cat.h"
#include "kvwire/base/status.h"
#include "runtime/gguf_writer.h"

namespace kvwire::runtime {
namespace {

using kernels::QuantType;

std::string Utf8(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else {  // every code point used here is below 0x800
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

// GPT-2's reversible byte -> printable code point map: printable Latin-1 bytes map to
// themselves, the rest to 256, 257, ... in byte order.
std::vector<std::string> ByteTokens() {
  std::vector<std::string> out(256);
  uint32_t next = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    out[b] = Utf8(printable ? b : next++);
  }
  return out;
}

const std::vector<std::string>& Merges() {
  static const std::vector<std::string> kMerges = {"Ġ t", "h e", "Ġ a", "i n"};
  return kMerges;
}

constexpr const char* kChatTemplate =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}";

void AddTokenizer(GgufWriter* w) {
  std::vector<std::string> tokens = TinyVocab();
  std::vector<int32_t> types(tokens.size(), 1);  // 1 = normal, 3 = control
  for (int i = 0; i < 3; ++i) types[i] = 3;
  w->SetString("tokenizer.ggml.model", "gpt2");
  w->SetString("tokenizer.ggml.pre", "smollm");
  w->SetStringArray("tokenizer.ggml.tokens", tokens);
  w->SetI32Array("tokenizer.ggml.token_type", types);
  w->SetStringArray("tokenizer.ggml.merges", Merges());
  w->SetU32("tokenizer.ggml.bos_token_id", 1);
  w->SetU32("tokenizer.ggml.eos_token_id", 2);
  w->SetU32("tokenizer.ggml.unknown_token_id", 0);
  w->SetU32("tokenizer.ggml.padding_token_id", 2);
  w->SetBool("tokenizer.ggml.add_bos_token", false);
  w->SetString("tokenizer.chat_template", kChatTemplate);
}

void AddConfig(const TinyModelOptions& o, GgufWriter* w) {
  const std::string p = o.arch + ".";
  w->SetString("general.architecture", o.arch);
  w->SetString("general.name", "kvwire tiny test model");
  w->SetU32(p + "block_count", o.n_layers);
  w->SetU32(p + "context_length", o.context_length);
  w->SetU32(p + "embedding_length", o.hidden);
  w->SetU32(p + "feed_forward_length", o.ffn_hidden);
  w->SetU32(p + "attention.head_count", o.n_heads);
  w->SetU32(p + "attention.head_count_kv", o.n_kv_heads);
  w->SetF32(p + "rope.freq_base", o.rope_theta);
  w->SetF32(p + "attention.layer_norm_rms_epsilon", 1e-5f);
  w->SetU32(p + "rope.dimension_count", o.hidden / o.n_heads);
  w->SetU32(p + "vocab_size", TinyVocabSize());
}

class WeightMaker {
 public:
  WeightMaker(GgufWriter* w, uint32_t seed) : w_(w), rng_(seed) {}

  // values ~ N(mean, sd) for a tensor of GGUF dims {cols, rows} (or {n}).
  absl::Status Add(const std::string& name, std::vector<int64_t> dims, QuantType type, float sd,
                   float mean = 0.0f) {
    int64_t n = 1;
    for (int64_t d : dims) n *= d;
    std::normal_distribution<float> dist(mean, sd);
    std::vector<float> v(n);
    for (auto& x : v) x = dist(rng_);
    return Annotate(w_->AddTensor(name, dims, type, v.data()), "tiny model");
  }

 private:
  GgufWriter* w_;
  std::mt19937 rng_;
};

absl::Status AddLayer(const TinyModelOptions& o, int i, WeightMaker* m) {
  const std::string p = absl::StrCat("blk.", i, ".");
  const int64_t hd = o.hidden / o.n_heads, kv = int64_t{o.n_kv_heads} * hd, h = o.hidden;
  const float sd = 1.0f / std::sqrt(static_cast<float>(h));
  const QuantType t = o.weight_type;
  KVWIRE_RETURN_IF_ERROR(m->Add(p + "attn_norm.weight", {h}, QuantType::kF32, 0.1f, 1.0f));
  KVWIRE_RETURN_IF_ERROR(m->Add(p + "ffn_norm.weight", {h}, QuantType::kF32, 0.1f, 1.0f));
  KVWIRE_RETURN_IF_ERROR(m->Add(p + "attn_q.weight", {h, h}, t, sd));
  KVWIRE_RETURN_IF_ERROR(m->Add(p + "attn_k.weight", {h, kv}, t, sd));
  KVWIRE_RETURN_IF_ERROR(m->Add(p + "attn_v.weight", {h, kv}, t, sd));
  KVWIRE_RETURN_IF_ERROR(m->Add(p + "attn_output.weight", {h, h}, t, sd));
  KVWIRE_RETURN_IF_ERROR(m->Add(p + "ffn_gate.weight", {h, o.ffn_hidden}, t, sd));
  KVWIRE_RETURN_IF_ERROR(m->Add(p + "ffn_up.weight", {h, o.ffn_hidden}, t, sd));
  KVWIRE_RETURN_IF_ERROR(m->Add(p + "ffn_down.weight", {o.ffn_hidden, h}, t,
                                1.0f / std::sqrt(static_cast<float>(o.ffn_hidden))));
  if (o.arch != "qwen2") return absl::OkStatus();
  KVWIRE_RETURN_IF_ERROR(m->Add(p + "attn_q.bias", {h}, QuantType::kF32, 0.1f));
  KVWIRE_RETURN_IF_ERROR(m->Add(p + "attn_k.bias", {kv}, QuantType::kF32, 0.1f));
  return m->Add(p + "attn_v.bias", {kv}, QuantType::kF32, 0.1f);
}

}  // namespace

std::vector<std::string> TinyVocab() {
  std::vector<std::string> tokens = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
  for (auto& b : ByteTokens()) tokens.push_back(b);
  for (const auto& merge : Merges()) {
    const size_t space = merge.find(' ');
    tokens.push_back(merge.substr(0, space) + merge.substr(space + 1));
  }
  return tokens;
}

int TinyVocabSize() { return static_cast<int>(TinyVocab().size()); }

absl::StatusOr<std::string> MakeTinyModel(const TinyModelOptions& o) {
  GgufWriter w;
  AddConfig(o, &w);
  AddTokenizer(&w);
  WeightMaker m(&w, o.seed);
  const int64_t vocab = TinyVocabSize();
  KVWIRE_RETURN_IF_ERROR(m.Add("token_embd.weight", {o.hidden, vocab}, o.embedding_type, 1.0f));
  KVWIRE_RETURN_IF_ERROR(m.Add("output_norm.weight", {o.hidden}, QuantType::kF32, 0.1f, 1.0f));
  if (!o.tied_output) {
    KVWIRE_RETURN_IF_ERROR(m.Add("output.weight", {o.hidden, vocab}, o.embedding_type,
                                 1.0f / std::sqrt(static_cast<float>(o.hidden))));
  }
  for (int i = 0; i < o.n_layers; ++i) KVWIRE_RETURN_IF_ERROR(AddLayer(o, i, &m));
  return w.Serialize();
}

}  // namespace kvwire::runtime
