// kvwire: command-line client of the ControlPlane service.
//
//   kvwire --control HOST:PORT generate --prompt TEXT [--chat] [--max-tokens N] [--budget B]
//          [--method SPEC] [--json]
//   kvwire --control HOST:PORT budget get [--tenant T] [--model M]
//   kvwire --control HOST:PORT budget set --tenant T --model M
//          (--kept-fraction F | --bytes-per-token N | --auto-ttft-ms MS) [--min F] [--max F]
//          [--method SPEC] [--admin-token-file FILE]
//   kvwire --control HOST:PORT nodes | stats
//
// Exit status: 0 only when the call completed (for generate: final stats received); otherwise
// the gRPC status code number, with "kvwire: CODE_NAME: message" on stderr (2 for usage errors).
#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "kvwire/v1/control_plane.grpc.pb.h"
#include "proto/grpc_util.h"
#include "tools/cli_format.h"

namespace kvwire::cli {
namespace {

struct Global {
  std::string control = "127.0.0.1:7000";
  std::string tls_ca;
  bool tls = false;
  uint32_t timeout_ms = 10000;
  bool json = false;
};

struct GenerateFlags {
  std::string tenant = "default";
  std::string model;
  std::string prompt;
  std::string system;
  bool chat = false;
  uint32_t max_tokens = 64;
  float temperature = 0;
  float top_p = 0;
  uint64_t seed = 0;
  double budget = -1;  // kept fraction override; < 0 = policy default
  uint32_t bytes_per_token = 0;
  uint32_t auto_ttft_ms = 0;
  std::string method;
  std::string kv_dtype;
  uint32_t timeout_ms = 600000;
};

struct PolicyFlags {
  std::string tenant = "*";
  std::string model = "*";
  double kept_fraction = -1;
  uint32_t bytes_per_token = 0;
  uint32_t auto_ttft_ms = 0;
  float auto_min_kept = 0.05f;
  float min = 0.01f;
  float max = 1.0f;
  std::string method;
  std::string kv_dtype;
  std::string admin_token_file;
};

int Fail(const absl::Status& status) {
  std::cerr << "kvwire: " << absl::StatusCodeToString(status.code()) << ": " << status.message()
            << std::endl;
  const int code = static_cast<int>(status.code());
  return code == 0 ? 1 : code;
}

absl::StatusOr<std::unique_ptr<v1::ControlPlane::Stub>> Connect(const Global& g) {
  grpc_util::TlsFiles tls;
  tls.ca_path = g.tls_ca;
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> creds =
      grpc_util::LoadChannelCredentials(tls, g.tls);
  if (!creds.ok()) return creds.status();
  return v1::ControlPlane::NewStub(grpc::CreateChannel(g.control, *creds));
}

void SetDeadline(grpc::ClientContext* ctx, uint32_t timeout_ms) {
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(timeout_ms));
}

absl::StatusOr<v1::Budget> BudgetFromFlags(double kept, uint32_t bytes, uint32_t ttft_ms,
                                           float auto_min, bool required) {
  v1::Budget b;
  const int given = (kept >= 0) + (bytes > 0) + (ttft_ms > 0);
  if (given > 1) {
    return absl::InvalidArgumentError(
        "give only one of a kept fraction, --bytes-per-token and --auto-ttft-ms");
  }
  if (given == 0 && required) {
    return absl::InvalidArgumentError(
        "give one of --kept-fraction, --bytes-per-token or --auto-ttft-ms");
  }
  if (kept >= 0) b.set_kept_fraction(static_cast<float>(kept));
  if (bytes > 0) b.set_bytes_per_token(bytes);
  if (ttft_ms > 0) {
    b.mutable_auto_budget()->set_ttft_target_ms(ttft_ms);
    b.mutable_auto_budget()->set_min_kept_fraction(auto_min);
  }
  return b;
}

v1::GenerateRequest MakeGenerateRequest(const GenerateFlags& f, const v1::Budget& budget) {
  v1::GenerateRequest req;
  req.set_tenant(f.tenant);
  req.set_model(f.model);
  if (f.chat) {
    if (!f.system.empty()) {
      v1::ChatMessage* m = req.mutable_chat()->add_messages();
      m->set_role("system");
      m->set_content(f.system);
    }
    v1::ChatMessage* m = req.mutable_chat()->add_messages();
    m->set_role("user");
    m->set_content(f.prompt);
  } else {
    req.set_prompt(f.prompt);
  }
  req.mutable_sampling()->set_max_tokens(f.max_tokens);
  req.mutable_sampling()->set_temperature(f.temperature);
  req.mutable_sampling()->set_top_p(f.top_p);
  req.mutable_sampling()->set_seed(f.seed);
  if (budget.kind_case() != v1::Budget::KIND_NOT_SET) *req.mutable_budget() = budget;
  req.mutable_compression()->set_method(f.method);
  req.mutable_compression()->set_kv_dtype(f.kv_dtype);
  return req;
}

int RunGenerate(const Global& g, const GenerateFlags& f) {
  absl::StatusOr<v1::Budget> budget =
      BudgetFromFlags(f.budget, f.bytes_per_token, f.auto_ttft_ms, 0.05f, false);
  if (!budget.ok()) return Fail(budget.status());
  auto stub = Connect(g);
  if (!stub.ok()) return Fail(stub.status());
  grpc::ClientContext ctx;
  SetDeadline(&ctx, f.timeout_ms);
  auto reader = (*stub)->Generate(&ctx, MakeGenerateRequest(f, *budget));
  v1::GenerateResponse event;
  std::string text;
  v1::RequestStats stats;
  bool finished = false;
  while (reader->Read(&event)) {
    if (event.has_final_stats()) {
      stats = event.final_stats();
      finished = true;
    } else if (g.json) {
      text += event.text_delta();
    } else {
      std::cout << event.text_delta() << std::flush;
    }
  }
  absl::Status status = grpc_util::FromGrpc(reader->Finish());
  if (!status.ok()) return Fail(status);
  if (!finished) return Fail(absl::DataLossError("the stream ended without final stats"));
  if (g.json) {
    std::cout << "{\"text\":" << JsonQuote(text) << ",\"stats\":" << ToJson(stats) << "}"
              << std::endl;
  } else {
    std::cout << "\n\n" << FormatRequestStats(stats);
  }
  return 0;
}

int RunBudgetGet(const Global& g, const PolicyFlags& f, bool tenant_given, bool model_given) {
  auto stub = Connect(g);
  if (!stub.ok()) return Fail(stub.status());
  v1::GetBudgetPolicyRequest req;
  if (tenant_given) req.set_tenant(f.tenant);
  if (model_given) req.set_model(f.model);
  v1::GetBudgetPolicyResponse resp;
  grpc::ClientContext ctx;
  SetDeadline(&ctx, g.timeout_ms);
  absl::Status status = grpc_util::FromGrpc((*stub)->GetBudgetPolicy(&ctx, req, &resp));
  if (!status.ok()) return Fail(status);
  if (g.json) {
    std::cout << ToJson(resp) << std::endl;
    return 0;
  }
  if (resp.has_policy()) std::cout << "applies: " << FormatPolicy(resp.policy()) << "\n";
  std::cout << "all policies:\n";
  for (const v1::BudgetPolicy& p : resp.all()) std::cout << "  " << FormatPolicy(p) << "\n";
  return 0;
}

absl::StatusOr<std::string> ReadToken(const std::string& path) {
  if (path.empty()) return std::string();
  absl::StatusOr<std::string> text = grpc_util::ReadFile(path);
  if (!text.ok()) return text.status();
  return std::string(absl::StripAsciiWhitespace(*text));
}

int RunBudgetSet(const Global& g, const PolicyFlags& f) {
  absl::StatusOr<v1::Budget> budget =
      BudgetFromFlags(f.kept_fraction, f.bytes_per_token, f.auto_ttft_ms, f.auto_min_kept, true);
  if (!budget.ok()) return Fail(budget.status());
  absl::StatusOr<std::string> token = ReadToken(f.admin_token_file);
  if (!token.ok()) return Fail(token.status());
  v1::SetBudgetPolicyRequest req;
  req.set_admin_token(*token);
  v1::BudgetPolicy* p = req.mutable_policy();
  p->set_tenant(f.tenant);
  p->set_model(f.model);
  *p->mutable_default_budget() = *budget;
  p->set_min_kept_fraction(f.min);
  p->set_max_kept_fraction(f.max);
  p->mutable_compression()->set_method(f.method);
  p->mutable_compression()->set_kv_dtype(f.kv_dtype);
  auto stub = Connect(g);
  if (!stub.ok()) return Fail(stub.status());
  v1::SetBudgetPolicyResponse resp;
  grpc::ClientContext ctx;
  SetDeadline(&ctx, g.timeout_ms);
  absl::Status status = grpc_util::FromGrpc((*stub)->SetBudgetPolicy(&ctx, req, &resp));
  if (!status.ok()) return Fail(status);
  std::cout << (g.json ? ToJson(resp) : absl::StrCat("set: ", FormatPolicy(resp.policy())))
            << std::endl;
  return 0;
}

int RunNodes(const Global& g) {
  auto stub = Connect(g);
  if (!stub.ok()) return Fail(stub.status());
  v1::ListNodesResponse resp;
  grpc::ClientContext ctx;
  SetDeadline(&ctx, g.timeout_ms);
  absl::Status status = grpc_util::FromGrpc((*stub)->ListNodes(&ctx, {}, &resp));
  if (!status.ok()) return Fail(status);
  std::cout << (g.json ? ToJson(resp) + "\n" : FormatNodes(resp)) << std::flush;
  return 0;
}

int RunStats(const Global& g) {
  auto stub = Connect(g);
  if (!stub.ok()) return Fail(stub.status());
  v1::GetStatsResponse resp;
  grpc::ClientContext ctx;
  SetDeadline(&ctx, g.timeout_ms);
  absl::Status status = grpc_util::FromGrpc((*stub)->GetStats(&ctx, {}, &resp));
  if (!status.ok()) return Fail(status);
  std::cout << (g.json ? ToJson(resp) + "\n" : FormatStats(resp)) << std::flush;
  return 0;
}

void AddGenerate(CLI::App& app, GenerateFlags& f) {
  app.add_option("--prompt", f.prompt, "prompt text (the user message with --chat)")->required();
  app.add_flag("--chat", f.chat, "send the prompt as a chat user turn (model's chat template)");
  app.add_option("--system", f.system, "system message (with --chat)");
  app.add_option("--tenant", f.tenant, "tenant whose budget policy applies");
  app.add_option("--model", f.model, "model name (empty: the only one served)");
  app.add_option("--max-tokens", f.max_tokens, "tokens to generate");
  app.add_option("--temperature", f.temperature, "0 = greedy");
  app.add_option("--top-p", f.top_p, "nucleus sampling, (0, 1]");
  app.add_option("--seed", f.seed, "sampling seed");
  app.add_option("--budget", f.budget, "kept fraction override, (0, 1]");
  app.add_option("--bytes-per-token", f.bytes_per_token, "budget override in wire bytes/token");
  app.add_option("--auto-ttft-ms", f.auto_ttft_ms, "budget override: fit this TTFT target");
  app.add_option("--method", f.method, "compression method, e.g. snapkv/adaptive/merge");
  app.add_option("--kv-dtype", f.kv_dtype, "wire dtype: f16, bf16, f32, i8");
  app.add_option("--timeout-ms", f.timeout_ms, "deadline of the whole generation");
}

void AddPolicySelector(CLI::App& app, PolicyFlags& f) {
  app.add_option("--tenant", f.tenant, "tenant (\"*\" = any)");
  app.add_option("--model", f.model, "model (\"*\" = any)");
}

void AddPolicySet(CLI::App& app, PolicyFlags& f) {
  AddPolicySelector(app, f);
  app.add_option("--kept-fraction", f.kept_fraction, "default budget: kept fraction (0, 1]");
  app.add_option("--bytes-per-token", f.bytes_per_token, "default budget: wire bytes per token");
  app.add_option("--auto-ttft-ms", f.auto_ttft_ms, "default budget: auto, fit this TTFT");
  app.add_option("--auto-min-kept", f.auto_min_kept, "auto: never keep less than this");
  app.add_option("--min", f.min, "smallest kept fraction a request may ask");
  app.add_option("--max", f.max, "largest kept fraction a request may ask");
  app.add_option("--method", f.method, "default compression method");
  app.add_option("--kv-dtype", f.kv_dtype, "default wire dtype");
  app.add_option("--admin-token-file", f.admin_token_file, "file holding the admin token");
}

}  // namespace
}  // namespace kvwire::cli

