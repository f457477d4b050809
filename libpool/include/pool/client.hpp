// A C++ peer of a node: connect, then make typed requests. Every call returns
// a result or an error (`pool` category for the node's answers; CAF's
// `system` category for connection problems), never hangs past its timeout.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <caf/expected.hpp>
#include <caf/message.hpp>
#include <caf/timespan.hpp>

#include "pool/protocol.hpp"

namespace pool {

struct client_options {
  std::string host = "127.0.0.1";
  uint16_t port = 4242;
  /// Per-call timeout; a call without an answer by then fails with
  /// `deadline_exceeded`.
  caf::timespan timeout = std::chrono::seconds(60);
  /// Extra `--section.key=value` options for the client's CAF actor system.
  std::vector<std::string> caf_args;
};

/// Thread-safety: calls may come from several threads; they are serialised.
/// Owns its own CAF actor system; destroy it to disconnect.
class client {
 public:
  /// Connects to the gateway at opts.host:opts.port.
  static caf::expected<std::unique_ptr<client>> connect(const client_options& opts);

  ~client();
  client(const client&) = delete;
  client& operator=(const client&) = delete;

  /// One text -> its embedding.
  caf::expected<std::vector<float>> embed(const std::string& text,
                                          const std::string& task = "");

  /// Many texts in ONE batch message -> a row-major matrix, row i for texts[i].
  caf::expected<matrix> embed_batch(const std::vector<std::string>& texts,
                                    const std::string& task = "");

  /// The node's pool status.
  caf::expected<pool_status> status();

 private:
  struct impl;
  explicit client(std::unique_ptr<impl> ptr);
  std::unique_ptr<impl> impl_;
};

}  // namespace pool
