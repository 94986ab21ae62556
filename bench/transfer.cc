// kvwire-bench transfer: kvwire transport throughput and latency per payload size, measured side
// by side with ucx_perftest (tag_bw, tag_lat) on the same UCX transports in the same run, plus
// setup costs and a KV-shaped layer-streamed request.
//
// Like ucx_perftest, the receiver runs in a second process by default (this program with --serve;
// --in-process keeps both ends here). Each size runs 3 rounds of [kvwire, ucx_perftest] so both
// see the same machine load; reported figures are medians over rounds.
//   gbps    size * iterations / elapsed, `--window` sends in flight (decimal GB/s);
//   p50/p99 time of one confirmed send: StartSend until the receiver's reply that the payload is
//           in its destination, i.e. one round trip. ucx_perftest's tag_lat prints half a round
//           trip, so ratio_lat = p50 / (2 * perftest_lat_us).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "bench/command.h"
#include "bench/stats.h"
#include "kvwire/base/deadline.h"
#include "kvwire/base/ids.h"
#include "kvwire/base/status.h"
#include "kvwire/config.h"
#include "kvwire/transport/transport.h"
#include "kvwire/transport/ucx/ucx_transport.h"
#include "kvwire/transport/wire_header.h"

namespace kvwire::bench {
namespace {

using transport::Connection;
using transport::Destination;
using transport::FrameInfo;
using transport::MemoryKind;
using transport::SendOperation;
using transport::Transport;
using Clock = std::chrono::steady_clock;

constexpr absl::Duration kOpTimeout = absl::Seconds(60);

struct TransferOptions {
  std::string transport = "ucx";
  std::string tls = "tcp";
  std::string sizes;
  int iters = 0;  // 0: chosen per size
  int window = 16;
  bool perftest = true;
  std::string json;
  std::string plot;
  std::string kv_shape;
  int prompt_len = 4096;
  double budget = 0.1;
  int dtype_bytes = 2;
  int kv_reps = 7;
  int busy_poll_us = 200;
  int drive_us = 0;
  bool receiver_process = true;
  bool serve = false;
  uint64_t serve_bytes = 0;
};

struct Row {
  uint64_t size = 0;
  int iters = 0;
  double gbps = 0, p50_us = 0, p99_us = 0;
  double perftest_gbps = NAN, perftest_lat_us = NAN, ratio_bw = NAN, ratio_lat = NAN;
};

double Micros(Clock::duration d) { return std::chrono::duration<double, std::micro>(d).count(); }

std::string UcxTlsFor(const std::string& tls) { return tls == "shm" ? "posix,cma,self" : tls; }

// ---------------------------------------------------------------------------------------------
// kvwire side

class Process {
 public:
  // Starts `argv` with UCX_TLS=`tls`; stdout goes to a pipe when `capture`, else /dev/null.
  Process(const std::vector<std::string>& argv, const std::string& tls, bool capture) {
    int fds[2] = {-1, -1};
    if (capture && pipe(fds) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      setenv("UCX_TLS", tls.c_str(), 1);
      const int out = capture ? fds[1] : open("/dev/null", O_WRONLY);
      dup2(out, STDOUT_FILENO);
      dup2(out, STDERR_FILENO);
      std::vector<char*> args;
      for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      execvp(args[0], args.data());
      _exit(127);
    }
    if (capture) {
      close(fds[1]);
      out_fd_ = fds[0];
    }
  }
  ~Process() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (out_fd_ >= 0) close(out_fd_);
  }
  // All of stdout until the process closes it or `deadline` passes.
  std::string ReadAll(Deadline deadline) {
    std::string text;
    char buf[4096];
    while (out_fd_ >= 0) {
      pollfd p{out_fd_, POLLIN, 0};
      const int ready = poll(&p, 1, deadline.RemainingMillisForPoll());
      if (ready <= 0) break;
      const ssize_t n = read(out_fd_, buf, sizeof(buf));
      if (n <= 0) break;
      text.append(buf, static_cast<size_t>(n));
    }
    return text;
  }
  // The rest of the first stdout line that starts with `prefix` (UCX logs to stdout too).
  std::optional<std::string> ReadTagged(absl::string_view prefix, Deadline deadline) {
    std::string buffered;
    char c;
    while (out_fd_ >= 0) {
      pollfd p{out_fd_, POLLIN, 0};
      if (poll(&p, 1, deadline.RemainingMillisForPoll()) <= 0 || read(out_fd_, &c, 1) != 1) break;
      if (c != '\n') {
        buffered.push_back(c);
        continue;
      }
      if (absl::StartsWith(buffered, prefix)) return buffered.substr(prefix.size());
      buffered.clear();
    }
    return std::nullopt;
  }
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  int out_fd_ = -1;
};

// Page-aligned anonymous memory, backed by transparent huge pages where the kernel allows
// (madvise), as ucx_perftest's buffers are (UCX allocates them with THP first): both sides of
// the comparison then pay the same TLB costs.
class HostBuffer {
 public:
  HostBuffer() = default;
  HostBuffer(const HostBuffer&) = delete;
  HostBuffer& operator=(const HostBuffer&) = delete;
  ~HostBuffer() { Release(); }