int main(int argc, char** argv) {
  using namespace kvwire::cli;  // NOLINT: composition root
  Global g;
  GenerateFlags gen;
  PolicyFlags get_flags, set_flags;
  CLI::App app{"kvwire: client of the kvwire control plane"};
  app.require_subcommand(1);
  // A repeated flag means its last value, as in most command-line tools (and handy in scripts).
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app.add_option("--control", g.control, "control plane address HOST:PORT");
  app.add_option("--tls-ca", g.tls_ca, "PEM roots to verify the control plane (enables TLS)");
  app.add_flag("--tls", g.tls, "TLS with the system roots");
  app.add_option("--timeout-ms", g.timeout_ms, "deadline of operator calls");
  app.add_flag("--json", g.json, "machine-readable output");
  CLI::App* generate = app.add_subcommand("generate", "generate text, then print request stats");
  AddGenerate(*generate, gen);
  generate->add_flag("--json", g.json, "one JSON object: text and stats");
  CLI::App* budget = app.add_subcommand("budget", "show or change budget policies");
  budget->require_subcommand(1);
  CLI::App* get = budget->add_subcommand("get", "the policy for a tenant/model and all policies");
  AddPolicySelector(*get, get_flags);
  get->add_flag("--json", g.json, "JSON output");
  CLI::App* set = budget->add_subcommand("set", "set the policy of a tenant/model");
  AddPolicySet(*set, set_flags);
  set->add_flag("--json", g.json, "JSON output");
  CLI::App* nodes = app.add_subcommand("nodes", "list live prefill and decode nodes");
  nodes->add_flag("--json", g.json, "JSON output");
  CLI::App* stats = app.add_subcommand("stats", "request totals, bytes and TTFT percentiles");
  stats->add_flag("--json", g.json, "JSON output");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  if (generate->parsed()) return RunGenerate(g, gen);
  if (get->parsed()) {
    return RunBudgetGet(g, get_flags, get->count("--tenant") > 0, get->count("--model") > 0);
  }
  if (set->parsed()) return RunBudgetSet(g, set_flags);
  if (nodes->parsed()) return RunNodes(g);
  return RunStats(g);
}
