#include "kvwire/control/metrics.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kvwire/base/log.h"
#include "kvwire/base/status.h"

namespace kvwire::control {
namespace {

constexpr absl::Duration kConnectionDeadline = absl::Seconds(2);

bool ValidName(absl::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
                    (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

std::string FormatValue(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (std::isnan(v)) return "NaN";
  return absl::StrFormat("%.17g", v);
}

std::string EscapeLabel(absl::string_view value) {
  std::string out;
  for (char c : value) {
    if (c == '\\' || c == '"') out.push_back('\\');
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out.push_back(c);
  }
  return out;
}

// `{a="x",le="1"}` or empty when there are no labels.
std::string LabelText(const MetricLabels& labels, absl::string_view le = {}) {
  std::string out;
  for (const auto& [k, v] : labels) {
    absl::StrAppend(&out, out.empty() ? "" : ",", k, "=\"", EscapeLabel(v), "\"");
  }
  if (!le.empty()) absl::StrAppend(&out, out.empty() ? "" : ",", "le=\"", le, "\"");
  return out.empty() ? out : absl::StrCat("{", out, "}");
}

absl::string_view KindName(int kind) {
  static constexpr absl::string_view kNames[] = {"counter", "gauge", "histogram"};
  return kNames[kind];
}

// Waits for `events` on `fd` until `deadline`. OK when ready.
absl::Status PollFor(int fd, short events, Deadline deadline) {
  pollfd p{fd, events, 0};
  while (true) {
    const int n = ::poll(&p, 1, deadline.RemainingMillisForPoll());
    if (n > 0) return absl::OkStatus();
    if (n == 0) return absl::DeadlineExceededError("socket wait timed out");
    if (errno != EINTR) return absl::UnavailableError(absl::StrCat("poll: ", strerror(errno)));
  }
}

absl::Status WriteAll(int fd, absl::string_view data, Deadline deadline) {
  while (!data.empty()) {
    if (auto s = PollFor(fd, POLLOUT, deadline); !s.ok()) return s;
    const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0) return absl::UnavailableError(absl::StrCat("send: ", strerror(errno)));
    data.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

// Reads until `stop` appears (or EOF when stop is empty), at most `limit` bytes.
absl::StatusOr<std::string> ReadUntil(int fd, absl::string_view stop, size_t limit,
                                      Deadline deadline) {
  std::string data;
  char buf[4096];
  while (data.size() < limit &&
         (stop.empty() || data.find(stop.data(), 0, stop.size()) == std::string::npos)) {
    if (auto s = PollFor(fd, POLLIN, deadline); !s.ok()) return s;
    const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n < 0) return absl::UnavailableError(absl::StrCat("recv: ", strerror(errno)));
    if (n == 0) break;
    data.append(buf, static_cast<size_t>(n));
  }
  return data;
}

void SetNonBlocking(int fd) { ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK); }

absl::StatusOr<addrinfo*> Resolve(const std::string& host, int port, bool passive) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = passive ? AI_PASSIVE : 0;
  addrinfo* result = nullptr;
  const std::string port_text = std::to_string(port);
  const int rc =
      ::getaddrinfo(host.empty() ? nullptr : host.c_str(), port_text.c_str(), &hints, &result);
  if (rc != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot resolve '", host, "': ", gai_strerror(rc)));
  }
  return result;
}

}  // namespace

Histogram::Histogram(std::vector<double> upper_bounds)
    : upper_bounds_(std::move(upper_bounds)), counts_(upper_bounds_.size() + 1, 0) {}

void Histogram::Observe(double value) {
  const size_t bucket = static_cast<size_t>(
      std::lower_bound(upper_bounds_.begin(), upper_bounds_.end(), value) - upper_bounds_.begin());
  absl::MutexLock lock(&mu_);
  ++counts_[bucket];
  sum_ += value;
}

Histogram::Snapshot Histogram::Read() const {
  Snapshot snap;
  snap.upper_bounds = upper_bounds_;
  absl::MutexLock lock(&mu_);
  uint64_t running = 0;
  for (uint64_t c : counts_) {
    running += c;
    snap.cumulative_counts.push_back(running);
  }
  snap.sum = sum_;
  snap.count = running;
  return snap;
}

std::vector<double> ExponentialBuckets(double start, double factor, int count) {
  std::vector<double> bounds;
  double bound = start;
  for (int i = 0; i < count; ++i, bound *= factor) bounds.push_back(bound);
  return bounds;
}

absl::StatusOr<MetricsRegistry::Entry*> MetricsRegistry::Add(absl::string_view name,
                                                             absl::string_view help, Kind kind,
                                                             MetricLabels labels) {
  if (!ValidName(name))
    return absl::InvalidArgumentError(absl::StrCat("bad metric name '", name, "'"));
  for (const auto& label : labels) {
    if (!ValidName(label.first) || label.first == "le") {
      return absl::InvalidArgumentError(absl::StrCat("bad label name '", label.first, "'"));
    }
  }
  absl::MutexLock lock(&mu_);
  for (const auto& e : entries_) {
    if (e->name == name && e->kind != kind) {
      return absl::InvalidArgumentError(
          absl::StrCat("metric '", name, "' already exists as another kind"));
    }
    if (e->name == name && e->labels == labels) {
      return absl::InvalidArgumentError(absl::StrCat("metric '", name, "' already registered"));
    }
  }
  auto entry = std::make_unique<Entry>();
  entry->name = std::string(name);
  entry->help = std::string(help);
  entry->kind = kind;
  entry->labels = std::move(labels);
  entries_.push_back(std::move(entry));
  return entries_.back().get();
}

absl::StatusOr<Counter*> MetricsRegistry::AddCounter(absl::string_view name, absl::string_view help,
                                                     MetricLabels labels) {
  auto entry = Add(name, help, Kind::kCounter, std::move(labels));
  if (!entry.ok()) return entry.status();
  (*entry)->counter = std::make_unique<Counter>();
  return (*entry)->counter.get();
}

absl::StatusOr<Gauge*> MetricsRegistry::AddGauge(absl::string_view name, absl::string_view help,
                                                 MetricLabels labels) {
  auto entry = Add(name, help, Kind::kGauge, std::move(labels));
  if (!entry.ok()) return entry.status();
  (*entry)->gauge = std::make_unique<Gauge>();
  return (*entry)->gauge.get();
}

absl::StatusOr<Histogram*> MetricsRegistry::AddHistogram(absl::string_view name,
                                                         absl::string_view help,
                                                         std::vector<double> upper_bounds,
                                                         MetricLabels labels) {
  if (!std::is_sorted(upper_bounds.begin(), upper_bounds.end())) {
    return absl::InvalidArgumentError(absl::StrCat("histogram '", name, "' bounds not ascending"));
  }
  auto entry = Add(name, help, Kind::kHistogram, std::move(labels));
  if (!entry.ok()) return entry.status();
  (*entry)->histogram = std::make_unique<Histogram>(std::move(upper_bounds));
  return (*entry)->histogram.get();
}

namespace {
template <typename T>
T* LogIfFailed(absl::StatusOr<T*> metric, absl::string_view name) {
  if (metric.ok()) return *metric;
  KVWIRE_LOG(WARNING) << "metric " << name << " is not exported: " << metric.status();
  return nullptr;
}
}  // namespace

Counter* MetricsRegistry::CounterOrDetached(absl::string_view name, absl::string_view help) {
  if (Counter* c = LogIfFailed(AddCounter(name, help), name)) return c;
  auto entry = std::make_unique<Entry>();
  entry->counter = std::make_unique<Counter>();
  absl::MutexLock lock(&mu_);
  detached_.push_back(std::move(entry));
  return detached_.back()->counter.get();
}

Gauge* MetricsRegistry::GaugeOrDetached(absl::string_view name, absl::string_view help) {
  if (Gauge* g = LogIfFailed(AddGauge(name, help), name)) return g;
  auto entry = std::make_unique<Entry>();
  entry->gauge = std::make_unique<Gauge>();
  absl::MutexLock lock(&mu_);
  detached_.push_back(std::move(entry));
  return detached_.back()->gauge.get();
}

Histogram* MetricsRegistry::HistogramOrDetached(absl::string_view name, absl::string_view help,
                                                std::vector<double> upper_bounds) {
  if (Histogram* h = LogIfFailed(AddHistogram(name, help, upper_bounds), name)) return h;
  auto entry = std::make_unique<Entry>();
  entry->histogram = std::make_unique<Histogram>(std::move(upper_bounds));
  absl::MutexLock lock(&mu_);
  detached_.push_back(std::move(entry));
  return detached_.back()->histogram.get();
}

void MetricsRegistry::RenderEntry(const Entry& e, std::string* out) {
  if (e.kind == Kind::kCounter) {
    absl::StrAppend(out, e.name, LabelText(e.labels), " ", FormatValue(e.counter->value()), "\n");
    return;
  }
  if (e.kind == Kind::kGauge) {
    absl::StrAppend(out, e.name, LabelText(e.labels), " ", FormatValue(e.gauge->value()), "\n");
    return;
  }
  const Histogram::Snapshot snap = e.histogram->Read();
  for (size_t i = 0; i < snap.cumulative_counts.size(); ++i) {
    const double bound = i < snap.upper_bounds.size() ? snap.upper_bounds[i] : INFINITY;
    absl::StrAppend(out, e.name, "_bucket", LabelText(e.labels, FormatValue(bound)), " ",
                    snap.cumulative_counts[i], "\n");
  }
  absl::StrAppend(out, e.name, "_sum", LabelText(e.labels), " ", FormatValue(snap.sum), "\n");
  absl::StrAppend(out, e.name, "_count", LabelText(e.labels), " ", snap.count, "\n");
}

std::string MetricsRegistry::RenderText() const {
  absl::MutexLock lock(&mu_);
  std::vector<const Entry*> sorted;
  for (const auto& e : entries_) sorted.push_back(e.get());
  // Families must be contiguous; a stable sort by name keeps registration order within one.
  std::stable_sort(sorted.begin(), sorted.end(),
                   [](const Entry* a, const Entry* b) { return a->name < b->name; });
  std::string out;
  for (size_t i = 0; i < sorted.size(); ++i) {
    const Entry& e = *sorted[i];
    if (i == 0 || sorted[i - 1]->name != e.name) {
      absl::StrAppend(&out, "# HELP ", e.name, " ", e.help, "\n", "# TYPE ", e.name, " ",
                      KindName(static_cast<int>(e.kind)), "\n");
    }
    RenderEntry(e, &out);
  }
  return out;
}

absl::StatusOr<std::pair<std::string, int>> SplitHostPort(absl::string_view address) {
  const size_t colon = address.rfind(':');
  int port = -1;
  if (colon == absl::string_view::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port) ||
      port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("address '", address, "' is not host:port"));
  }
  std::string host(address.substr(0, colon));
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  return std::make_pair(host, port);
}

