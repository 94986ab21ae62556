// kvwire-bench e2e: the three services as separate processes, on loopback and across network
// namespaces whose data link is rate-limited (deploy/netns/kvwire-netns), driven through the
// control plane like a client would.
//
// For each topology (loopback, 1gbit, 10gbit ...): the data link's real rate is measured with a
// bulk TCP transfer; then the services run twice — with the real model, and in synthetic-KV mode
// with a larger model's KV shape (by default Llama-3-8B's, 32 layers x 8 KV heads x 128, 128 KiB
// per token in fp16), where the link rather than the CPU limits. Each repetition sends one
// request per prompt length and budget, budgets interleaved, so every budget sees the same machine
// load. Per request: TTFT as the control plane measured it, split into the prefill node's queue
// wait, model compute (synthetic: generating the KV), compression, packing frames and time
// blocked on the data plane; the decode node's install window (first frame to commit); bytes on
// the wire; decode tokens/s. The data link's tc counters are read around every block, to show the
// wire bytes crossed the shaped link. A concurrency sweep (1 ... 64 requests in flight) reports
// throughput, p50/p99 TTFT and lost requests.
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "bench/command.h"
#include "bench/e2e_cluster.h"
#include "bench/fidelity_data.h"
#include "bench/stats.h"
#include "kvwire/base/status.h"
#include "kvwire/config.h"
#include "kvwire/control/synthetic_kv.h"
#include "runtime/gguf.h"
#include "runtime/tokenizer_gguf.h"

namespace kvwire::bench {
namespace {

using Clock = std::chrono::steady_clock;

std::atomic<bool> g_interrupted{false};

struct E2eOptions {
  std::string model;
  std::string topologies = "loopback,1gbit,10gbit";
  std::string lengths = "256,1024,4096";
  std::string budgets = "0.1,0.2,0.5,1";
  int reps = 3;
  int max_tokens = 16;
  std::string synthetic_kv = "32x8x128x32";
  std::string synthetic_lengths = "1024,4096";
  bool skip_model = false;
  std::string concurrency = "1,4,16,64";
  std::string concurrency_topologies = "loopback,1gbit";
  int concurrency_tokens = 256;
  double concurrency_budget = 0.2;
  int concurrency_min_requests = 8;
  int lease_ms = 10000;
  int request_timeout_s = 600;
  std::string corpus = kDefaultCorpus;
  ClusterOptions cluster;
  std::string json;
  std::string plot;
};

// One request of the length x budget sweep.
struct Row {
  std::string topology, mode;
  int target_tokens = 0;
  double budget = 0;
  int rep = 0;
  Sample sample;
};

// One block of requests on one topology and mode, with the link bytes it moved.
struct Block {
  std::string topology, mode;
  double measured_gbps = NAN;  // bulk TCP over the data link; NaN on loopback
  uint64_t wire_bytes = 0;     // sum over the block's requests, as the services report
  LinkCounters link;           // deltas over the block (netns only)
};

struct LevelResult {
  std::string topology, mode;
  int level = 0, requests = 0, completed = 0;
  double wall_s = 0, throughput_rps = 0, tokens_per_s = 0;
  double ttft_p50_ms = NAN, ttft_p99_ms = NAN, client_ttft_p50_ms = NAN, client_ttft_p99_ms = NAN;
  std::string first_error;
};

struct Results {
  std::vector<Row> rows;
  std::vector<Block> blocks;
  std::vector<LevelResult> levels;
};

template <typename T>
absl::StatusOr<std::vector<T>> ParseList(const std::string& text, absl::string_view flag) {
  std::vector<T> out;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    T v{};
    bool ok;
    if constexpr (std::is_same_v<T, double>) {
      ok = absl::SimpleAtod(part, &v) && v > 0 && v <= 1;
    } else if constexpr (std::is_same_v<T, int>) {
      ok = absl::SimpleAtoi(part, &v) && v > 0;
    } else {
      v = std::string(part);
      ok = true;
    }
    if (!ok) return absl::InvalidArgumentError(absl::StrCat(flag, ": bad value '", part, "'"));
    out.push_back(v);
  }
  return out;
}

// Prompts of about `n` tokens: the corpus' first tokens, decoded back to text.
class Prompts {
 public:
  static absl::StatusOr<Prompts> Load(const std::string& model, const std::string& corpus,
                                      int max_tokens) {
    Prompts p;
    KVWIRE_ASSIGN_OR_RETURN(auto gguf, runtime::GgufFile::Open(model));
    KVWIRE_ASSIGN_OR_RETURN(p.tokenizer_, runtime::LoadTokenizer(*gguf));
    KVWIRE_ASSIGN_OR_RETURN(std::string text, LoadCorpus(corpus));
    // ~4 characters per token in English prose; twice that to be safe.
    text.resize(std::min(text.size(), static_cast<size_t>(max_tokens) * 8 + 1024));
    p.ids_ = p.tokenizer_->Encode(text);
    if (p.ids_.size() < static_cast<size_t>(max_tokens)) {
      return absl::InvalidArgumentError(absl::StrCat("corpus ", corpus, " gives only ",
                                                     p.ids_.size(), " tokens, need ", max_tokens));
    }
    return p;
  }
  absl::StatusOr<std::string> Text(int n) const {
    return tokenizer_->Decode(absl::MakeConstSpan(ids_).first(static_cast<size_t>(n)));
  }