  void assign(size_t size, uint8_t fill) {
    Release();
    constexpr size_t kHuge = size_t{2} << 20;
    mapped_ = (std::max<size_t>(size, 1) + kHuge - 1) / kHuge * kHuge;
    void* p = mmap(nullptr, mapped_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
      std::perror("mmap");
      std::abort();  // A benchmark without its buffers cannot do anything useful.
    }
    (void)madvise(p, mapped_, MADV_HUGEPAGE);
    data_ = static_cast<uint8_t*>(p);
    size_ = size;
    std::memset(data_, fill, mapped_);  // Fault every page in before timing.
  }
  uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  absl::Span<uint8_t> span() const { return absl::Span<uint8_t>(data_, size_); }

 private:
  void Release() {
    if (data_ != nullptr) munmap(data_, mapped_);
    data_ = nullptr;
    size_ = mapped_ = 0;
  }
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
  size_t mapped_ = 0;
};

// A sender and a receiver transport joined by one connection; every accepted payload lands in
// one registered buffer (the benchmark measures movement, not content).
class Pair {
 public:
  static absl::StatusOr<std::unique_ptr<Pair>> Make(const TransferOptions& o, uint64_t max_size) {
    auto pair = std::make_unique<Pair>();
    pair->source_.assign(std::max<uint64_t>(max_size, 1), 0x5A);
    if (o.receiver_process) {
      // Like ucx_perftest: the receiver is another process (this program in --serve mode).
      pair->receiver_process_ = std::make_unique<Process>(
          std::vector<std::string>{
              "/proc/self/exe", "transfer", "--serve", "--transport", o.transport, "--tls", o.tls,
              "--busy-poll-us", absl::StrCat(o.busy_poll_us), "--drive-us",
              absl::StrCat(o.drive_us), "--serve-bytes", absl::StrCat(max_size)},
          UcxTlsFor(o.tls), /*capture=*/true);
      auto hex = pair->receiver_process_->ReadTagged("ADDR ", Deadline::In(kOpTimeout));
      if (!hex) return absl::UnavailableError("the receiver process printed no address");
      KVWIRE_ASSIGN_OR_RETURN(pair->receiver_address_, transport::AddressFromHex(*hex));
    } else {
      KVWIRE_ASSIGN_OR_RETURN(pair->receiver_,
                              MakeReceiver(o, max_size, &pair->dest_, &pair->dest_region_));
      pair->receiver_address_ = pair->receiver_->LocalAddress();
    }
    KVWIRE_ASSIGN_OR_RETURN(pair->sender_, NewTransport(o));
    KVWIRE_ASSIGN_OR_RETURN(pair->source_region_,
                            pair->sender_->RegisterMemory(pair->source_.data(),
                                                          pair->source_.size(), MemoryKind::kHost));
    KVWIRE_ASSIGN_OR_RETURN(
        pair->conn_, pair->sender_->Connect(pair->receiver_address_, Deadline::In(kOpTimeout)));
    return pair;
  }

  // A receiving transport whose every accepted payload lands in one registered buffer.
  static absl::StatusOr<std::unique_ptr<Transport>> MakeReceiver(
      const TransferOptions& o, uint64_t max_size, HostBuffer* dest,
      std::unique_ptr<transport::MemoryRegion>* region) {
    KVWIRE_ASSIGN_OR_RETURN(auto receiver, NewTransport(o));
    dest->assign(std::max<uint64_t>(max_size, 1), 0);
    KVWIRE_ASSIGN_OR_RETURN(
        *region, receiver->RegisterMemory(dest->data(), dest->size(), MemoryKind::kHost));
    receiver->SetAcceptor(
        [dest, r = region->get()](const FrameInfo& info,
                                  absl::Span<const uint8_t>) -> absl::StatusOr<Destination> {
          return Destination{dest->span().first(info.payload_bytes), MemoryKind::kHost, r};
        });
    return receiver;
  }

  // Drops the receiver's record of a finished request (kept by the remote receiver otherwise).
  absl::Status Release(RequestId request) {
    if (!receiver_) return absl::OkStatus();
    return receiver_->CancelReceive(request, Deadline::In(kOpTimeout));
  }