absl::StatusOr<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::Start(
    absl::string_view address, const MetricsRegistry* registry) {
  auto host_port = SplitHostPort(address);
  if (!host_port.ok()) return host_port.status();
  auto resolved = Resolve(host_port->first, host_port->second, /*passive=*/true);
  if (!resolved.ok()) return resolved.status();
  addrinfo* ai = *resolved;
  const int fd = ::socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  const bool bound =
      fd >= 0 && ::bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && ::listen(fd, 16) == 0;
  ::freeaddrinfo(ai);
  if (!bound) {
    const std::string why = strerror(errno);
    if (fd >= 0) ::close(fd);
    return absl::UnavailableError(absl::StrCat("metrics: cannot listen on '", address, "': ", why));
  }
  sockaddr_storage local{};
  socklen_t len = sizeof(local);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len);
  const int port =
      ntohs(local.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&local)->sin6_port
                                        : reinterpret_cast<sockaddr_in*>(&local)->sin_port);
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
    ::close(fd);
    return absl::UnavailableError(absl::StrCat("metrics: pipe: ", strerror(errno)));
  }
  SetNonBlocking(fd);
  return std::unique_ptr<MetricsHttpServer>(
      new MetricsHttpServer(fd, pipe_fds[0], pipe_fds[1], port, registry));
}