 private:
  std::unique_ptr<runtime::Tokenizer> tokenizer_;
  std::vector<int32_t> ids_;
};

// What the TTFT consists of; `other` is routing, the decode call and the install tail.
struct Split {
  double queue, prefill, compress, pack, transfer, other;
};
Split SplitOf(const kvwire::v1::RequestStats& s) {
  const double parts =
      s.queue_ms() + s.prefill_ms() + s.compress_ms() + s.pack_ms() + s.transfer_ms();
  return {s.queue_ms(), s.prefill_ms(),  s.compress_ms(),
          s.pack_ms(),  s.transfer_ms(), s.ttft_ms() - parts};
}

void PrintRow(const Row& r, int reps) {
  if (!r.sample.ok) {
    std::printf("  [%s %s] rep %d/%d, %d tokens, budget %.2f: FAILED %s\n", r.topology.c_str(),
                r.mode.c_str(), r.rep + 1, reps, r.target_tokens, r.budget, r.sample.error.c_str());
    return;
  }
  const auto& s = r.sample.stats;
  const Split p = SplitOf(s);
  std::printf(
      "  [%s %s] rep %d/%d, %u tokens, budget %.2f: ttft %8.1f ms = prefill %.1f + compress %.1f "
      "+ pack %.1f + transfer %.1f + other %.1f (queue %.1f); install %.1f ms; wire %.2f MiB\n",
      r.topology.c_str(), r.mode.c_str(), r.rep + 1, reps, s.prompt_tokens(), r.budget, s.ttft_ms(),
      p.prefill, p.compress, p.pack, p.transfer, p.other, p.queue, s.install_ms(),
      s.wire_bytes() / 1048576.0);
  std::fflush(stdout);
}

std::unique_ptr<kvwire::v1::ControlPlane::Stub> Connect(const std::string& address) {
  return kvwire::v1::ControlPlane::NewStub(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
}

// Runs the sweep of one block; appends its rows.
void SweepBlock(const E2eOptions& o, const Prompts& prompts, const std::vector<int>& lengths,
                const std::vector<double>& budgets, const std::string& model_name,
                kvwire::v1::ControlPlane::Stub& stub, Block* block, Results* results) {
  const absl::Duration timeout = absl::Seconds(o.request_timeout_s);
  for (int rep = 0; rep < o.reps && !g_interrupted; ++rep) {
    for (int len : lengths) {
      const absl::StatusOr<std::string> text = prompts.Text(len);
      for (double budget : budgets) {
        if (g_interrupted) return;
        Row row{block->topology, block->mode, len, budget, rep, {}};
        if (text.ok()) {
          row.sample = SendRequest(stub, model_name, *text, budget, o.max_tokens, timeout);
        } else {
          row.sample.error = text.status().ToString();
        }
        PrintRow(row, o.reps);
        if (row.sample.ok) block->wire_bytes += row.sample.stats.wire_bytes();
        results->rows.push_back(std::move(row));
      }
    }
  }
}

LevelResult RunLevel(const E2eOptions& o, const std::string& prompt, const std::string& model_name,
                     kvwire::v1::ControlPlane::Stub& stub, int level) {
  LevelResult r;
  r.level = level;
  r.requests = std::max(level, o.concurrency_min_requests);
  std::vector<Sample> samples(static_cast<size_t>(r.requests));
  std::atomic<int> next{0};
  const auto start = Clock::now();
  std::vector<std::thread> clients;
  for (int c = 0; c < level; ++c) {
    clients.emplace_back([&] {
      for (int i = next++; i < r.requests && !g_interrupted; i = next++) {
        samples[i] = SendRequest(stub, model_name, prompt, o.concurrency_budget, o.max_tokens,
                                 absl::Seconds(o.request_timeout_s));
      }
    });
  }
  for (std::thread& t : clients) t.join();
  r.wall_s = std::chrono::duration<double>(Clock::now() - start).count();
  std::vector<double> ttft, client_ttft;
  double tokens = 0;
  for (const Sample& s : samples) {
    if (!s.ok) {
      if (r.first_error.empty()) r.first_error = s.error.empty() ? "not sent" : s.error;
      continue;
    }
    ++r.completed;
    tokens += s.stats.generated_tokens();
    ttft.push_back(s.stats.ttft_ms());
    client_ttft.push_back(s.client_ttft_ms);
  }
  r.throughput_rps = r.completed / r.wall_s;
  r.tokens_per_s = tokens / r.wall_s;
  r.ttft_p50_ms = Percentile(ttft, 0.5);
  r.ttft_p99_ms = Percentile(ttft, 0.99);
  r.client_ttft_p50_ms = Percentile(client_ttft, 0.5);
  r.client_ttft_p99_ms = Percentile(client_ttft, 0.99);
  return r;
}

void SweepConcurrency(const E2eOptions& o, const Prompts& prompts, const std::string& model_name,
                      kvwire::v1::ControlPlane::Stub& stub, const Block& block, Results* results) {
  const absl::StatusOr<std::vector<int>> levels = ParseList<int>(o.concurrency, "--concurrency");
  const absl::StatusOr<std::string> prompt = prompts.Text(o.concurrency_tokens);
  if (!levels.ok() || !prompt.ok()) return;  // both checked before the run
  for (int level : *levels) {
    if (g_interrupted) return;
    LevelResult r = RunLevel(o, *prompt, model_name, stub, level);
    r.topology = block.topology;
    r.mode = block.mode;
    std::printf(
        "  [%s %s] concurrency %3d: %d/%d completed, lost %d, %.2f req/s, %.1f tokens/s, ttft "
        "p50 %.1f p99 %.1f ms (client p50 %.1f p99 %.1f)%s%s\n",
        r.topology.c_str(), r.mode.c_str(), level, r.completed, r.requests,
        r.requests - r.completed, r.throughput_rps, r.tokens_per_s, r.ttft_p50_ms, r.ttft_p99_ms,
        r.client_ttft_p50_ms, r.client_ttft_p99_ms,
        r.first_error.empty() ? "" : "; first error: ", r.first_error.c_str());
    std::fflush(stdout);
    results->levels.push_back(std::move(r));
  }
}

// ---- summaries ------------------------------------------------------------------------------

struct Summary {
  std::string topology, mode;
  int target_tokens = 0;
  double budget = 0;
  int ok = 0, failed = 0;
  double prompt_tokens = 0, ttft = 0, client_ttft = 0, queue = 0, prefill = 0, compress = 0,
         pack = 0, transfer = 0, other = 0, install = 0, wire_bytes = 0, raw_bytes = 0,
         tokens_per_s = 0;
  double speedup = NAN;  // median TTFT at budget 1 over this one, same topology/mode/length
};

std::vector<Summary> Summarize(const std::vector<Row>& rows) {
  using Key = std::tuple<std::string, std::string, int, double>;
  std::map<Key, std::vector<const Row*>> groups;
  std::vector<Key> order;
  for (const Row& r : rows) {
    const Key key{r.topology, r.mode, r.target_tokens, r.budget};
    if (groups[key].empty()) order.push_back(key);
    groups[key].push_back(&r);
  }
  std::vector<Summary> out;
  for (const Key& key : order) {
    Summary s;
    std::tie(s.topology, s.mode, s.target_tokens, s.budget) = key;
    std::map<std::string, std::vector<double>> v;
    for (const Row* r : groups[key]) {
      if (!r->sample.ok) {
        ++s.failed;
        continue;
      }
      ++s.ok;
      const auto& st = r->sample.stats;
      const Split p = SplitOf(st);
      for (const auto& [name, x] : std::initializer_list<std::pair<const char*, double>>{
               {"tokens", st.prompt_tokens()},
               {"ttft", st.ttft_ms()},
               {"client", r->sample.client_ttft_ms},
               {"queue", p.queue},
               {"prefill", p.prefill},
               {"compress", p.compress},
               {"pack", p.pack},
               {"transfer", p.transfer},
               {"other", p.other},
               {"install", st.install_ms()},
               {"wire", static_cast<double>(st.wire_bytes())},
               {"raw", static_cast<double>(st.raw_kv_bytes())},
               {"tps", st.decode_tokens_per_s()}}) {
        v[name].push_back(x);
      }
    }
    s.prompt_tokens = Median(v["tokens"]);
    s.ttft = Median(v["ttft"]);
    s.client_ttft = Median(v["client"]);
    s.queue = Median(v["queue"]);
    s.prefill = Median(v["prefill"]);
    s.compress = Median(v["compress"]);
    s.pack = Median(v["pack"]);
    s.transfer = Median(v["transfer"]);
    s.other = Median(v["other"]);
    s.install = Median(v["install"]);
    s.wire_bytes = Median(v["wire"]);
    s.raw_bytes = Median(v["raw"]);
    s.tokens_per_s = Median(v["tps"]);
    out.push_back(s);
  }
  for (Summary& s : out) {
    for (const Summary& full : out) {
      if (full.budget == 1.0 && full.topology == s.topology && full.mode == s.mode &&
          full.target_tokens == s.target_tokens) {
        s.speedup = full.ttft / s.ttft;
      }
    }
  }
  return out;
}

void PrintSummaries(const std::vector<Summary>& summaries, int reps) {
  std::printf(
      "\nmedians over %d repetitions (ms; speed-up = TTFT at budget 1 / TTFT)\n"
      "%-9s %-9s %6s %6s %9s %8s %8s %8s %8s %8s %8s %8s %10s %7s\n",
      reps, "topology", "mode", "tokens", "budget", "ttft", "prefill", "compress", "pack",
      "transfer", "other", "install", "tok/s", "wire MiB", "speedup");
  for (const Summary& s : summaries) {
    std::printf(
        "%-9s %-9s %6.0f %6.2f %9.1f %8.1f %8.1f %8.1f %8.1f %8.1f %8.1f %8.1f %10.2f %6.2fx\n",
        s.topology.c_str(), s.mode.c_str(), s.prompt_tokens, s.budget, s.ttft, s.prefill,
        s.compress, s.pack, s.transfer, s.other, s.install, s.tokens_per_s,
        s.wire_bytes / 1048576.0, s.speedup);
  }
  std::fflush(stdout);
}

// ---- output ---------------------------------------------------------------------------------

std::string Num(double v) { return std::isfinite(v) ? absl::StrFormat("%.6g", v) : "null"; }
std::string Str(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) < 0x20) {
      out += absl::StrFormat("\\u%04x", c);
      continue;
    }
    out += c;
  }
  return out + "\"";
}

