#include "metrics.hpp"

#include <algorithm>
#include <charconv>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <type_traits>

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include "peer_backlog.hpp"
#include "peer_guard.hpp"
#include "pool/error.hpp"
#include "pool/version.hpp"

namespace pool::detail {

namespace {

/// Durations in microseconds: 0.5 ms .. 60 s.
constexpr std::initializer_list<uint64_t> duration_bounds_us = {
    500,    1000,   2500,    5000,    10000,   25000,    50000,    100000,
    250000, 500000, 1000000, 2500000, 5000000, 10000000, 30000000, 60000000};
constexpr std::initializer_list<uint64_t> text_count_bounds = {
    1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096};
constexpr std::initializer_list<uint64_t> token_count_bounds = {
    8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 65536};
/// Tokens of one input text: 1 .. 8192.
constexpr std::initializer_list<uint64_t> input_token_bounds = {
    1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 8192};
constexpr double micros_per_second = 1e6;

/// The shortest fixed-point text that reads back as exactly `v` ("0.0005").
std::string format_value(double v) {
  char buf[400];  // fixed notation of any double fits
  auto r = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::fixed);
  return std::string(buf, r.ptr);
}

std::string escape_label(const std::string& value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\' || c == '"') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string model_label(const std::string& model) {
  return "model=\"" + escape_label(model) + "\"";
}

/// Writes the HELP and TYPE lines of one family.
void family(std::string& out, const char* name, const char* type, const char* help) {
  out += "# HELP ";
  out += name;
  out += ' ';
  out += help;
  out += "\n# TYPE ";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
}

/// Appends `name{labels} value` (`name value` without labels); integers
/// exactly, doubles in full precision.
template <class T>
void sample(std::string& out, const std::string& name, const std::string& labels,
            T value) {
  out += name;
  if (!labels.empty()) {
    out += '{';
    out += labels;
    out += '}';
  }
  out += ' ';
  if constexpr (std::is_floating_point_v<T>)
    out += format_value(value);
  else
    out += std::to_string(value);
  out += '\n';
}

const char* reply_code_name(size_t index) {
  if (index == 0)
    return "ok";
  if (index <= 7)
    return to_string(static_cast<pool_errc>(index));
  return "other";
}

}  // namespace

// -- histogram ------------------------------------------------------------------

histogram::histogram(std::initializer_list<uint64_t> bounds, double scale)
    : bounds_(bounds),
      scale_(scale),
      buckets_(new std::atomic<uint64_t>[bounds.size() + 1]) {
  for (size_t i = 0; i <= bounds_.size(); ++i)
    buckets_[i].store(0, std::memory_order_relaxed);
}

void histogram::observe(uint64_t value) noexcept {
  size_t i = 0;
  while (i < bounds_.size() && value > bounds_[i])
    ++i;
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(value, std::memory_order_relaxed);
}

uint64_t histogram::count() const noexcept {
  uint64_t total = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i)
    total += buckets_[i].load(std::memory_order_relaxed);
  return total;
}

void histogram::render(std::string& out, const std::string& name,
                       const std::string& labels) const {
  uint64_t cumulative = 0;
  auto bucket_name = name + "_bucket";
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    cumulative += buckets_[i].load(std::memory_order_relaxed);
    auto le = i < bounds_.size() ? format_value(static_cast<double>(bounds_[i]) / scale_)
                                 : std::string{"+Inf"};
    sample(out, bucket_name, labels + ",le=\"" + le + "\"", cumulative);
  }
  sample(out, name + "_sum", labels,
         static_cast<double>(sum_.load(std::memory_order_relaxed)) / scale_);
  sample(out, name + "_count", labels, cumulative);
}

// -- model_metrics --------------------------------------------------------------