MetricsHttpServer::MetricsHttpServer(int listen_fd, int wake_fd_read, int wake_fd_write, int port,
                                     const MetricsRegistry* registry)
    : listen_fd_(listen_fd),
      wake_read_(wake_fd_read),
      wake_write_(wake_fd_write),
      port_(port),
      registry_(registry),
      thread_([this] { Serve(); }) {}

MetricsHttpServer::~MetricsHttpServer() {
  const char byte = 1;
  if (::write(wake_write_, &byte, 1) != 1) KVWIRE_LOG(ERROR) << "metrics: cannot wake server";
  thread_.join();
  ::close(listen_fd_);
  ::close(wake_read_);
  ::close(wake_write_);
}

void MetricsHttpServer::Serve() {
  while (true) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_read_, POLLIN, 0}};
    // Not a wait on a result: the self-pipe ends this loop, so no timeout is needed here.
    if (::poll(fds, 2, -1) < 0 && errno != EINTR) return;
    if (fds[1].revents != 0) return;
    if (fds[0].revents == 0) continue;
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) continue;
    ServeOne(fd);
    ::close(fd);
  }
}

void MetricsHttpServer::ServeOne(int fd) {
  const Deadline deadline = Deadline::In(kConnectionDeadline);
  auto request = ReadUntil(fd, "\r\n\r\n", 16 * 1024, deadline);
  if (!request.ok()) return;
  std::string status = "200 OK";
  std::string body;
  if (request->rfind("GET ", 0) != 0) {
    status = "405 Method Not Allowed";
  } else if (request->rfind("GET /metrics ", 0) != 0 && request->rfind("GET /metrics?", 0) != 0) {
    status = "404 Not Found";
  } else {
    body = registry_->RenderText();
  }
  const std::string response = absl::StrCat(
      "HTTP/1.0 ", status, "\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n",
      "Content-Length: ", body.size(), "\r\nConnection: close\r\n\r\n", body);
  if (auto s = WriteAll(fd, response, deadline); !s.ok()) {
    KVWIRE_LOG(DEBUG) << "metrics: reply failed: " << s;
  }
}

