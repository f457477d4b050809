// http.access-log: one log line per HTTP request with method, path, status,
// bytes, duration and the request id, which the response echoes in
// X-Request-Id. A real node on 127.0.0.1.
#include <chrono>
#include <csignal>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>
#include <catch2/catch.hpp>

#include "access_log.hpp"
#include "process_helpers.hpp"
#include "request_log.hpp"

using namespace std::chrono_literals;
using pool::test::node_process;
using pool::test::split_lines;

namespace {

/// The port of the node's `event=http_listening` line.
uint16_t http_port(const node_process& node) {
  REQUIRE(node.wait_for_log("event=http_listening ", 10s));
  auto text = node.log();
  auto ev = text.find("event=http_listening ");
  auto line = text.substr(ev, text.find('\n', ev) - ev);
  auto key = line.find(" port=");
  REQUIRE(key != std::string::npos);
  return static_cast<uint16_t>(std::stoul(line.substr(key + 6)));
}

/// The `event=http_request` lines of the node's log.
std::vector<std::string> access_lines(const node_process& node) {
  std::vector<std::string> result;
  for (auto& line : split_lines(node.log()))
    if (line.find(" info http event=http_request ") != std::string::npos)
      result.push_back(line);
  return result;
}

/// Waits (bounded) until the log has `n` access lines: the line is written
/// after the response, so it may trail the client's return slightly.
std::vector<std::string> wait_for_access_lines(const node_process& node, size_t n) {
  auto deadline = std::chrono::steady_clock::now() + 10s;
  auto lines = access_lines(node);
  while (lines.size() < n && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
    lines = access_lines(node);
  }
  return lines;
}

}  // namespace

TEST_CASE("request ids are used as given only when they are plain tokens",
          "[http][access-log]") {
  CHECK(pool::detail::valid_request_id("job-42"));
  CHECK(pool::detail::valid_request_id("a.b_c:d-9"));
  CHECK(pool::detail::valid_request_id(std::string(128, 'x')));
  CHECK_FALSE(pool::detail::valid_request_id(""));
  CHECK_FALSE(pool::detail::valid_request_id(std::string(129, 'x')));
  CHECK_FALSE(pool::detail::valid_request_id("has space"));
  CHECK_FALSE(pool::detail::valid_request_id("quote\"d"));
  CHECK_FALSE(pool::detail::valid_request_id("k=v"));
}

TEST_CASE("http.access-log writes one line per request and echoes X-Request-Id",
          "[http][access-log]") {
  node_process node{{"--http.port=0", "--http.access-log=true", "--pool.workers=1"}};
  httplib::Client http{"127.0.0.1", http_port(node)};
  http.set_read_timeout(30, 0);
  auto embed = http.Post("/v1/embeddings", {{"X-Request-Id", "job-42"}},
                         R"({"input":"hello world"})", "application/json");
  REQUIRE(embed);
  REQUIRE(embed->status == 200);
  CHECK(embed->get_header_value("X-Request-Id") == "job-42");
  auto missing = http.Get("/no/such/path");
  REQUIRE(missing);
  CHECK(missing->status == 404);
  auto generated = missing->get_header_value("X-Request-Id");
  CHECK(generated.size() == 16);  // none given: a random id
  auto bad = http.Get("/health/live", {{"X-Request-Id", "not a token"}});
  REQUIRE(bad);
  auto replaced = bad->get_header_value("X-Request-Id");
  CHECK(replaced.size() == 16);
  CHECK(replaced != generated);
  // Each request is on a connection of its own and the line is written after
  // the response, so the three lines may land in any order: find each by id.
  auto lines = wait_for_access_lines(node, 3);
  INFO(node.log());
  REQUIRE(lines.size() == 3);
  auto line_with_id = [&lines](const std::string& id) {
    for (const auto& line : lines)
      if (line.find(" request_id=" + id + " ") != std::string::npos)
        return line;
    return std::string{};
  };
  auto embed_line = line_with_id("job-42");
  CHECK_THAT(embed_line,
             Catch::Contains("event=http_request method=POST "
                             "path=/v1/embeddings status=200 bytes=" +
                             std::to_string(embed->body.size()) + " duration_ms="));
  CHECK_THAT(embed_line, Catch::Contains(" request_id=job-42 remote=127.0.0.1"));
  CHECK_THAT(line_with_id(generated),
             Catch::Contains("method=GET path=/no/such/path status=404 bytes=" +
                             std::to_string(missing->body.size())));
  CHECK_THAT(line_with_id(replaced), Catch::Contains("path=/health/live status=200"));
  for (const auto& line : lines) {
    auto pos = line.find(" duration_ms=");
    REQUIRE(pos != std::string::npos);
    CHECK(std::stod(line.substr(pos + 13)) >= 0);
  }
}

TEST_CASE("without http.access-log no request line is written, and ids are still echoed",
          "[http][access-log]") {
  node_process node{{"--http.port=0", "--pool.workers=1"}};
  httplib::Client http{"127.0.0.1", http_port(node)};
  auto res = http.Get("/health/live", {{"X-Request-Id", "job-1"}});
  REQUIRE(res);
  CHECK(res->status == 200);
  CHECK(res->get_header_value("X-Request-Id") == "job-1");
  res = http.Get("/health/live");
  REQUIRE(res);
  CHECK(std::regex_match(res->get_header_value("X-Request-Id"),
                         std::regex{"[0-9a-f]{16}"}));
  node.process().signal(SIGTERM);
  REQUIRE(node.process().wait_exit(20s));
  CHECK(access_lines(node).empty());
  CHECK_THAT(node.log(), Catch::Contains("event=node_stopped"));
}