void WriteJson(const std::string& path, const E2eOptions& o, const Results& r,
               const std::vector<Summary>& summaries, double seconds) {
  std::ofstream out(path);
  out << "{\n  \"benchmark\": \"e2e\",\n  \"model\": " << Str(o.cluster.model)
      << ",\n  \"synthetic_kv\": " << Str(o.synthetic_kv) << ",\n  \"reps\": " << o.reps
      << ",\n  \"max_tokens\": " << o.max_tokens << ",\n  \"seconds\": " << Num(seconds)
      << ",\n  \"blocks\": [";
  for (size_t i = 0; i < r.blocks.size(); ++i) {
    const Block& b = r.blocks[i];
    out << (i ? "," : "") << "\n    {\"topology\": " << Str(b.topology)
        << ", \"mode\": " << Str(b.mode) << ", \"measured_gbps\": " << Num(b.measured_gbps)
        << ", \"wire_bytes\": " << b.wire_bytes
        << ", \"link_to_decode_qdisc_bytes\": " << b.link.to_decode_qdisc
        << ", \"link_to_decode_tx_bytes\": " << b.link.to_decode_tx
        << ", \"link_to_prefill_qdisc_bytes\": " << b.link.to_prefill_qdisc
        << ", \"link_to_prefill_tx_bytes\": " << b.link.to_prefill_tx << "}";
  }
  out << "\n  ],\n  \"summary\": [";
  for (size_t i = 0; i < summaries.size(); ++i) {
    const Summary& s = summaries[i];
    out << (i ? "," : "") << "\n    {\"topology\": " << Str(s.topology)
        << ", \"mode\": " << Str(s.mode) << ", \"target_tokens\": " << s.target_tokens
        << ", \"prompt_tokens\": " << Num(s.prompt_tokens) << ", \"budget\": " << Num(s.budget)
        << ", \"ok\": " << s.ok << ", \"failed\": " << s.failed << ", \"ttft_ms\": " << Num(s.ttft)
        << ", \"client_ttft_ms\": " << Num(s.client_ttft) << ", \"queue_ms\": " << Num(s.queue)
        << ", \"prefill_ms\": " << Num(s.prefill) << ", \"compress_ms\": " << Num(s.compress)
        << ", \"pack_ms\": " << Num(s.pack) << ", \"transfer_ms\": " << Num(s.transfer)
        << ", \"other_ms\": " << Num(s.other) << ", \"install_ms\": " << Num(s.install)
        << ", \"wire_bytes\": " << Num(s.wire_bytes) << ", \"raw_kv_bytes\": " << Num(s.raw_bytes)
        << ", \"decode_tokens_per_s\": " << Num(s.tokens_per_s)
        << ", \"speedup_vs_uncompressed\": " << Num(s.speedup) << "}";
  }
  out << "\n  ],\n  \"concurrency\": [";
  for (size_t i = 0; i < r.levels.size(); ++i) {
    const LevelResult& l = r.levels[i];
    out << (i ? "," : "") << "\n    {\"topology\": " << Str(l.topology)
        << ", \"mode\": " << Str(l.mode) << ", \"in_flight\": " << l.level
        << ", \"prompt_tokens\": " << o.concurrency_tokens
        << ", \"budget\": " << Num(o.concurrency_budget) << ", \"requests\": " << l.requests
        << ", \"completed\": " << l.completed << ", \"lost\": " << l.requests - l.completed
        << ", \"wall_s\": " << Num(l.wall_s) << ", \"throughput_rps\": " << Num(l.throughput_rps)
        << ", \"tokens_per_s\": " << Num(l.tokens_per_s)
        << ", \"ttft_p50_ms\": " << Num(l.ttft_p50_ms)
        << ", \"ttft_p99_ms\": " << Num(l.ttft_p99_ms)
        << ", \"client_ttft_p50_ms\": " << Num(l.client_ttft_p50_ms)
        << ", \"client_ttft_p99_ms\": " << Num(l.client_ttft_p99_ms)
        << ", \"first_error\": " << Str(l.first_error) << "}";
  }
  out << "\n  ],\n  \"requests\": [";
  for (size_t i = 0; i < r.rows.size(); ++i) {
    const Row& row = r.rows[i];
    const auto& s = row.sample.stats;
    out << (i ? "," : "") << "\n    {\"topology\": " << Str(row.topology)
        << ", \"mode\": " << Str(row.mode) << ", \"rep\": " << row.rep
        << ", \"target_tokens\": " << row.target_tokens << ", \"budget\": " << Num(row.budget)
        << ", \"ok\": " << (row.sample.ok ? "true" : "false")
        << ", \"error\": " << Str(row.sample.error) << ", \"prompt_tokens\": " << s.prompt_tokens()
        << ", \"ttft_ms\": " << Num(s.ttft_ms())
        << ", \"client_ttft_ms\": " << Num(row.sample.client_ttft_ms)
        << ", \"total_ms\": " << Num(row.sample.total_ms) << ", \"queue_ms\": " << Num(s.queue_ms())
        << ", \"prefill_ms\": " << Num(s.prefill_ms())
        << ", \"compress_ms\": " << Num(s.compress_ms()) << ", \"pack_ms\": " << Num(s.pack_ms())
        << ", \"transfer_ms\": " << Num(s.transfer_ms())
        << ", \"install_ms\": " << Num(s.install_ms()) << ", \"wire_bytes\": " << s.wire_bytes()
        << ", \"raw_kv_bytes\": " << s.raw_kv_bytes() << ", \"kept_entries\": " << s.kept_entries()
        << ", \"generated_tokens\": " << s.generated_tokens()
        << ", \"decode_tokens_per_s\": " << Num(s.decode_tokens_per_s()) << "}";
  }
  out << "\n  ]\n}\n";
}

