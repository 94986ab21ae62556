// Starts kvwire-control as a process and drives it with the kvwire CLI: budget persistence across
// restarts, malformed policy files, admin token enforcement, and Generate validation without any
// nodes registered.
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "kvwire/base/deadline.h"
#include "kvwire/control/metrics.h"
#include "runtime/tiny_model.h"
#include "tests/control_plane/subprocess.h"

namespace kvwire {
namespace {

using testing::RunResult;
using testing::Subprocess;

const std::string kBin = KVWIRE_BIN_DIR;

Deadline Soon() { return Deadline::In(absl::Seconds(20)); }

class ControlCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = "/tmp/kvwire-cli-XXXXXX";
    ASSERT_NE(::mkdtemp(templ.data()), nullptr);
    dir_ = templ;
    policy_ = dir_ + "/policy.yaml";
  }
  void TearDown() override {
    control_.reset();
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  std::string Write(const std::string& name, const std::string& text) {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path) << text;
    return path;
  }

  std::string TinyModel() {
    runtime::TinyModelOptions options;
    options.context_length = 64;
    absl::StatusOr<std::string> bytes = runtime::MakeTinyModel(options);
    EXPECT_TRUE(bytes.ok()) << bytes.status();
    return Write("tiny.gguf", bytes.value_or(""));
  }

