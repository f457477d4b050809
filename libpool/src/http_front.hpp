// The HTTP front of a node (cpp-httplib): health, Prometheus metrics, and
// embeddings in OpenAI's and TEI's shapes.
//
//   GET  /health/live    200 while the process runs
//   GET  /health/ready   200 with >= 1 ready worker and not draining, else 503
//   GET  /metrics        Prometheus text exposition (the gateway's `(metrics)`)
//   POST /v1/embeddings  OpenAI: {"input": str | [str], "model"?, "encoding_format"?}
//   POST /embed          TEI: {"inputs": str | [str]} -> [[float, ...], ...]
//
// The front is a peer like any other: every request becomes one actor request
// to the gateway (same validation, credits and ledger), made from the HTTP
// thread with a bounded timeout. Errors map to status codes (overloaded 429
// with Retry-After, too_large 413, invalid_input 422, shutting_down and
// unavailable 503, deadline_exceeded 504, others 500) with an OpenAI-style
// JSON body `{"error":{"message","type","code"}}`.
//
// Bounds: http.threads serving threads, at most http.max-connections accepted
// connections (the accept loop waits beyond that), bodies over
// http.max-body-bytes refused with 413 before they are read.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include <caf/actor.hpp>
#include <caf/expected.hpp>
#include <caf/fwd.hpp>
#include <caf/timespan.hpp>

#include "pool/config.hpp"
#include "pool/embedder.hpp"

namespace pool::detail {

class metrics_registry;

struct http_front_config {
  http_section http;
  /// Bound on one actor request (pool.request-timeout plus a margin).
  caf::timespan request_timeout = std::chrono::seconds(35);
  /// The node's default model; counts tokens for `usage` and names the model
  /// in responses when a request names none.
  std::shared_ptr<const embedder> model;
  std::string model_name;
  std::shared_ptr<metrics_registry> metrics;  // not null
};

/// Owns the HTTP server and its threads. Not copyable; `stop` (or the
/// destructor) must run before the actor system is destroyed.
class http_front {
 public:
  /// `supervisor` answers `(gateway_atom)` and `(status_atom)`.
  http_front(caf::actor_system& sys, caf::actor supervisor, http_front_config cfg);
  ~http_front();

  http_front(const http_front&) = delete;
  http_front& operator=(const http_front&) = delete;

  /// Binds http.host:http.port (0 = a free port), logs
  /// `event=http_listening host=H port=N` and serves on threads of its own.
  /// Returns the bound port, or an error naming http.port.
  caf::expected<uint16_t> start();

  /// Stops accepting, finishes the requests being served and joins every
  /// thread. Idempotent.
  void stop();

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace pool::detail