const char* to_string(http_endpoint x) {
  switch (x) {
    case http_endpoint::live:
      return "/health/live";
    case http_endpoint::ready:
      return "/health/ready";
    case http_endpoint::embeddings:
      return "/v1/embeddings";
    case http_endpoint::tei_embed:
      return "/embed";
    case http_endpoint::metrics:
      return "/metrics";
    case http_endpoint::models:
      return "/v1/models";
    case http_endpoint::info:
      return "/info";
    case http_endpoint::tokenize:
      return "/tokenize";
    case http_endpoint::embed_all:
      return "/embed_all";
    case http_endpoint::health:
      return "/health";
    case http_endpoint::other:
      break;
  }
  return "other";
}

model_metrics::model_metrics()
    : queue_wait(duration_bounds_us, micros_per_second),
      compute(duration_bounds_us, micros_per_second),
      end_to_end(duration_bounds_us, micros_per_second),
      batch_texts(text_count_bounds, 1.0),
      batch_tokens(token_count_bounds, 1.0),
      input_tokens(input_token_bounds, 1.0) {
  for (auto& r : replies)
    r.store(0, std::memory_order_relaxed);
}

void model_metrics::count_reply(uint8_t code, uint64_t n) noexcept {
  replies[std::min<size_t>(code, replies.size() - 1)].fetch_add(
      n, std::memory_order_relaxed);
}

uint8_t reply_code(const caf::error& err) {
  if (auto code = pool_code(err))
    return static_cast<uint8_t>(*code);
  return 8;
}

uint64_t resident_memory_bytes() {
  auto* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr)
    return 0;
  unsigned long long size = 0;
  unsigned long long resident = 0;
  auto n = std::fscanf(f, "%llu %llu", &size, &resident);
  std::fclose(f);
  if (n != 2)
    return 0;
  auto page = sysconf(_SC_PAGESIZE);
  return page > 0 ? resident * static_cast<uint64_t>(page) : 0;
}

namespace {

/// Fields 14 (utime), 15 (stime), 22 (starttime, ticks after boot) and 23
/// (vsize) of /proc/self/stat; false if unreadable.
bool read_proc_stat(unsigned long long& utime, unsigned long long& stime,
                    unsigned long long& starttime, unsigned long long& vsize) {
  auto* f = std::fopen("/proc/self/stat", "r");
  if (f == nullptr)
    return false;
  char buf[1024];
  auto n = std::fread(buf, 1, sizeof(buf) - 1, f);
  std::fclose(f);
  buf[n] = '\0';
  // The command name (field 2) may hold spaces and parentheses: the fields
  // after it start behind the last ')'.
  auto* rest = std::strrchr(buf, ')');
  if (rest == nullptr)
    return false;
  // ") S 1 2 ...": field 3 is the state letter, fields 4 .. 23 numbers.
  if (rest[1] != ' ' || rest[2] == '\0')
    return false;
  unsigned long long fields[20] = {};
  const char* p = rest + 3;
  for (auto& field : fields) {
    char* end = nullptr;
    field = std::strtoull(p, &end, 10);
    if (end == p)
      return false;
    p = end;
  }
  // fields[k] is field k + 4.
  utime = fields[10];
  stime = fields[11];
  starttime = fields[18];
  vsize = fields[19];
  return true;
}

/// The `btime` line of /proc/stat: boot time in Unix seconds, or 0.
uint64_t boot_time_seconds() {
  auto* f = std::fopen("/proc/stat", "r");
  if (f == nullptr)
    return 0;
  char line[512];
  unsigned long long btime = 0;
  while (std::fgets(line, sizeof(line), f) != nullptr)
    if (std::sscanf(line, "btime %llu", &btime) == 1)
      break;
  std::fclose(f);
  return btime;
}

uint64_t count_open_fds() {
  auto* dir = opendir("/proc/self/fd");
  if (dir == nullptr)
    return 0;
  uint64_t n = 0;
  while (auto* entry = readdir(dir))
    if (entry->d_name[0] != '.')
      ++n;
  closedir(dir);
  return n > 0 ? n - 1 : 0;  // the directory stream's own descriptor
}

}  // namespace