  static absl::StatusOr<std::unique_ptr<Transport>> NewTransport(const TransferOptions& o) {
    if (o.transport == "loopback") return transport::MakeLoopbackTransport();
    transport::UcxOptions options;
    options.transports = UcxTlsFor(o.tls);
    options.busy_poll = absl::Microseconds(o.busy_poll_us);
    options.drive_window = absl::Microseconds(o.drive_us);
    return transport::MakeUcxTransport(options);
  }

  // Sends `count` frames of `size` bytes with `window` in flight; returns the elapsed time.
  absl::StatusOr<Clock::duration> Stream(uint64_t size, int count, int window) {
    const RequestId request = NewRequestId();
    std::vector<std::unique_ptr<SendOperation>> in_flight;
    const auto start = Clock::now();
    for (int i = 0; i < count; ++i) {
      if (static_cast<int>(in_flight.size()) >= window) {
        if (absl::Status s = in_flight.front()->Wait(Deadline::In(kOpTimeout)); !s.ok()) return s;
        in_flight.erase(in_flight.begin());
      }
      FrameInfo info{request, 0, static_cast<uint32_t>(i), size, {}};
      auto op = conn_->StartSend(info, {}, Payload(size));
      if (!op.ok()) return op.status();
      in_flight.push_back(std::move(*op));
    }
    for (auto& op : in_flight) {
      if (absl::Status s = op->Wait(Deadline::In(kOpTimeout)); !s.ok()) return s;
    }
    const auto elapsed = Clock::now() - start;
    KVWIRE_RETURN_IF_ERROR(Release(request));
    return elapsed;
  }

  // Confirmed-send times (µs) of `count` sequential frames.
  absl::StatusOr<std::vector<double>> PingTimes(uint64_t size, int count) {
    const RequestId request = NewRequestId();
    std::vector<double> times;
    for (int i = 0; i < count; ++i) {
      FrameInfo info{request, 0, static_cast<uint32_t>(i), size, {}};
      const auto start = Clock::now();
      if (absl::Status s = conn_->Send(info, {}, Payload(size), Deadline::In(kOpTimeout));
          !s.ok()) {
        return s;
      }
      times.push_back(Micros(Clock::now() - start));
    }
    KVWIRE_RETURN_IF_ERROR(Release(request));
    return times;
  }

  absl::Span<const uint8_t> Payload(uint64_t size) const {
    return absl::Span<const uint8_t>(source_.data(), size);
  }
  Connection& conn() { return *conn_; }
  Transport& sender() { return *sender_; }
  const std::string& receiver_address() const { return receiver_address_; }