  // Starts kvwire-control on a free port and waits until it serves.
  void StartControl(std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = {
        kBin + "/kvwire-control", "--listen", "127.0.0.1:0", "--policy-file", policy_,
        "--policy-poll-ms",       "100000"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto started = Subprocess::Start(argv);
    ASSERT_TRUE(started.ok()) << started.status();
    control_ = *std::move(started);
    auto out = control_->WaitForStdout("\n", Soon());
    ASSERT_TRUE(out.ok()) << out.status();
    const std::string marker = "listening on ";
    const size_t at = out->find(marker);
    ASSERT_NE(at, std::string::npos) << *out;
    address_ = out->substr(at + marker.size());
    address_ = address_.substr(0, address_.find_first_of(" \n"));
  }

  void StopControl() {
    control_->Signal(SIGTERM);
    absl::StatusOr<int> code = control_->Wait(Soon());
    ASSERT_TRUE(code.ok()) << code.status();
    EXPECT_EQ(*code, 0) << control_->err();
    control_.reset();
  }

  RunResult Cli(std::vector<std::string> args) {
    std::vector<std::string> argv = {kBin + "/kvwire", "--control", address_};
    argv.insert(argv.end(), args.begin(), args.end());
    absl::StatusOr<RunResult> r = testing::RunToCompletion(argv, Soon());
    EXPECT_TRUE(r.ok()) << r.status();
    return r.value_or(RunResult{});
  }

  std::string dir_;
  std::string policy_;
  std::string address_;
  std::unique_ptr<Subprocess> control_;
};

TEST_F(ControlCliTest, BudgetSetGetRoundTripSurvivesRestart) {
  StartControl();
  RunResult set = Cli({"budget", "set", "--tenant", "acme", "--kept-fraction", "0.3", "--min",
                       "0.1", "--max", "0.8", "--method", "snapkv/adaptive/merge"});
  ASSERT_EQ(set.exit_code, 0) << set.err;
  RunResult get = Cli({"budget", "get", "--tenant", "acme", "--json"});
  ASSERT_EQ(get.exit_code, 0) << get.err;
  EXPECT_TRUE(absl::StrContains(get.out, R"("policy":{"tenant":"acme")")) << get.out;
  EXPECT_TRUE(absl::StrContains(get.out, R"("kept_fraction":0.3)")) << get.out;
  StopControl();

  StartControl();
  RunResult after = Cli({"budget", "get", "--tenant", "acme"});
  ASSERT_EQ(after.exit_code, 0) << after.err;
  EXPECT_TRUE(absl::StrContains(after.out, "applies: tenant acme")) << after.out;
  EXPECT_TRUE(absl::StrContains(after.out, "kept_fraction 0.3, limits [0.1, 0.8]")) << after.out;
  EXPECT_TRUE(absl::StrContains(after.out, "snapkv/adaptive/merge")) << after.out;
}

TEST_F(ControlCliTest, InvalidPolicyIsRejectedAndNothingChanges) {
  StartControl();
  RunResult bad =
      Cli({"budget", "set", "--tenant", "acme", "--kept-fraction", "0.05", "--min", "0.1"});
  EXPECT_EQ(bad.exit_code, 3);
  EXPECT_TRUE(absl::StrContains(bad.err, "INVALID_ARGUMENT: default kept_fraction 0.05 is outside"))
      << bad.err;
  EXPECT_FALSE(std::filesystem::exists(policy_)) << "a rejected change must not write the file";
}

TEST_F(ControlCliTest, MalformedPolicyFileKeepsTheOldPolicy) {
  StartControl();
  ASSERT_EQ(Cli({"budget", "set", "--tenant", "acme", "--kept-fraction", "0.3"}).exit_code, 0);
  Write("policy.yaml", "policies:\n  - {tenant: acme, budget: {kept_fraction: [}\n");
  control_->Signal(SIGHUP);
  auto logged = control_->WaitForStderr("previous policies stay in force", Soon());
  ASSERT_TRUE(logged.ok()) << logged.status();
  EXPECT_TRUE(absl::StrContains(*logged, "INVALID_ARGUMENT")) << *logged;
  RunResult get = Cli({"budget", "get", "--tenant", "acme"});
  EXPECT_TRUE(absl::StrContains(get.out, "kept_fraction 0.3")) << get.out;

  // A valid replacement is picked up the same way, so the check above could have failed.
  Write("policy.yaml", "policies:\n  - {tenant: acme, model: '*', budget: {kept_fraction: 0.6}}\n");
  control_->Signal(SIGHUP);
  ASSERT_TRUE(control_->WaitForStderr("reloaded", Soon()).ok());
  get = Cli({"budget", "get", "--tenant", "acme"});
  EXPECT_TRUE(absl::StrContains(get.out, "kept_fraction 0.6")) << get.out;
}

TEST_F(ControlCliTest, MalformedPolicyFileAtStartIsAClearError) {
  Write("policy.yaml", "policies: 7\n");
  absl::StatusOr<RunResult> r = testing::RunToCompletion(
      {kBin + "/kvwire-control", "--listen", "127.0.0.1:0", "--policy-file", policy_}, Soon());
  ASSERT_TRUE(r.ok());
  EXPECT_NE(r->exit_code, 0);
  EXPECT_TRUE(
      absl::StrContains(r->err, "INVALID_ARGUMENT: " + policy_ + ": 'policies' must be a list"))
      << r->err;
}

TEST_F(ControlCliTest, AdminTokenIsEnforced) {
  const std::string token = Write("token", "s3cret\n");
  const std::string wrong = Write("wrong", "guess\n");
  StartControl({"--admin-token-file", token});
  const std::vector<std::string> set = {"budget", "set", "--tenant", "t", "--kept-fraction", "0.5"};
  RunResult none = Cli(set);
  EXPECT_EQ(none.exit_code, 16);
  EXPECT_TRUE(absl::StrContains(none.err, "UNAUTHENTICATED")) << none.err;
  std::vector<std::string> with_wrong = set;
  with_wrong.insert(with_wrong.end(), {"--admin-token-file", wrong});
  RunResult denied = Cli(with_wrong);
  EXPECT_EQ(denied.exit_code, 7);
  EXPECT_TRUE(absl::StrContains(denied.err, "PERMISSION_DENIED")) << denied.err;
  std::vector<std::string> with_token = set;
  with_token.insert(with_token.end(), {"--admin-token-file", token});
  RunResult ok = Cli(with_token);
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_EQ(Cli({"budget", "get"}).exit_code, 0) << "reading needs no token";
}

TEST_F(ControlCliTest, InvalidGenerateInputsAreInvalidArgument) {
  Write("policy.yaml",
        "policies:\n  - {tenant: acme, model: '*', budget: {kept_fraction: 0.5},"
        " min_kept_fraction: 0.2, max_kept_fraction: 0.9}\n");
  StartControl({"--model", TinyModel(), "--max-tokens-limit", "32"});
  const std::string long_prompt(400, 'x');
  const std::pair<std::vector<std::string>, std::string> cases[] = {
      {{"--prompt", ""}, "prompt is empty"},
      {{"--prompt", "hi", "--max-tokens", "0"}, "max_tokens must be at least 1, got 0"},
      {{"--prompt", "hi", "--max-tokens", "33"}, "max_tokens 33 exceeds the server limit of 32"},
      {{"--prompt", "hi", "--budget", "1.5"}, "budget kept_fraction must be in (0, 1], got 1.5"},
      {{"--prompt", "hi", "--budget", "0"}, "budget kept_fraction must be in (0, 1], got 0"},
      {{"--prompt", "hi", "--budget", "0.1"}, "is outside the limits [0.2, 0.9]"},
      {{"--prompt", "hi", "--method", "magic/uniform"}, "compression method 'magic/uniform'"},
      {{"--prompt", long_prompt}, "is longer than the model context of 64 tokens"},
      {{"--prompt", "hi", "--tenant", "stranger"}, "unknown tenant 'stranger'"},
  };
  for (const auto& [flags, message] : cases) {
    std::vector<std::string> args = {"generate", "--max-tokens", "8"};
    args.insert(args.end(), flags.begin(), flags.end());
    if (std::find(flags.begin(), flags.end(), "--tenant") == flags.end()) {
      args.insert(args.end(), {"--tenant", "acme"});
    }
    RunResult r = Cli(args);
    EXPECT_EQ(r.exit_code, 3) << message << ": " << r.err;
    EXPECT_TRUE(absl::StartsWith(r.err, "kvwire: INVALID_ARGUMENT: ")) << r.err;
    EXPECT_TRUE(absl::StrContains(r.err, message)) << r.err;
  }
  RunResult chat =
      Cli({"generate", "--tenant", "acme", "--chat", "--prompt", "hello", "--max-tokens", "8"});
  EXPECT_EQ(chat.exit_code, 14) << chat.err;
  EXPECT_TRUE(absl::StrContains(chat.err, "UNAVAILABLE: no decode node available")) << chat.err;

  RunResult stats = Cli({"stats", "--json"});
  ASSERT_EQ(stats.exit_code, 0) << stats.err;
  EXPECT_TRUE(absl::StrContains(stats.out, R"("requests_failed":"10")")) << stats.out;
  RunResult nodes = Cli({"nodes"});
  EXPECT_EQ(nodes.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(nodes.out, "no live nodes")) << nodes.out;
}

TEST_F(ControlCliTest, ServesPrometheusMetrics) {
  StartControl({"--metrics", "127.0.0.1:0"});
  ASSERT_EQ(Cli({"generate", "--prompt", ""}).exit_code, 3);
  const std::string marker = "metrics on port ";
  const size_t at = control_->out().find(marker);
  ASSERT_NE(at, std::string::npos) << control_->out();
  const int port = std::stoi(control_->out().substr(at + marker.size()));
  absl::StatusOr<std::string> body = control::HttpGet("127.0.0.1", port, "/metrics", Soon());
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_TRUE(absl::StrContains(*body, "kvwire_control_requests_total 1")) << *body;
  EXPECT_TRUE(absl::StrContains(*body, "kvwire_control_requests_failed_total 1")) << *body;
}

TEST_F(ControlCliTest, ServesOverTls) {
  const std::string openssl = "/usr/bin/openssl";
  if (!std::filesystem::exists(openssl)) GTEST_SKIP() << "no openssl to make a certificate";
  const std::string cert = dir_ + "/cert.pem", key = dir_ + "/key.pem";
  absl::StatusOr<RunResult> made =
      testing::RunToCompletion({openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                                key, "-out", cert, "-days", "1", "-subj", "/CN=localhost",
                                "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"},
                               Soon());
  ASSERT_TRUE(made.ok() && made->exit_code == 0) << (made.ok() ? made->err : "");
  StartControl({"--tls-cert", cert, "--tls-key", key});
  RunResult secure = Cli({"--tls-ca", cert, "budget", "get"});
  EXPECT_EQ(secure.exit_code, 0) << secure.err;
  RunResult plain = Cli({"--timeout-ms", "2000", "budget", "get"});
  EXPECT_EQ(plain.exit_code, 14) << "a plaintext client cannot talk to a TLS server";
}

TEST_F(ControlCliTest, UnreachableControlPlaneIsUnavailable) {
  address_ = "127.0.0.1:1";
  RunResult r = Cli({"--timeout-ms", "2000", "nodes"});
  EXPECT_EQ(r.exit_code, 14) << r.err;
  EXPECT_TRUE(absl::StartsWith(r.err, "kvwire: UNAVAILABLE")) << r.err;
}

}  // namespace
}  // namespace kvwire
