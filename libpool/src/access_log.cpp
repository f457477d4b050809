#include "access_log.hpp"

#include <chrono>
#include <cstdio>
#include <optional>
#include <random>

#include <httplib.h>

#include "logging.hpp"
#include "request_log.hpp"

namespace pool::detail {

namespace {

struct request_state {
  std::chrono::steady_clock::time_point start;
  std::string id;
};

/// The request this thread serves, from access_log_begin to access_log_end.
thread_local std::optional<request_state> current;

std::string random_request_id() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(rng()));
  return buf;
}

}  // namespace

void access_log_begin(const httplib::Request& req, httplib::Response& res) {
  auto id = req.get_header_value("X-Request-Id");
  if (!valid_request_id(id))
    id = random_request_id();
  res.set_header("X-Request-Id", id);
  current = request_state{std::chrono::steady_clock::now(), std::move(id)};
}

void access_log_end(spdlog::logger& log, const httplib::Request& req,
                    const httplib::Response& res) {
  double duration_ms = -1;
  std::string id;
  if (current) {
    duration_ms = std::chrono::duration<double, std::milli>(
                      std::chrono::steady_clock::now() - current->start)
                      .count();
    id = std::move(current->id);
    current.reset();
  } else {
    id = req.get_header_value("X-Request-Id");
    if (!valid_request_id(id))
      id = "-";
  }
  log_event("http_request")
      .add("method", req.method)
      .add("path", req.path)
      .add("status", res.status)
      .add("bytes", static_cast<uint64_t>(res.body.size()))
      .add("duration_ms", duration_ms)
      .add("request_id", id)
      .add("remote", req.remote_addr)
      .write(log, spdlog::level::info);
}

}  // namespace pool::detail