 private:
  // Declared in acquisition order; destroyed in reverse (connection before its transports, the
  // receiver process last).
  std::unique_ptr<Process> receiver_process_;
  HostBuffer dest_;
  std::unique_ptr<transport::MemoryRegion> dest_region_;
  std::unique_ptr<Transport> receiver_;
  std::string receiver_address_;
  HostBuffer source_;
  std::unique_ptr<Transport> sender_;
  std::unique_ptr<transport::MemoryRegion> source_region_;
  std::unique_ptr<Connection> conn_;
};

int DefaultIters(uint64_t size) {
  return static_cast<int>(
      std::clamp<uint64_t>((uint64_t{512} << 20) / std::max<uint64_t>(size, 1), 20, 2000));
}

// ---------------------------------------------------------------------------------------------
// ucx_perftest side

struct PerftestFigures {
  double p50 = NAN;      // first "Final:" column after the iteration count (µs)
  double bw_mbps = NAN;  // overall bandwidth, MB/s with MB = 2^20 bytes
};

// Whether something listens on TCP `port` (read from /proc/net/tcp{,6}, without connecting:
// ucx_perftest's server takes the first connection as its peer).
bool Listening(int port) {
  const std::string needle = absl::StrFormat(":%04X 00000000", port);
  const std::string needle6 = absl::StrFormat(":%04X 00000000000000000000000000000000", port);
  for (const char* path : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream in(path);
    std::string line;
    while (std::getline(in, line)) {
      if ((line.find(needle) != std::string::npos || line.find(needle6) != std::string::npos) &&
          line.find(" 0A ") != std::string::npos) {
        return true;
      }
    }
  }
  return false;
}

std::optional<PerftestFigures> ParseFinal(const std::string& output) {
  for (absl::string_view line : absl::StrSplit(output, '\n')) {
    if (!absl::StartsWith(line, "Final:")) continue;
    std::vector<absl::string_view> f = absl::StrSplit(line, ' ', absl::SkipWhitespace());
    PerftestFigures fig;
    if (f.size() < 7 || !absl::SimpleAtod(f[2], &fig.p50) ||
        !absl::SimpleAtod(f[6], &fig.bw_mbps)) {
      return std::nullopt;
    }
    return fig;
  }
  return std::nullopt;
}

std::optional<PerftestFigures> RunPerftest(const std::string& test, uint64_t size, int iters,
                                           const std::string& tls) {
  static int next_port = 20000 + getpid() % 20000;
  const int port = next_port++;
  const std::vector<std::string> common = {
      "ucx_perftest",    "-t", test, "-s", absl::StrCat(size), "-n", absl::StrCat(iters), "-p",
      absl::StrCat(port)};
  Process server(common, tls, /*capture=*/false);
  const Deadline ready_by = Deadline::In(absl::Seconds(10));
  while (!Listening(port) && !ready_by.Expired()) {
    if (waitpid(server.pid(), nullptr, WNOHANG) != 0) return std::nullopt;  // It died.
    usleep(2000);  // Polling an external process we cannot get a readiness signal from.
  }
  std::vector<std::string> client_argv = common;
  client_argv.insert(client_argv.begin() + 1, "127.0.0.1");
  Process client(client_argv, tls, /*capture=*/true);
  return ParseFinal(client.ReadAll(Deadline::In(absl::Seconds(120))));
}

constexpr int kRounds = 3;

// One size: kRounds rounds, each a kvwire run followed by the matching ucx_perftest run, so both
// see the same machine load; the row holds medians over rounds (latency: pooled percentiles).
absl::StatusOr<Row> MeasureSize(Pair& pair, uint64_t size, const TransferOptions& o) {
  Row row;
  row.size = size;
  row.iters = o.iters > 0 ? o.iters : DefaultIters(size);
  const int lat_iters = std::min(row.iters, 1000);
  const int warmup = std::max(2, row.iters / 10);
  const bool perftest = o.perftest && o.transport == "ucx";
  const std::string tls = UcxTlsFor(o.tls);
  KVWIRE_RETURN_IF_ERROR(pair.Stream(size, warmup, o.window).status());
  KVWIRE_RETURN_IF_ERROR(pair.PingTimes(size, warmup).status());
  std::vector<double> gbps, pt_gbps, times, pt_lat;
  for (int round = 0; round < kRounds; ++round) {
    KVWIRE_ASSIGN_OR_RETURN(Clock::duration elapsed, pair.Stream(size, row.iters, o.window));
    gbps.push_back(static_cast<double>(size) * row.iters / (Micros(elapsed) * 1e3));
    if (perftest) {
      if (auto bw = RunPerftest("tag_bw", size, row.iters, tls)) {
        pt_gbps.push_back(bw->bw_mbps * 1048576.0 / 1e9);
      }
    }
    KVWIRE_ASSIGN_OR_RETURN(std::vector<double> t, pair.PingTimes(size, lat_iters));
    times.insert(times.end(), t.begin(), t.end());
    if (perftest) {
      if (auto lat = RunPerftest("tag_lat", size, lat_iters, tls)) pt_lat.push_back(lat->p50);
    }
  }
  row.gbps = Percentile(gbps, 0.5);
  row.p50_us = Percentile(times, 0.5);
  row.p99_us = Percentile(times, 0.99);
  row.perftest_gbps = Percentile(pt_gbps, 0.5);
  row.perftest_lat_us = Percentile(pt_lat, 0.5);
  row.ratio_bw = row.gbps / row.perftest_gbps;
  row.ratio_lat = row.p50_us / (2 * row.perftest_lat_us);
  return row;
}

// ---------------------------------------------------------------------------------------------
// Setup cost and the KV-shaped request

struct SetupCost {
  double connect_us = NAN, register_64mib_us = NAN, start_send_us = NAN;
  double idle_send_us = NAN;  // a confirmed 4 KiB send after 5 ms of idleness (both ends asleep)
};

absl::StatusOr<SetupCost> MeasureSetup(Pair& pair, const TransferOptions& o) {
  SetupCost cost;
  std::vector<double> connect, reg, start;
  for (int i = 0; i < 5; ++i) {
    auto t0 = Clock::now();
    KVWIRE_ASSIGN_OR_RETURN(
        auto conn, pair.sender().Connect(pair.receiver_address(), Deadline::In(kOpTimeout)));
    connect.push_back(Micros(Clock::now() - t0));
  }
  std::vector<uint8_t> buffer(64 << 20, 1);
  for (int i = 0; i < 3; ++i) {
    auto t0 = Clock::now();
    KVWIRE_ASSIGN_OR_RETURN(
        auto region, pair.sender().RegisterMemory(buffer.data(), buffer.size(), MemoryKind::kHost));
    reg.push_back(Micros(Clock::now() - t0));
  }
  const RequestId request = NewRequestId();
  for (int i = 0; i < 200; ++i) {
    FrameInfo info{request, 0, static_cast<uint32_t>(i), 4096, {}};
    auto t0 = Clock::now();
    KVWIRE_ASSIGN_OR_RETURN(auto op, pair.conn().StartSend(info, {}, pair.Payload(4096)));
    start.push_back(Micros(Clock::now() - t0));
    KVWIRE_RETURN_IF_ERROR(op->Wait(Deadline::In(kOpTimeout)));
  }
  std::vector<double> idle;
  for (int i = 0; i < 20; ++i) {
    absl::SleepFor(absl::Milliseconds(5));  // Lets both progress threads fall asleep in epoll.
    FrameInfo info{request, 1, static_cast<uint32_t>(i), 4096, {}};
    auto t0 = Clock::now();
    KVWIRE_RETURN_IF_ERROR(
        pair.conn().Send(info, {}, pair.Payload(4096), Deadline::In(kOpTimeout)));
    idle.push_back(Micros(Clock::now() - t0));
  }
  KVWIRE_RETURN_IF_ERROR(pair.Release(request));
  cost.idle_send_us = Percentile(idle, 0.5);
  cost.connect_us = Percentile(connect, 0.5);
  cost.register_64mib_us = Percentile(reg, 0.5);
  cost.start_send_us = Percentile(start, 0.5);
  return cost;
}

struct KvShape {
  int layers = 0, kv_heads = 0, head_dim = 0;
};

struct KvResult {
  uint64_t raw_bytes = 0, wire_bytes = 0, layer_payload = 0;
  int kept_tokens = 0;
  double request_ms = NAN, one_message_ms = NAN;
};

// Frame sizes of one layer-streamed request: a manifest, one frame per layer holding, per KV
// head, `kept` entries of keys and values (dtype_bytes each), int32 positions and fp32 log-votes,
// then a commit. Frame headers are modelled as 64 bytes, the manifest as 256 bytes.
absl::StatusOr<KvResult> MeasureKv(Pair& pair, const KvShape& s, const TransferOptions& o) {
  KvResult r;
  r.kept_tokens = static_cast<int>(std::ceil(o.budget * o.prompt_len));
  const uint64_t raw_layer = uint64_t{2} * s.kv_heads * s.head_dim * o.prompt_len * o.dtype_bytes;
  r.layer_payload = uint64_t{2} * s.kv_heads * s.head_dim * r.kept_tokens * o.dtype_bytes +
                    static_cast<uint64_t>(s.kv_heads) * r.kept_tokens * (4 + 4);
  constexpr uint64_t kFrameHeader = 64, kManifest = 256;
  const uint64_t per_frame = kFrameHeader + transport::kTransportHeaderBytes;
  r.raw_bytes = raw_layer * s.layers;
  r.wire_bytes = kManifest + s.layers * (r.layer_payload + per_frame) + 2 * per_frame;
  const std::vector<uint8_t> header(kFrameHeader, 0);
  std::vector<double> request_ms, single_ms;
  for (int rep = 0; rep < o.kv_reps + 1; ++rep) {
    const RequestId request = NewRequestId();
    std::vector<std::unique_ptr<SendOperation>> ops;
    const auto t0 = Clock::now();
    auto start = [&](uint32_t stream, uint64_t bytes) -> absl::Status {
      FrameInfo info{request, stream, 0, bytes, {}};
      KVWIRE_ASSIGN_OR_RETURN(auto op, pair.conn().StartSend(info, header, pair.Payload(bytes)));
      ops.push_back(std::move(op));
      return absl::OkStatus();
    };
    KVWIRE_RETURN_IF_ERROR(start(0, kManifest));
    for (int l = 0; l < s.layers; ++l) KVWIRE_RETURN_IF_ERROR(start(1 + l, r.layer_payload));
    KVWIRE_RETURN_IF_ERROR(start(1 + s.layers, 0));
    for (auto& op : ops) KVWIRE_RETURN_IF_ERROR(op->Wait(Deadline::In(kOpTimeout)));
    const double ms = Micros(Clock::now() - t0) / 1e3;
    KVWIRE_RETURN_IF_ERROR(pair.Release(request));
    if (rep > 0) request_ms.push_back(ms);  // The first repetition is warm-up.
    // The same bytes as one message, for the streaming overhead.
    const uint64_t total = s.layers * r.layer_payload;
    const auto t1 = Clock::now();
    KVWIRE_RETURN_IF_ERROR(pair.conn().Send(FrameInfo{request + 1, 0, 0, total, {}}, {},
                                            pair.Payload(total), Deadline::In(kOpTimeout)));
    if (rep > 0) single_ms.push_back(Micros(Clock::now() - t1) / 1e3);
    KVWIRE_RETURN_IF_ERROR(pair.Release(request + 1));
  }
  r.request_ms = Percentile(request_ms, 0.5);
  r.one_message_ms = Percentile(single_ms, 0.5);
  return r;
}

// ---------------------------------------------------------------------------------------------
// Output

std::string JsonNumber(double v) { return std::isfinite(v) ? absl::StrFormat("%.6g", v) : "null"; }

void WriteJson(const std::string& path, const TransferOptions& o, const std::vector<Row>& rows,
               const SetupCost& setup, const std::optional<KvResult>& kv) {
  std::ofstream out(path);
  out << "{\n  \"transport\": \"" << o.transport << "\", \"tls\": \"" << o.tls
      << "\", \"ucx_tls\": \"" << UcxTlsFor(o.tls) << "\", \"window\": " << o.window
      << ", \"receiver\": \"" << (o.receiver_process ? "separate process" : "in process") << "\""
      << ",\n  \"latency_note\": \"p50_us/p99_us: confirmed send (one round trip); "
         "perftest_lat_us: ucx_perftest tag_lat p50 (half a round trip); "
         "ratio_lat = p50_us / (2 * perftest_lat_us)\",\n  \"results\": [\n";
  for (size_t i = 0; i < rows.size(); ++i) {
    const Row& r = rows[i];
    out << "    {\"size_bytes\": " << r.size << ", \"iters\": " << r.iters
        << ", \"gbps\": " << JsonNumber(r.gbps) << ", \"p50_us\": " << JsonNumber(r.p50_us)
        << ", \"p99_us\": " << JsonNumber(r.p99_us)
        << ", \"perftest_gbps\": " << JsonNumber(r.perftest_gbps)
        << ", \"perftest_lat_us\": " << JsonNumber(r.perftest_lat_us)
        << ", \"ratio_bw\": " << JsonNumber(r.ratio_bw)
        << ", \"ratio_lat\": " << JsonNumber(r.ratio_lat) << "}"
        << (i + 1 < rows.size() ? ",\n" : "\n");
  }
  out << "  ],\n  \"setup\": {\"connect_us\": " << JsonNumber(setup.connect_us)
      << ", \"register_64mib_us\": " << JsonNumber(setup.register_64mib_us)
      << ", \"start_send_us\": " << JsonNumber(setup.start_send_us)
      << ", \"idle_send_us\": " << JsonNumber(setup.idle_send_us) << "}";
  if (kv) {
    out << ",\n  \"kv\": {\"shape\": \"" << o.kv_shape << "\", \"prompt_len\": " << o.prompt_len
        << ", \"budget\": " << o.budget << ", \"kept_tokens\": " << kv->kept_tokens
        << ", \"raw_bytes\": " << kv->raw_bytes << ", \"wire_bytes\": " << kv->wire_bytes
        << ", \"wire_over_raw\": " << JsonNumber(double(kv->wire_bytes) / kv->raw_bytes)
        << ", \"request_ms\": " << JsonNumber(kv->request_ms)
        << ", \"one_message_ms\": " << JsonNumber(kv->one_message_ms) << "}";
  }
  out << "\n}\n";
}

void PrintRow(const Row& r) {
  std::printf("%10llu %6d %9.3f %9.3f %9.2f %9.2f %10.2f %9.3f %9.3f\n",
              static_cast<unsigned long long>(r.size), r.iters, r.gbps, r.perftest_gbps, r.p50_us,
              r.p99_us, r.perftest_lat_us, r.ratio_bw, r.ratio_lat);
  std::fflush(stdout);
}

int Plot(const std::string& json, const std::string& png) {
  const std::string venv_python = absl::StrCat(KVWIRE_SOURCE_DIR, "/.venv/bin/python");
  const std::string python = access(venv_python.c_str(), X_OK) == 0 ? venv_python : "python3";
  const std::string cmd = absl::StrCat("'", python, "' '", KVWIRE_SOURCE_DIR,
                                       "/bench/plot_transfer.py' '", json, "' '", png, "'");
  return std::system(cmd.c_str());
}

absl::StatusOr<std::vector<uint64_t>> ParseSizes(const std::string& text) {
  std::vector<uint64_t> sizes;
  if (text.empty()) {
    for (uint64_t s = 4096; s <= (uint64_t{64} << 20); s *= 2) sizes.push_back(s);
    return sizes;
  }
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    uint64_t v = 0;
    if (!absl::SimpleAtoi(part, &v)) {
      return absl::InvalidArgumentError(absl::StrCat("--sizes: not a byte count: '", part, "'"));
    }
    sizes.push_back(v);
  }
  return sizes;
}

