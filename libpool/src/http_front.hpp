// The HTTP front of a node (cpp-httplib): health, Prometheus metrics, and
// embeddings in OpenAI's and TEI's shapes.
//
//   GET  /health/live      200 while the process runs
//   GET  /health/ready     200 with >= 1 ready worker and not draining, else 503
//   GET  /health           the same (TEI's name)
//   GET  /metrics          Prometheus text exposition (the gateway's `(metrics)`)
//   POST /v1/embeddings    OpenAI: {"input": str | [str] | [int] | [[int]] (<= 2048),
//                          "model"?, "encoding_format"?, "dimensions"?, "task"?}
//   GET  /v1/models[/{id}] OpenAI's model list / one model
//   POST /embed            TEI: {"inputs", "normalize"?, "truncate"?,
//                          "truncation_direction"?, "prompt_name"?, "model"?}
//   GET  /info             TEI's model info (?model=NAME)
//   POST /tokenize         TEI's tokens of each input
//   POST /embed_all        501: token embeddings are not available
//
// Every field is honoured or refused with 422 naming it; unknown fields are
// refused. The front is a peer like any other: every embedding request becomes
// actor requests to the gateway (same validation, credits and ledger), made
// from the HTTP thread with a bounded timeout; OpenAI inputs beyond the
// model's pool.max-batch-items are cut into several batch requests, sent in
// turn and assembled in order. Errors map to status codes (overloaded 429 with
// Retry-After and retry-after-ms agreeing with the message, too_large 413,
// invalid_input 422, an unknown model 404 model_not_found, a wrong method 405,
// shutting_down and unavailable 503, deadline_exceeded 504, others 500) with
// OpenAI's error object `{"error":{"message","type","param","code"}}`.
//
// Bounds: at most http.max-connections open connections, each with a light
// thread of its own; one past them is answered at once by a responder thread
// (200 for GET /health/live, else 503) and closed. A request must arrive
// whole within http.read-timeout of its first byte (else 408), never reads
// more than http.max-body-bytes + 64 KiB from its socket (a Content-Length
// over the limit gets 413 before the body is read, a chunked body 413 once
// past it), and takes one of http.threads slots before its body is read and
// handled (health and metrics take none). A 408 or 413 closes the connection.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/expected.hpp>
#include <caf/fwd.hpp>
#include <caf/timespan.hpp>

#include "actors.hpp"
#include "pool/config.hpp"
#include "pool/embedder.hpp"

namespace pool::detail {

class metrics_registry;

/// One model as the HTTP front sees it.
struct http_model {
  std::string name;  // what requests call it
  std::shared_ptr<const embedder> model;
  /// pool.max-batch-items of the model: texts per batch request.
  uint32_t max_batch_items = 256;
  /// model.matryoshka: OpenAI `dimensions` may ask for fewer dimensions.
  bool matryoshka = false;
  /// model.truncate.
  bool truncate = true;
};

struct http_front_config {
  http_section http;
  /// Bound on one actor request (pool.request-timeout plus a margin).
  caf::timespan request_timeout = std::chrono::seconds(35);
  /// The node's default model; counts tokens for `usage` and names the model
  /// in responses when a request names none.
  std::shared_ptr<const embedder> model;
  std::string model_name;
  /// Every model the node serves, default first; empty = `model` alone.
  std::vector<http_model> models;
  std::shared_ptr<metrics_registry> metrics;  // not null
};

/// Owns the HTTP server and its threads. Not copyable; `stop` (or the
/// destructor) must run before the actor system is destroyed.
class http_front {
 public:
  /// `root` (the node root) answers `(gateway_atom)` with the current gateway.
  http_front(caf::actor_system& sys, root_interface root, http_front_config cfg);
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
