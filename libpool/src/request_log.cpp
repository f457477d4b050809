#include "request_log.hpp"

#include <atomic>
#include <cctype>
#include <cstdio>
#include <random>

#include "peer_backlog.hpp"
#include "pool/error.hpp"

namespace pool::detail {

namespace {

std::atomic<uint64_t> request_seq{1};

/// Eight hex digits, random per process: ids of two nodes (or of one node
/// before and after a restart) do not meet.
const std::string& process_prefix() {
  static const std::string prefix = [] {
    char buf[9];
    std::snprintf(buf, sizeof(buf), "%08x",
                  static_cast<unsigned>(std::random_device{}() & 0xffffffffu));
    return std::string{buf};
  }();
  return prefix;
}

}  // namespace

bool valid_request_id(const std::string& id) {
  if (id.empty() || id.size() > max_request_id_bytes)
    return false;
  for (unsigned char c : id)
    if (!(std::isalnum(c) || c == '.' || c == '_' || c == ':' || c == '-'))
      return false;
  return true;
}

uint64_t next_request_seq() {
  return request_seq.fetch_add(1, std::memory_order_relaxed);
}

std::string request_id_text(const request_origin& origin) {
  if (!origin.id.empty())
    return origin.id;
  return process_prefix() + "-" + std::to_string(origin.seq);
}

log_event& add_request(log_event& ev, const request_origin& origin,
                       const std::string& model) {
  ev.add("request_id", request_id_text(origin)).add("model", model);
  if (origin.http)
    return ev.add("peer", "http").add("peer_address", origin.address);
  if (!origin.node)
    return ev.add("peer", "local").add("peer_address", "local");
  return ev.add("peer", to_string(origin.node))
      .add("peer_address", peer_address_of(origin.node));
}

log_event& add_answer_error(log_event& ev, const caf::error& err) {
  if (auto code = pool_code(err))
    return ev.add("code", to_string(*code)).add("reason", error_message(err));
  return ev.add("code", "error").add("reason", describe(err));
}

bool request_log_limiter::admit(std::chrono::steady_clock::time_point now,
                                uint64_t& suppressed) {
  std::lock_guard<std::mutex> guard{mtx_};
  if (now - window_start_ >= std::chrono::seconds(1)) {
    window_start_ = now;
    in_window_ = 0;
  }
  if (in_window_ >= request_lines_per_second) {
    ++held_back_;
    return false;
  }
  ++in_window_;
  suppressed = held_back_;
  held_back_ = 0;
  return true;
}

}  // namespace pool::detail