absl::StatusOr<std::optional<KvShape>> ParseKvShape(const std::string& text) {
  if (text.empty()) return std::optional<KvShape>();
  std::vector<absl::string_view> f = absl::StrSplit(text, ',');
  KvShape s;
  if (f.size() != 3 || !absl::SimpleAtoi(f[0], &s.layers) || !absl::SimpleAtoi(f[1], &s.kv_heads) ||
      !absl::SimpleAtoi(f[2], &s.head_dim) || s.layers <= 0 || s.kv_heads <= 0 || s.head_dim <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--kv-shape wants layers,kv_heads,head_dim, got '", text, "'"));
  }
  return std::optional<KvShape>(s);
}

// Medians of the ratios over the sizes each goal covers.
void PrintSummary(const TransferOptions& o, const std::vector<Row>& rows,
                  const std::optional<KvResult>& kv) {
  std::vector<double> bw_ratios;
  double lat_ratio_4k = NAN;
  for (const Row& r : rows) {
    if (r.size >= (1u << 20) && std::isfinite(r.ratio_bw)) bw_ratios.push_back(r.ratio_bw);
    if (r.size == 4096) lat_ratio_4k = r.ratio_lat;
  }
  std::string kv_text;
  if (kv) {
    kv_text =
        absl::StrFormat("; kv %s request p50 %.2f ms, wire/raw %.4f (budget %.3f)", o.kv_shape,
                        kv->request_ms, double(kv->wire_bytes) / kv->raw_bytes, o.budget);
  }
  std::printf(
      "transfer summary: transport=%s tls=%s bw>=1MiB median %.3fx ucx_perftest tag_bw (min "
      "%.3fx, goal >=0.9x); lat@4KiB %.3fx ucx_perftest round trip (goal <=1.5x)%s\n",
      o.transport.c_str(), o.tls.c_str(), Percentile(bw_ratios, 0.5),
      bw_ratios.empty() ? NAN : *std::min_element(bw_ratios.begin(), bw_ratios.end()), lat_ratio_4k,
      kv_text.c_str());
}

