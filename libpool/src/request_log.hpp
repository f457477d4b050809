// Who sent a request, and the log lines about one request.
//
// Every request gets an id: the peer's own (the trailing `request_id` of an
// embed or batch message, HTTP's X-Request-Id) or one the gateway makes. Every
// log line about a request (rejected, expired, failed, retried) names it, the
// model and the peer: `request_id=… model=… peer=… peer_address=…`, where
// `peer` is the sending node's id ("http" for an HTTP client, "local" for an
// actor of the node itself) and `peer_address` its "ip:port".
//
// So that a flood of bad requests cannot flood the log, each component lets
// through at most `request_lines_per_second` such lines a second; the next
// line let through says how many were held back (`suppressed=N`). Counts of
// every refusal are in the metrics regardless.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>

#include <caf/error.hpp>

#include "defaults.hpp"
#include "logging.hpp"
#include "request_origin.hpp"

namespace pool::detail {

/// Adds `request_id`, `model`, `peer` and `peer_address` to `ev`. A BASP
/// peer's address is looked up from its live connection ("unknown" once the
/// connection is gone).
log_event& add_request(log_event& ev, const request_origin& origin,
                       const std::string& model);

/// Adds `code` (the pool error's name, or CAF's rendering of another) and
/// `reason` (its message) of the answer a request got.
log_event& add_answer_error(log_event& ev, const caf::error& err);

/// Lets through at most `request_lines_per_second` lines a second.
/// Thread-safe.
class request_log_limiter {
 public:
  /// True if a line may be written now; `suppressed` gets how many lines
  /// were held back since the last one let through.
  bool admit(std::chrono::steady_clock::time_point now, uint64_t& suppressed);

 private:
  std::mutex mtx_;
  std::chrono::steady_clock::time_point window_start_;
  uint32_t in_window_ = 0;
  uint64_t held_back_ = 0;
};

/// Writes the line `event` about a request when `limiter` lets it through:
/// the request's fields (add_request), then `add_fields(log_event&)`, then
/// `suppressed=N` when lines were held back before it. Nothing is formatted
/// for a line held back.
template <class AddFields>
void log_request(request_log_limiter& limiter, spdlog::logger& log,
                 spdlog::level::level_enum level, std::string_view event,
                 const request_origin& origin, const std::string& model,
                 AddFields&& add_fields) {
  uint64_t suppressed = 0;
  if (!log.should_log(level) ||
      !limiter.admit(std::chrono::steady_clock::now(), suppressed))
    return;
  log_event ev{event};
  add_request(ev, origin, model);
  add_fields(ev);
  if (suppressed > 0)
    ev.add("suppressed", suppressed);
  ev.write(log, level);
}

}  // namespace pool::detail
