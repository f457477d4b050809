// Metrics of a node: counters and histograms recorded where the time is spent,
// plus gauges taken from `pool_status` snapshots at scrape time, rendered as
// Prometheus text exposition (format 0.0.4, valid for `promtool check metrics`).
//
// Per-model series carry a `model` label; node-wide series (the memory budget,
// HTTP responses, the process, the build) appear once, without it, so that
// `sum()` over a family never counts one value twice. Label sets are bounded:
// one `model_metrics` per configured model, fixed outcome / code / endpoint
// sets, and per-worker gauges only for the supervisor's slots (at most 4096).
//
// Thread-safety: recording (histogram::observe, the counters) is lock-free
// (relaxed atomic adds, no allocation) and may run on any thread. The registry
// takes a mutex only to add a model or to list them at scrape time.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <caf/error.hpp>

#include "pool/protocol.hpp"

namespace pool::detail {

/// A histogram with fixed, increasing bucket bounds. Values are recorded as
/// integers in a base unit (microseconds for durations, items for sizes) and
/// rendered divided by `scale` (1e6 renders microseconds as seconds).
class histogram {
 public:
  histogram(std::initializer_list<uint64_t> bounds, double scale);

  histogram(const histogram&) = delete;
  histogram& operator=(const histogram&) = delete;

  /// Records one value: one relaxed atomic add to its bucket and one to the sum.
  void observe(uint64_t value) noexcept;

  /// Observations so far (the sum of all buckets).
  uint64_t count() const noexcept;

  /// Appends `<name>_bucket{...,le="..."}`, `<name>_sum` and `<name>_count`
  /// lines; `labels` is the label text without braces (e.g. `model="m"`).
  void render(std::string& out, const std::string& name, const std::string& labels) const;

 private:
  std::vector<uint64_t> bounds_;
  double scale_;
  /// One per bound plus +Inf; not cumulative (summed at render time).
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;
  std::atomic<uint64_t> sum_{0};
};

/// HTTP endpoints counted by `embedpool_http_responses_total`.
enum class http_endpoint : uint8_t {
  live,
  ready,
  embeddings,
  tei_embed,
  metrics,
  models,     // GET /v1/models and /v1/models/{id}
  info,       // GET /info
  tokenize,   // POST /tokenize
  embed_all,  // POST /embed_all
  health,     // GET /health
  other,
};
constexpr size_t http_endpoint_count = 11;
const char* to_string(http_endpoint x);

/// Status codes the HTTP front answers with, in counter order.
constexpr std::array<int, 13> http_status_codes = {200, 400, 404, 405, 408, 413, 422,
                                                   429, 500, 501, 503, 504, 0};

/// Everything recorded for one model. Owned jointly (shared_ptr) by the
/// registry, the model's supervisor, gateway and workers.
struct model_metrics {
  model_metrics();

  /// Accepted -> first dispatch to a worker (supervisor).
  histogram queue_wait;
  /// One embedder call on a micro-batch, drill delays included (worker).
  histogram compute;
  /// Accepted -> answered, whatever the outcome (supervisor). Its count equals
  /// the ledger's completed + failed + expired.
  histogram end_to_end;
  /// Texts per embedder call (worker).
  histogram batch_texts;
  /// Tokens per embedder call, as the embedder counts them (worker).
  histogram batch_tokens;
  /// Tokens of each input text, as the embedder counts them (worker).
  histogram input_tokens;

  /// Replies the gateway sent: index 0 = success, 1..7 = `pool_errc` value,
  /// 8 = an error of another category.
  std::array<std::atomic<uint64_t>, 9> replies{};

  /// Counts `n` gateway replies: `code` 0 for success, else the pool_errc
  /// value, anything above 7 for errors of other categories. An answer to a
  /// list of embeds counts once per text.
  void count_reply(uint8_t code, uint64_t n = 1) noexcept;
};

/// The reply-counter index of an error: its pool_errc value, or 8 for errors
/// of other categories.
uint8_t reply_code(const caf::error& err);

/// Process-wide values rendered once per scrape, without a `model` label.
/// Every field is 0 where /proc cannot be read.
struct node_gauges {
  uint64_t resident_bytes = 0;    // from /proc/self/statm
  uint64_t virtual_bytes = 0;     // from /proc/self/stat (vsize)
  double cpu_seconds = 0;         // user + system time, /proc/self/stat
  double start_time_seconds = 0;  // Unix time the process started
  uint64_t open_fds = 0;          // entries of /proc/self/fd
  uint64_t max_fds = 0;           // soft RLIMIT_NOFILE
};

/// Reads the resident set size of this process (0 if unavailable).
uint64_t resident_memory_bytes();

/// Reads every field of `node_gauges` for this process.
node_gauges read_node_gauges();

/// The models of a node and their metrics.
class metrics_registry {
 public:
  /// The metrics of `model`, created on first use. Thread-safe.
  std::shared_ptr<model_metrics> model(const std::string& name);

  /// All models with their metrics, by name. Thread-safe.
  std::map<std::string, std::shared_ptr<model_metrics>> models() const;

  /// Counts an HTTP response (node-wide: the HTTP front serves every model).
  /// Lock-free.
  void count_http(http_endpoint endpoint, int status) noexcept;

  /// HTTP responses so far for `endpoint` and the status at `status_index` in
  /// http_status_codes (the last slot counts any other status).
  uint64_t http_responses(http_endpoint endpoint, size_t status_index) const noexcept;

 private:
  mutable std::mutex mtx_;
  std::map<std::string, std::shared_ptr<model_metrics>> models_;
  std::array<std::array<std::atomic<uint64_t>, http_status_codes.size()>,
             http_endpoint_count>
      http_responses_{};
};

/// Renders the whole exposition: gauges and ledger counters from `statuses`
/// (one per model, default model first), recorded counters and histograms from
/// `registry`, then the node-wide series (the memory budget from the first
/// status, HTTP responses, `node`, the build) without a `model` label. Every
/// metric family appears once with its HELP and TYPE lines.
std::string render_prometheus(const metrics_registry& registry,
                              const std::vector<pool_status>& statuses,
                              const node_gauges& node);

}  // namespace pool::detail