int Plot(const std::string& json, const std::string& png) {
  const std::string venv_python = absl::StrCat(KVWIRE_SOURCE_DIR, "/.venv/bin/python");
  const std::string python = access(venv_python.c_str(), X_OK) == 0 ? venv_python : "python3";
  const std::string cmd = absl::StrCat("'", python, "' '", KVWIRE_SOURCE_DIR,
                                       "/bench/plot_e2e.py' '", json, "' '", png, "'");
  return std::system(cmd.c_str());
}

// ---- driver ---------------------------------------------------------------------------------

struct Plan {
  std::vector<std::string> topologies, concurrency_topologies;
  std::vector<int> lengths, synthetic_lengths, concurrency;
  std::vector<double> budgets;
  std::string synthetic_model_name;
};

absl::StatusOr<Plan> MakePlan(const E2eOptions& o) {
  Plan p;
  KVWIRE_ASSIGN_OR_RETURN(p.topologies, ParseList<std::string>(o.topologies, "--topologies"));
  KVWIRE_ASSIGN_OR_RETURN(
      p.concurrency_topologies,
      ParseList<std::string>(o.concurrency_topologies, "--concurrency-topologies"));
  KVWIRE_ASSIGN_OR_RETURN(p.lengths, ParseList<int>(o.lengths, "--lengths"));
  KVWIRE_ASSIGN_OR_RETURN(p.synthetic_lengths,
                          ParseList<int>(o.synthetic_lengths, "--synthetic-lengths"));
  KVWIRE_ASSIGN_OR_RETURN(p.concurrency, ParseList<int>(o.concurrency, "--concurrency"));
  KVWIRE_ASSIGN_OR_RETURN(p.budgets, ParseList<double>(o.budgets, "--budgets"));
  if (!o.synthetic_kv.empty()) {
    KVWIRE_ASSIGN_OR_RETURN(control::SyntheticKv kv, control::ParseSyntheticKv(o.synthetic_kv));
    p.synthetic_model_name = kv.ModelName();
  }
  if (p.topologies.empty()) return absl::InvalidArgumentError("--topologies is empty");
  return p;
}