// --serve: the receiving end of a cross-process run. Prints its address, then receives until
// the parent kills it.
int Serve(const TransferOptions& o) {
  HostBuffer dest;
  std::unique_ptr<transport::MemoryRegion> region;
  auto receiver = Pair::MakeReceiver(o, o.serve_bytes, &dest, &region);
  if (!receiver.ok()) {
    std::cout << "ERROR " << receiver.status() << std::endl;
    return 1;
  }
  std::cout << "ADDR " << transport::AddressToHex((*receiver)->LocalAddress()) << std::endl;
  while (true) pause();
}

int RunTransfer(TransferOptions o) {
  if (o.serve) return Serve(o);
  if (o.transport == "loopback") o.receiver_process = false;  // Loopback stays in one process.
  auto sizes = ParseSizes(o.sizes);
  auto kv_shape = ParseKvShape(o.kv_shape);
  if (!sizes.ok() || !kv_shape.ok()) {
    std::cerr << (sizes.ok() ? kv_shape.status() : sizes.status()) << "\n";
    return 2;
  }
  uint64_t max_size = sizes->empty() ? 0 : *std::max_element(sizes->begin(), sizes->end());
  if (*kv_shape) {
    const KvShape& s = **kv_shape;
    const uint64_t kept = static_cast<uint64_t>(std::ceil(o.budget * o.prompt_len));
    max_size = std::max<uint64_t>(
        max_size, s.layers * (2ull * s.kv_heads * s.head_dim * kept * o.dtype_bytes +
                              s.kv_heads * kept * 8ull));
  }
  auto pair = Pair::Make(o, max_size);
  if (!pair.ok()) {
    std::cerr << "transfer: " << pair.status() << "\n";
    return 1;
  }
  std::printf("kvwire transfer: transport=%s tls=%s (UCX_TLS=%s) window=%d receiver=%s\n",
              o.transport.c_str(), o.tls.c_str(), UcxTlsFor(o.tls).c_str(), o.window,
              o.receiver_process ? "separate process" : "in process");
  std::printf("%10s %6s %9s %9s %9s %9s %10s %9s %9s\n", "bytes", "iters", "GB/s", "pt_GB/s",
              "p50_us", "p99_us", "pt_lat_us", "ratio_bw", "ratio_lat");
  std::vector<Row> rows;
  for (uint64_t size : *sizes) {
    auto row = MeasureSize(**pair, size, o);
    if (!row.ok()) {
      std::cerr << "transfer: size " << size << ": " << row.status() << "\n";
      return 1;
    }
    PrintRow(*row);
    rows.push_back(*row);
  }
  auto setup = MeasureSetup(**pair, o);
  if (!setup.ok()) {
    std::cerr << "transfer: setup: " << setup.status() << "\n";
    return 1;
  }
  std::printf(
      "setup: connect p50 %.1f us, register 64 MiB p50 %.1f us, StartSend(4 KiB) p50 %.2f us, "
      "4 KiB send after 5 ms idle p50 %.1f us\n",
      setup->connect_us, setup->register_64mib_us, setup->start_send_us, setup->idle_send_us);
  std::optional<KvResult> kv;
  if (*kv_shape) {
    auto measured = MeasureKv(**pair, **kv_shape, o);
    if (!measured.ok()) {
      std::cerr << "transfer: kv: " << measured.status() << "\n";
      return 1;
    }
    kv = *measured;
    std::printf(
        "kv: %s prompt %d budget %.3f -> %d kept tokens/head; raw %.1f MiB, wire %.2f MiB "
        "(%.4f of raw, budget + %.3f%%); %d-layer request p50 %.3f ms (%.2f GB/s), same bytes as "
        "one message p50 %.3f ms, streaming overhead %.1f%%\n",
        o.kv_shape.c_str(), o.prompt_len, o.budget, kv->kept_tokens, kv->raw_bytes / 1048576.0,
        kv->wire_bytes / 1048576.0, double(kv->wire_bytes) / kv->raw_bytes,
        100.0 * (double(kv->wire_bytes) / kv->raw_bytes - o.budget), (**kv_shape).layers,
        kv->request_ms, kv->wire_bytes / (kv->request_ms * 1e6), kv->one_message_ms,
        100.0 * (kv->request_ms / kv->one_message_ms - 1.0));
  }
  std::string json = o.json;
  if (json.empty() && !o.plot.empty()) json = absl::StrCat(o.plot, ".json");
  if (!json.empty()) WriteJson(json, o, rows, *setup, kv);
  if (!o.plot.empty() && Plot(json, o.plot) != 0) std::cerr << "transfer: plotting failed\n";
  PrintSummary(o, rows, kv);
  return 0;
}