node_gauges read_node_gauges() {
  node_gauges g;
  g.resident_bytes = resident_memory_bytes();
  unsigned long long utime = 0;
  unsigned long long stime = 0;
  unsigned long long starttime = 0;
  unsigned long long vsize = 0;
  auto ticks = sysconf(_SC_CLK_TCK);
  if (read_proc_stat(utime, stime, starttime, vsize) && ticks > 0) {
    g.cpu_seconds = static_cast<double>(utime + stime) / static_cast<double>(ticks);
    g.virtual_bytes = vsize;
    if (auto boot = boot_time_seconds(); boot > 0)
      g.start_time_seconds = static_cast<double>(boot) +
                             static_cast<double>(starttime) / static_cast<double>(ticks);
  }
  g.open_fds = count_open_fds();
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY)
    g.max_fds = lim.rlim_cur;
  return g;
}

// -- registry -------------------------------------------------------------------

std::shared_ptr<model_metrics> metrics_registry::model(const std::string& name) {
  std::lock_guard<std::mutex> guard{mtx_};
  auto& slot = models_[name];
  if (!slot)
    slot = std::make_shared<model_metrics>();
  return slot;
}

std::map<std::string, std::shared_ptr<model_metrics>> metrics_registry::models() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return models_;
}

void metrics_registry::count_http(http_endpoint endpoint, int status) noexcept {
  size_t i = 0;
  while (i + 1 < http_status_codes.size() && http_status_codes[i] != status)
    ++i;
  http_responses_[static_cast<size_t>(endpoint)][i].fetch_add(1,
                                                              std::memory_order_relaxed);
}

uint64_t metrics_registry::http_responses(http_endpoint endpoint,
                                          size_t status_index) const noexcept {
  return http_responses_[static_cast<size_t>(endpoint)][status_index].load(
      std::memory_order_relaxed);
}

// -- exposition -----------------------------------------------------------------

