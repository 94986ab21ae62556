#include "bench/e2e_cluster.h"

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <iostream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "kvwire/base/deadline.h"
#include "kvwire/base/status.h"
#include "proto/grpc_util.h"

namespace kvwire::bench {
namespace {

using Clock = std::chrono::steady_clock;

double MillisSince(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

// The words after `key` on the first line of `text` that starts with `key`.
std::vector<std::string> LineAfter(const std::string& text, absl::string_view key) {
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (absl::StartsWith(line, key)) {
      return absl::StrSplit(line.substr(key.size()), ' ', absl::SkipEmpty());
    }
  }
  return {};
}

absl::StatusOr<uint64_t> Number(const std::vector<std::string>& words, size_t i,
                                absl::string_view what) {
  uint64_t v = 0;
  if (i >= words.size() || !absl::SimpleAtoi(words[i], &v)) {
    return absl::InternalError(absl::StrCat("kvwire-netns counters: no ", what));
  }
  return v;
}

}  // namespace

absl::StatusOr<std::string> RunCommand(const std::vector<std::string>& argv,
                                       absl::Duration timeout) {
  int fds[2];
  if (pipe(fds) != 0) return absl::InternalError("pipe failed");
  const pid_t pid = fork();
  if (pid < 0) return absl::InternalError("fork failed");
  if (pid == 0) {
    dup2(fds[1], STDOUT_FILENO);
    close(fds[0]);
    close(fds[1]);
    setpgid(0, 0);  // its own group, so a timeout can end the script and what it waits for
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execvp(args[0], args.data());
    _exit(127);
  }
  close(fds[1]);
  const Deadline deadline = Deadline::In(timeout);
  std::string out;
  char buf[4096];
  bool timed_out = false;
  while (true) {
    pollfd p{fds[0], POLLIN, 0};
    const int ready = poll(&p, 1, deadline.RemainingMillisForPoll());
    if (ready == 0) {
      timed_out = true;
      break;
    }
    if (ready < 0) continue;  // EINTR
    const ssize_t n = read(fds[0], buf, sizeof(buf));
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  close(fds[0]);
  // The script's own cleanup traps run on TERM; KILL follows only if they hang.
  if (timed_out) kill(-pid, SIGTERM);
  int status = 0;
  for (int i = 0; i < 300 && waitpid(pid, &status, WNOHANG) == 0; ++i) usleep(100000);
  if (waitpid(pid, &status, WNOHANG) == 0) {
    kill(-pid, SIGKILL);
    waitpid(pid, &status, 0);
  }
  const std::string command = absl::StrJoin(argv, " ");
  if (timed_out) {
    return absl::DeadlineExceededError(
        absl::StrCat("'", command, "' did not finish within ", absl::FormatDuration(timeout)));
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return absl::InternalError(
        absl::StrCat("'", command, "' failed (status ", status, "); its output:\n", out));
  }
  return out;
}

absl::StatusOr<std::string> Cluster::Script(const std::string& command,
                                            std::vector<std::string> args, absl::Duration timeout) {
  std::vector<std::string> argv = {options_.script, command, "--prefix",
                                   options_.prefix, "--net", options_.net};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunCommand(argv, timeout);
}

absl::StatusOr<std::unique_ptr<Cluster>> Cluster::Up(const ClusterOptions& options,
                                                     const std::string& topology) {
  std::unique_ptr<Cluster> cluster(new Cluster(options, topology));
  std::vector<std::string> args = {"--topology", cluster->netns() ? "netns" : "loopback"};
  if (cluster->netns()) args.insert(args.end(), {"--rate", topology});
  KVWIRE_ASSIGN_OR_RETURN(std::string out,
                          cluster->Script("up", std::move(args), absl::Seconds(60)));
  cluster->up_ = true;
  std::cout << out << std::flush;
  return cluster;
}

Cluster::~Cluster() {
  if (absl::Status s = Down(); !s.ok()) std::cerr << "e2e: " << s << "\n";
}

absl::Status Cluster::Down() {
  if (!up_) return absl::OkStatus();
  up_ = false;
  control_.clear();
  return Script("down", {}, absl::Seconds(60)).status();
}

absl::StatusOr<double> Cluster::MeasureGbps() {
  KVWIRE_ASSIGN_OR_RETURN(std::string out, Script("measure", {}, absl::Seconds(200)));
  std::cout << out << std::flush;
  const std::vector<std::string> words = LineAfter(out, "measured prefill_to_decode_gbps ");
  double gbps = 0;
  if (words.empty() || !absl::SimpleAtod(words[0], &gbps)) {
    return absl::InternalError(absl::StrCat("kvwire-netns measure printed no rate:\n", out));
  }
  return gbps;
}

absl::StatusOr<LinkCounters> Cluster::Counters() {
  KVWIRE_ASSIGN_OR_RETURN(std::string out, Script("counters", {}, absl::Seconds(30)));
  // "counter DIRECTION qdisc_sent_bytes N tx_bytes M"
  const auto to_decode = LineAfter(out, "counter prefill_to_decode ");
  const auto to_prefill = LineAfter(out, "counter decode_to_prefill ");
  LinkCounters c;
  KVWIRE_ASSIGN_OR_RETURN(c.to_decode_qdisc, Number(to_decode, 1, "qdisc bytes to decode"));
  KVWIRE_ASSIGN_OR_RETURN(c.to_decode_tx, Number(to_decode, 3, "tx bytes to decode"));
  KVWIRE_ASSIGN_OR_RETURN(c.to_prefill_qdisc, Number(to_prefill, 1, "qdisc bytes to prefill"));
  KVWIRE_ASSIGN_OR_RETURN(c.to_prefill_tx, Number(to_prefill, 3, "tx bytes to prefill"));
  return c;
}

absl::Status Cluster::StartServices(const std::string& synthetic_kv,
                                    const std::vector<std::string>& prefill_args,
                                    const std::vector<std::string>& decode_args) {
  KVWIRE_RETURN_IF_ERROR(StopServices());
  std::vector<std::string> args = {"--model", options_.model, "--bin", options_.bin};
  if (!synthetic_kv.empty()) args.insert(args.end(), {"--synthetic-kv", synthetic_kv});
  for (const std::string& a : prefill_args) args.insert(args.end(), {"--prefill-arg", a});
  for (const std::string& a : decode_args) args.insert(args.end(), {"--decode-arg", a});
  // Long prompts and deep queues: the control plane must not give up before the nodes do.
  args.insert(args.end(), {"--control-arg", "--prefill-timeout-ms=600000"});
  KVWIRE_ASSIGN_OR_RETURN(std::string out, Script("start", std::move(args), absl::Seconds(120)));
  const std::vector<std::string> words = LineAfter(out, "control ");
  if (words.empty()) return absl::InternalError(absl::StrCat("no control address in:\n", out));
  control_ = words[0];
  std::cout << out << std::flush;
  return absl::OkStatus();
}

absl::Status Cluster::StopServices() {
  control_.clear();
  return Script("stop", {}, absl::Seconds(60)).status();
}

Sample SendRequest(kvwire::v1::ControlPlane::Stub& stub, const std::string& model,
                   const std::string& prompt, double budget, int max_tokens,
                   absl::Duration timeout) {
  kvwire::v1::GenerateRequest request;
  request.set_model(model);
  request.set_prompt(prompt);
  request.mutable_sampling()->set_max_tokens(static_cast<uint32_t>(max_tokens));
  request.mutable_budget()->set_kept_fraction(static_cast<float>(budget));
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  Sample sample;
  const auto start = Clock::now();
  auto reader = stub.Generate(&context, request);
  kvwire::v1::GenerateResponse event;
  bool first = true, finished = false;
  while (reader->Read(&event)) {
    if (first) sample.client_ttft_ms = MillisSince(start);
    first = false;
    if (event.has_final_stats()) {
      sample.stats = event.final_stats();
      finished = true;
    }
  }
  const absl::Status status = grpc_util::FromGrpc(reader->Finish());
  sample.total_ms = MillisSince(start);
  sample.ok = status.ok() && finished;
  if (!status.ok()) {
    sample.error = status.ToString();
  } else if (!finished) {
    sample.error = "the stream ended without final stats";
  }
  return sample;
}

}  // namespace kvwire::bench