void SetupTransfer(CLI::App& sub, std::function<int()>* run) {
  auto o = std::make_shared<TransferOptions>();
  sub.add_option("--transport", o->transport, "ucx or loopback")
      ->check(CLI::IsMember({"ucx", "loopback"}));
  sub.add_option("--tls", o->tls, "tcp or shm (posix,cma,self)")
      ->check(CLI::IsMember({"tcp", "shm"}));
  sub.add_option("--sizes", o->sizes,
                 "comma-separated payload sizes in bytes (default 4 KiB..64 MiB)");
  sub.add_option("--iters", o->iters, "iterations per size (default: 512 MiB / size, 20..2000)");
  sub.add_option("--window", o->window, "sends in flight for the bandwidth runs");
  sub.add_flag("!--no-perftest", o->perftest, "skip the ucx_perftest runs");
  sub.add_option("--json", o->json, "write results as JSON");
  sub.add_option("--plot", o->plot, "write a PNG plot (bench/plot_transfer.py)");
  sub.add_option("--kv-shape", o->kv_shape, "layers,kv_heads,head_dim for a KV-shaped request");
  sub.add_option("--prompt-len", o->prompt_len, "prompt tokens of the KV-shaped request");
  sub.add_option("--budget", o->budget, "kept fraction of tokens (0..1]")
      ->check(CLI::Range(1e-6, 1.0));
  sub.add_option("--busy-poll-us", o->busy_poll_us,
                 "UCX progress threads busy-poll this long after activity before sleeping");
  sub.add_flag(
      "!--in-process", o->receiver_process,
      "keep the receiver in this process (default: a separate process, like ucx_perftest)");
  sub.add_flag("--serve", o->serve, "internal: run as the receiver process")->group("");
  sub.add_option("--serve-bytes", o->serve_bytes, "internal: receive buffer size")->group("");
  sub.add_option("--drive-us", o->drive_us,
                 "UCX: how long a waiting sender drives the worker itself (0: never)");
  sub.add_option("--dtype-bytes", o->dtype_bytes, "bytes per key/value element");
  *run = [o] { return RunTransfer(*o); };
}

}  // namespace

KVWIRE_BENCH_COMMAND(transfer, "transport sweep beside ucx_perftest, and a KV-shaped request",
                     SetupTransfer);

}  // namespace kvwire::bench