std::string render_prometheus(const metrics_registry& registry,
                              const std::vector<pool_status>& statuses,
                              const node_gauges& node) {
  std::string out;
  out.reserve(16384);
  // Per-model families from the status snapshots.
  using status_counter = std::function<uint64_t(const pool_status&)>;
  auto per_status = [&](const char* name, const char* type, const char* help,
                        const status_counter& value) {
    family(out, name, type, help);
    for (auto& st : statuses)
      sample(out, name, model_label(st.model), value(st));
  };
  family(out, "embedpool_requests_total", "counter",
         "Requests the supervisor answered or refused, by outcome (the ledger).");
  for (auto& st : statuses) {
    auto m = model_label(st.model);
    sample(out, "embedpool_requests_total", m + ",outcome=\"completed\"",
           st.ledger.completed);
    sample(out, "embedpool_requests_total", m + ",outcome=\"failed\"", st.ledger.failed);
    sample(out, "embedpool_requests_total", m + ",outcome=\"expired\"",
           st.ledger.expired);
    sample(out, "embedpool_requests_total", m + ",outcome=\"rejected\"",
           st.ledger.rejected);
  }
  per_status("embedpool_requests_accepted_total", "counter",
             "Requests the supervisor accepted (ledger).",
             [](const pool_status& st) { return st.ledger.accepted; });
  per_status("embedpool_requests_in_flight", "gauge",
             "Accepted requests not answered yet.",
             [](const pool_status& st) { return st.ledger.in_flight; });
  per_status("embedpool_pending_requests", "gauge",
             "Requests parked waiting for worker credit.",
             [](const pool_status& st) { return st.pending; });
  per_status("embedpool_pending_capacity", "gauge",
             "Bound of the pending queue (pool.pending-capacity).",
             [](const pool_status& st) { return st.pending_capacity; });
  per_status("embedpool_draining", "gauge", "1 while the node drains, else 0.",
             [](const pool_status& st) { return uint64_t{st.draining ? 1u : 0u}; });
  per_status("embedpool_worker_restarts_total", "counter", "Worker restarts since start.",
             [](const pool_status& st) { return st.restarts; });
  per_status("embedpool_workers_abandoned_total", "counter",
             "Stuck workers whose threads were abandoned.",
             [](const pool_status& st) { return st.abandoned; });
  per_status("embedpool_workers_spawned_total", "counter",
             "Workers started (first start, restart, scale-up).",
             [](const pool_status& st) { return st.workers_spawned; });
  per_status("embedpool_workers_evicted_total", "counter",
             "Workers removed after idling for pool.idle-cooldown.",
             [](const pool_status& st) { return st.workers_evicted; });
  per_status("embedpool_workers_given_up_total", "counter",
             "Worker slots given up (restart intensity or abandoned threads).",
             [](const pool_status& st) { return st.workers_given_up; });
  per_status("embedpool_workers_min", "gauge", "Lower bound of the worker count.",
             [](const pool_status& st) { return uint64_t{st.min_workers}; });
  per_status("embedpool_workers_max", "gauge", "Upper bound of the worker count.",
             [](const pool_status& st) { return uint64_t{st.max_workers}; });
  family(out, "embedpool_workers", "gauge", "Worker slots by state.");
  for (auto& st : statuses) {
    auto m = model_label(st.model);
    for (const char* state : worker_states) {
      auto n = static_cast<uint64_t>(
          std::count_if(st.workers.begin(), st.workers.end(),
                        [&](const worker_status& w) { return w.state == state; }));
      sample(out, "embedpool_workers", m + ",state=\"" + state + "\"", n);
    }
  }
  family(out, "embedpool_worker_queue_depth", "gauge",
         "Jobs a worker holds, from its last pong.");
  for (auto& st : statuses)
    for (auto& w : st.workers)
      sample(out, "embedpool_worker_queue_depth",
             model_label(st.model) + ",worker=\"" + std::to_string(w.id) + "\"",
             w.queue_depth);
  family(out, "embedpool_worker_credits", "gauge",
         "Credits a worker has left, by lane (embed, batch).");
  for (auto& st : statuses)
    for (auto& w : st.workers) {
      auto labels = model_label(st.model) + ",worker=\"" + std::to_string(w.id) + "\"";
      sample(out, "embedpool_worker_credits", labels + ",lane=\"embed\"",
             uint64_t{w.credits_embed});
      sample(out, "embedpool_worker_credits", labels + ",lane=\"batch\"",
             uint64_t{w.credits_batch});
    }
  // Recorded counters and histograms.
  auto models = registry.models();
  family(out, "embedpool_replies_total", "counter",
         "Replies of the gateway by result: ok or the pool error code.");
  for (auto& [name, m] : models)
    for (size_t i = 0; i < m->replies.size(); ++i)
      sample(out, "embedpool_replies_total",
             model_label(name) + ",code=\"" + reply_code_name(i) + "\"",
             m->replies[i].load(std::memory_order_relaxed));
  struct hist_family {
    const char* name;
    const char* help;
    const histogram model_metrics::*member;
  };
  const hist_family hists[] = {
      {"embedpool_queue_wait_seconds", "Time from acceptance to the first dispatch.",
       &model_metrics::queue_wait},
      {"embedpool_compute_seconds", "Time of one embedder call on a micro-batch.",
       &model_metrics::compute},
      {"embedpool_request_duration_seconds",
       "Time from acceptance to the answer, whatever the outcome.",
       &model_metrics::end_to_end},
      {"embedpool_batch_texts", "Texts per embedder call.", &model_metrics::batch_texts},
      {"embedpool_batch_tokens", "Tokens per embedder call, as the embedder counts.",
       &model_metrics::batch_tokens},
      {"embedpool_input_tokens", "Tokens of each input text, as the embedder counts.",
       &model_metrics::input_tokens},
  };
  for (auto& h : hists) {
    family(out, h.name, "histogram", h.help);
    for (auto& [name, m] : models)
      ((*m).*(h.member)).render(out, h.name, model_label(name));
  }
  // Node-wide series: one sample each, no model label. The memory budget is
  // the node's (every supervisor reports the same one).
  if (!statuses.empty()) {
    const auto& st = statuses.front();
    family(out, "embedpool_memory_budget_bytes", "gauge",
           "pool.memory-budget in bytes; 0 = no budget.");
    sample(out, "embedpool_memory_budget_bytes", "", st.memory_budget_bytes);
    family(out, "embedpool_memory_used_bytes", "gauge",
           "Estimated footprint of the live workers of every model.");
    sample(out, "embedpool_memory_used_bytes", "", st.memory_used_bytes);
    family(out, "embedpool_memory_pressure", "gauge",
           "Estimated worker memory / budget; 0 without a budget.");
    sample(out, "embedpool_memory_pressure", "", st.memory_pressure);
  }
  family(out, "embedpool_http_responses_total", "counter",
         "HTTP responses by endpoint and status code.");
  for (size_t e = 0; e < http_endpoint_count; ++e)
    for (size_t s = 0; s < http_status_codes.size(); ++s) {
      auto endpoint = static_cast<http_endpoint>(e);
      auto n = registry.http_responses(endpoint, s);
      if (n == 0)
        continue;
      auto code = http_status_codes[s] == 0 ? std::string{"other"}
                                            : std::to_string(http_status_codes[s]);
      sample(
          out, "embedpool_http_responses_total",
          std::string{"endpoint=\""} + to_string(endpoint) + "\",status=\"" + code + "\"",
          n);
    }
  family(out, "embedpool_peer_messages_dropped_total", "counter",
         "Messages from peers dropped before any work: refused by the trust "
         "boundary (foreign), shed at a full gateway inbox (inbox_full), or "
         "requests of a peer over node.max-unread-bytes-per-peer (unread_replies).");
  sample(out, "embedpool_peer_messages_dropped_total", "reason=\"foreign\"",
         foreign_messages::instance().total());
  sample(out, "embedpool_peer_messages_dropped_total", "reason=\"inbox_full\"",
         inbox_sheds().total());
  sample(out, "embedpool_peer_messages_dropped_total", "reason=\"unread_replies\"",
         unread_refusals());
  family(out, "embedpool_peer_connections_closed_total", "counter",
         "Peer connections the node closed: unread replies past a quarter more "
         "than node.max-unread-bytes-per-peer, or too many dropped messages.");
  sample(out, "embedpool_peer_connections_closed_total", "reason=\"unread_replies\"",
         unread_connections_closed());
  sample(out, "embedpool_peer_connections_closed_total", "reason=\"dropped_messages\"",
         dropped_connections_closed());
  family(out, "embedpool_resident_memory_bytes", "gauge",
         "Resident set size of the node process (as process_resident_memory_bytes).");
  sample(out, "embedpool_resident_memory_bytes", "", node.resident_bytes);
  family(out, "embedpool_build_info", "gauge",
         "Always 1; the labels name the version and git revision of the node.");
  sample(out, "embedpool_build_info",
         "version=\"" + escape_label(project_version()) + "\",revision=\"" +
             escape_label(git_revision()) + "\"",
         uint64_t{1});
  // The process collector's standard names.
  family(out, "process_cpu_seconds_total", "counter",
         "Total user and system CPU time spent in seconds.");
  sample(out, "process_cpu_seconds_total", "", node.cpu_seconds);
  family(out, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
  sample(out, "process_resident_memory_bytes", "", node.resident_bytes);
  family(out, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
  sample(out, "process_virtual_memory_bytes", "", node.virtual_bytes);
  family(out, "process_open_fds", "gauge", "Number of open file descriptors.");
  sample(out, "process_open_fds", "", node.open_fds);
  family(out, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
  sample(out, "process_max_fds", "", node.max_fds);
  family(out, "process_start_time_seconds", "gauge",
         "Start time of the process since unix epoch in seconds.");
  sample(out, "process_start_time_seconds", "", node.start_time_seconds);
  return out;
}

}  // namespace pool::detail