absl::StatusOr<std::string> HttpGet(absl::string_view host, int port, absl::string_view path,
                                    Deadline deadline) {
  auto resolved = Resolve(std::string(host), port, /*passive=*/false);
  if (!resolved.ok()) return resolved.status();
  addrinfo* ai = *resolved;
  const int fd = ::socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  int rc = fd < 0 ? -1 : ::connect(fd, ai->ai_addr, ai->ai_addrlen);
  ::freeaddrinfo(ai);
  if (fd < 0) return absl::UnavailableError(absl::StrCat("socket: ", strerror(errno)));
  auto finish = [&]() -> absl::StatusOr<std::string> {
    if (rc != 0 && errno != EINPROGRESS) {
      return absl::UnavailableError(absl::StrCat("connect: ", strerror(errno)));
    }
    KVWIRE_RETURN_IF_ERROR(PollFor(fd, POLLOUT, deadline));
    int err = 0;
    socklen_t len = sizeof(err);
    ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) return absl::UnavailableError(absl::StrCat("connect: ", strerror(err)));
    KVWIRE_RETURN_IF_ERROR(WriteAll(
        fd, absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: ", host, "\r\n\r\n"), deadline));
    KVWIRE_ASSIGN_OR_RETURN(std::string reply, ReadUntil(fd, "", 64 << 20, deadline));
    const size_t split = reply.find("\r\n\r\n");
    if (split == std::string::npos) return absl::DataLossError("HTTP reply without headers");
    if (reply.rfind("HTTP/1.0 200", 0) != 0 && reply.rfind("HTTP/1.1 200", 0) != 0) {
      return absl::DataLossError(absl::StrCat("HTTP status: ", reply.substr(0, reply.find('\r'))));
    }
    return reply.substr(split + 4);
  };
  auto result = finish();
  ::close(fd);
  return result;
}

}  // namespace kvwire::control