// Services of one mode on one topology: warm-up, the sweep, the concurrency sweep.
absl::Status RunMode(const E2eOptions& o, const Plan& plan, const Prompts& prompts,
                     Cluster& cluster, double gbps, bool synthetic, Results* results) {
  const int capacity =
      std::max(16, plan.concurrency.empty()
                       ? 0
                       : *std::max_element(plan.concurrency.begin(), plan.concurrency.end()));
  KVWIRE_RETURN_IF_ERROR(cluster.StartServices(
      synthetic ? o.synthetic_kv : "", {absl::StrCat("--queue=", 2 * capacity)},
      {absl::StrCat("--capacity=", capacity), absl::StrCat("--lease-ms=", o.lease_ms)}));
  auto stub = Connect(cluster.control());
  const std::string model_name = synthetic ? plan.synthetic_model_name : "";
  const std::vector<int>& lengths = synthetic ? plan.synthetic_lengths : plan.lengths;
  Block block{cluster.topology(), synthetic ? "synthetic" : "model", gbps, 0, {}};
  // Warm-up (not recorded): first connection, page cache, lazy allocations.
  KVWIRE_ASSIGN_OR_RETURN(std::string warm, prompts.Text(lengths.front()));
  const Sample w =
      SendRequest(*stub, model_name, warm, 1.0, o.max_tokens, absl::Seconds(o.request_timeout_s));
  if (!w.ok) return absl::InternalError(absl::StrCat("warm-up request failed: ", w.error));
  LinkCounters before, after;
  if (cluster.netns()) {
    KVWIRE_ASSIGN_OR_RETURN(before, cluster.Counters());
  }
  SweepBlock(o, prompts, lengths, plan.budgets, model_name, *stub, &block, results);
  if (cluster.netns()) {
    KVWIRE_ASSIGN_OR_RETURN(after, cluster.Counters());
    block.link = {after.to_decode_qdisc - before.to_decode_qdisc,
                  after.to_decode_tx - before.to_decode_tx,
                  after.to_prefill_qdisc - before.to_prefill_qdisc,
                  after.to_prefill_tx - before.to_prefill_tx};
    std::printf(
        "  [%s %s] link: %.1f MiB wire bytes reported, %.1f MiB crossed the shaped veth "
        "to decode (tx), %.1f MiB back\n",
        block.topology.c_str(), block.mode.c_str(), block.wire_bytes / 1048576.0,
        block.link.to_decode_tx / 1048576.0, block.link.to_prefill_tx / 1048576.0);
  }
  results->blocks.push_back(block);
  const bool sweep_here =
      std::find(plan.concurrency_topologies.begin(), plan.concurrency_topologies.end(),
                cluster.topology()) != plan.concurrency_topologies.end();
  if (!synthetic && sweep_here && !plan.concurrency.empty()) {
    SweepConcurrency(o, prompts, model_name, *stub, block, results);
  }
  return cluster.StopServices();
}

absl::Status RunTopology(const E2eOptions& o, const Plan& plan, const Prompts& prompts,
                         const std::string& topology, Results* results) {
  std::printf("\n== topology %s ==\n", topology.c_str());
  std::fflush(stdout);
  KVWIRE_ASSIGN_OR_RETURN(std::unique_ptr<Cluster> cluster, Cluster::Up(o.cluster, topology));
  double gbps = NAN;
  if (cluster->netns()) {
    KVWIRE_ASSIGN_OR_RETURN(gbps, cluster->MeasureGbps());
  }
  if (!o.skip_model && !g_interrupted) {
    KVWIRE_RETURN_IF_ERROR(RunMode(o, plan, prompts, *cluster, gbps, false, results));
  }
  if (!o.synthetic_kv.empty() && !g_interrupted) {
    KVWIRE_RETURN_IF_ERROR(RunMode(o, plan, prompts, *cluster, gbps, true, results));
  }
  return cluster->Down();
}

void OnSignal(int) { g_interrupted = true; }

int RunE2e(E2eOptions o) {
  const auto start = Clock::now();
  auto fail = [](const absl::Status& s) {
    std::fprintf(stderr, "e2e: %s\n", s.ToString().c_str());
    return 1;
  };
  absl::StatusOr<Plan> plan = MakePlan(o);
  if (!plan.ok()) return fail(plan.status());
  int longest = o.concurrency_tokens;
  for (int n : plan->lengths) longest = std::max(longest, n);
  for (int n : plan->synthetic_lengths) longest = std::max(longest, n);
  absl::StatusOr<Prompts> prompts = Prompts::Load(o.cluster.model, o.corpus, longest);
  if (!prompts.ok()) return fail(prompts.status());
  struct sigaction action = {};
  action.sa_handler = OnSignal;
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);

  Results results;
  for (const std::string& topology : plan->topologies) {
    if (g_interrupted) break;
    if (absl::Status s = RunTopology(o, *plan, *prompts, topology, &results); !s.ok()) {
      return fail(s);
    }
  }
  const std::vector<Summary> summaries = Summarize(results.rows);
  PrintSummaries(summaries, o.reps);
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (!o.json.empty()) WriteJson(o.json, o, results, summaries, seconds);
  if (!o.plot.empty() && !o.json.empty() && Plot(o.json, o.plot) != 0) {
    std::fprintf(stderr, "e2e: plotting failed\n");
  }
  int failed = 0, lost = 0;
  for (const Row& r : results.rows) failed += r.sample.ok ? 0 : 1;
  for (const LevelResult& l : results.levels) lost += l.requests - l.completed;
  std::string headline;
  for (const Summary& s : summaries) {
    if (s.topology == "1gbit" && s.budget == plan->budgets.front()) {
      absl::StrAppend(&headline, headline.empty() ? "" : ", ", s.mode, " ", s.target_tokens,
                      " tokens ", absl::StrFormat("%.2fx", s.speedup));
    }
  }
  std::printf(
      "e2e: %zu requests (%d failed), %zu concurrency levels (%d requests lost), %.0f s%s%s%s\n",
      results.rows.size(), failed, results.levels.size(), lost, seconds,
      headline.empty() ? "" : "; TTFT speed-up over budget 1 on 1gbit at budget ",
      headline.empty() ? "" : absl::StrFormat("%.2f: ", plan->budgets.front()).c_str(),
      headline.c_str());
  if (g_interrupted) std::printf("e2e: interrupted\n");
  return failed == 0 && lost == 0 && !g_interrupted ? 0 : 1;
}

std::string DefaultModel() {
  if (const char* m = std::getenv("KVWIRE_MODEL"); m != nullptr && *m != '\0') return m;
  const char* home = std::getenv("HOME");
  return absl::StrCat(home ? home : "", "/.cache/kvwire/models/SmolLM2-135M-Instruct.Q4_1.gguf");
}

std::string OwnDirectory() {
  char path[4096];
  const ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);
  if (n <= 0) return "build/bin";
  std::string self(path, static_cast<size_t>(n));
  return self.substr(0, self.find_last_of('/'));
}

void SetupE2e(CLI::App& sub, std::function<int()>* run) {
  auto o = std::make_shared<E2eOptions>();
  o->cluster.model = DefaultModel();
  o->cluster.bin = OwnDirectory();
  o->cluster.script = absl::StrCat(KVWIRE_SOURCE_DIR, "/deploy/netns/kvwire-netns");
  sub.add_option("--model", o->cluster.model, "GGUF model (default $KVWIRE_MODEL or the cache)");
  sub.add_option("--topologies", o->topologies,
                 "comma-separated: loopback, or tc rates of the namespace link (1gbit, 10gbit)");
  sub.add_option("--lengths", o->lengths, "prompt lengths in tokens, real model");
  sub.add_option("--budgets", o->budgets, "kept fractions; include 1 for the speed-up");
  sub.add_option("--reps", o->reps, "repetitions of every length and budget")
      ->check(CLI::Range(1, 100));
  sub.add_option("--max-tokens", o->max_tokens, "tokens generated per request")
      ->check(CLI::Range(1, 1024));
  sub.add_option("--synthetic-kv", o->synthetic_kv,
                 "KV shape LxHxD[xQ] of the synthetic-KV runs; empty skips them");
  sub.add_option("--synthetic-lengths", o->synthetic_lengths, "prompt lengths, synthetic KV");
  sub.add_flag("--skip-model", o->skip_model, "only the synthetic-KV runs");
  sub.add_option("--concurrency", o->concurrency,
                 "requests in flight of the concurrency sweep (real model); empty skips it");
  sub.add_option("--concurrency-topologies", o->concurrency_topologies,
                 "topologies that run the concurrency sweep");
  sub.add_option("--concurrency-tokens", o->concurrency_tokens, "prompt length of the sweep")
      ->check(CLI::Range(1, 100000));
  sub.add_option("--concurrency-budget", o->concurrency_budget, "kept fraction of the sweep")
      ->check(CLI::Range(0.001, 1.0));
  sub.add_option("--concurrency-min-requests", o->concurrency_min_requests,
                 "requests per level at least (a level sends max(level, this))")
      ->check(CLI::Range(1, 100000));
  sub.add_option("--lease-ms", o->lease_ms, "decode node grant lease (kvwire-decode --lease-ms)")
      ->check(CLI::Range(1, 600000));
  sub.add_option("--request-timeout-s", o->request_timeout_s, "deadline of one request")
      ->check(CLI::Range(1, 3600));
  sub.add_option("--corpus", o->corpus, "UTF-8 text (or .gz) the prompts are cut from");
  sub.add_option("--netns-script", o->cluster.script, "deploy/netns/kvwire-netns");
  sub.add_option("--prefix", o->cluster.prefix, "name prefix of the namespaces (kvwire-netns)");
  sub.add_option("--net", o->cluster.net, "first two octets of the topology's addresses");
  sub.add_option("--bin", o->cluster.bin, "directory of the service binaries");
  sub.add_option("--json", o->json, "write results as JSON");
  sub.add_option("--plot", o->plot, "write PNG plots (needs --json)");
  *run = [o] { return RunE2e(*o); };
}

}  // namespace

KVWIRE_BENCH_COMMAND(e2e,
                     "control plane, prefill and decode as processes, loopback and shaped links",
                     SetupE2e);

}  // namespace kvwire::bench
