// Request ids end to end: every log line about a request (rejected, expired,
// failed, retried) names the request's id (the peer's own or one the node
// makes), its model and its peer (node id and address, or the HTTP client's
// address), so that "why was request X refused, by whom, from where" has an
// answer in the log. Unit tests of the id rules and the line limiter, then
// real node processes on 127.0.0.1 driven by pool::client and over HTTP.
#include <catch2/catch.hpp>

#include <chrono>
#include <regex>
#include <string>
#include <vector>

#include <httplib.h>

#include "pool/client.hpp"
#include "pool/error.hpp"
#include "process_helpers.hpp"
#include "request_log.hpp"
#include "status_helpers.hpp"

using namespace std::chrono_literals;
using pool::test::node_process;

namespace {

/// The node's default model (hash, model.dim = 384).
const std::string default_model = "hash-384";

/// The value of ` key=` in a text-format log line ("" if absent); a quoted
/// value is returned without its quotes.
std::string field(const std::string& line, const std::string& key) {
  auto at = line.find(" " + key + "=");
  if (at == std::string::npos)
    return "";
  auto start = at + key.size() + 2;
  if (start < line.size() && line[start] == '"') {
    auto end = line.find('"', start + 1);
    return line.substr(start + 1, end - start - 1);
  }
  return line.substr(start, line.find(' ', start) - start);
}

/// The node's log lines of `event` about request `id`, waiting up to 10 s
/// for the first.
std::vector<std::string> request_lines(const node_process& node, const std::string& event,
                                       const std::string& id) {
  node.wait_for_log("event=" + event + " request_id=" + id + " ", 10s);
  std::vector<std::string> found;
  for (auto& line : pool::test::split_lines(node.log()))
    if (line.find("event=" + event + " ") != std::string::npos &&
        field(line, "request_id") == id)
      found.push_back(line);
  return found;
}

/// Checks that `line` names a BASP peer on 127.0.0.1: its node id and the
/// address of its connection.
void check_basp_peer(const std::string& line) {
  INFO(line);
  auto peer = field(line, "peer");
  CHECK_FALSE(peer.empty());
  CHECK(peer != "local");
  CHECK(peer != "http");
  CHECK(std::regex_match(field(line, "peer_address"), std::regex{R"(127\.0\.0\.1:\d+)"}));
}

uint16_t http_port(const node_process& node) {
  REQUIRE(node.wait_for_log("event=http_listening ", 10s));
  for (auto& line : pool::test::split_lines(node.log()))
    if (line.find("event=http_listening ") != std::string::npos)
      return static_cast<uint16_t>(std::stoul(field(line, "port")));
  FAIL("no http_listening line");
  return 0;
}

}  // namespace

TEST_CASE("a request without an id of its own is named by the node's prefix and a number",
          "[request_log]") {
  pool::detail::request_origin origin;
  origin.seq = pool::detail::next_request_seq();
  auto text = pool::detail::request_id_text(origin);
  CHECK(std::regex_match(text, std::regex{"[0-9a-f]{8}-" + std::to_string(origin.seq)}));
  CHECK(pool::detail::next_request_seq() > origin.seq);
  origin.id = "client-7";
  CHECK(pool::detail::request_id_text(origin) == "client-7");
}

TEST_CASE("the request line limiter lets 50 lines a second through and counts the rest",
          "[request_log]") {
  pool::detail::request_log_limiter limiter;
  auto t0 = std::chrono::steady_clock::now();
  uint64_t suppressed = 99;
  for (uint32_t i = 0; i < pool::detail::request_lines_per_second; ++i) {
    REQUIRE(limiter.admit(t0 + std::chrono::milliseconds(i), suppressed));
    CHECK(suppressed == 0);
  }
  for (int i = 0; i < 7; ++i)
    CHECK_FALSE(limiter.admit(t0 + 500ms, suppressed));
  CHECK_FALSE(limiter.admit(t0 + 999ms, suppressed));
  REQUIRE(limiter.admit(t0 + 1000ms, suppressed));
  CHECK(suppressed == 8);
  REQUIRE(limiter.admit(t0 + 1001ms, suppressed));
  CHECK(suppressed == 0);
}

TEST_CASE(
    "a request the gateway refuses is logged with its id, model and peer node and "
    "address",
    "[request_log][process]") {
  node_process node{{"--pool.workers=1"}};
  auto cl = pool::test::connect_client(node.port());

  auto empty = cl->embed("", "", "", "empty-text-1");
  REQUIRE_FALSE(empty);
  CHECK(pool::pool_code(empty.error()) == pool::pool_errc::invalid_input);
  auto lines = request_lines(node, "request_rejected", "empty-text-1");
  REQUIRE(lines.size() == 1);
  CHECK(field(lines[0], "model") == default_model);
  CHECK(field(lines[0], "code") == "invalid_input");
  CHECK_THAT(field(lines[0], "reason"), Catch::Contains("empty"));
  check_basp_peer(lines[0]);

  auto unknown = cl->embed_batch({"a", "b"}, "", "no-such-model", "unknown-model-2");
  REQUIRE_FALSE(unknown);
  lines = request_lines(node, "request_rejected", "unknown-model-2");
  REQUIRE(lines.size() == 1);
  CHECK(field(lines[0], "model") == "no-such-model");
  CHECK_THAT(field(lines[0], "reason"), Catch::Contains("unknown model"));
  check_basp_peer(lines[0]);

  SECTION("a request without an id gets one from the node") {
    REQUIRE_FALSE(cl->embed(""));
    REQUIRE(node.wait_for_log("event=request_rejected request_id=", 10s));
    std::vector<std::string> made;
    for (auto& line : pool::test::split_lines(node.log()))
      if (line.find("event=request_rejected ") != std::string::npos &&
          std::regex_match(field(line, "request_id"), std::regex{"[0-9a-f]{8}-[0-9]+"}))
        made.push_back(line);
    REQUIRE(made.size() == 1);
    check_basp_peer(made[0]);
  }
  SECTION("an id that is not a plain token is refused, and the node goes on") {
    for (auto bad :
         {std::string{"has space"}, std::string{"k=v"}, std::string(129, 'x')}) {
      auto r = cl->embed("hello", "", "", bad);
      REQUIRE_FALSE(r);
      CHECK(pool::pool_code(r.error()) == pool::pool_errc::invalid_input);
      CHECK_THAT(pool::error_message(r.error()), Catch::Contains("request_id"));
    }
    auto ok = cl->embed("hello", "", "", "fine-id.3:x_y");
    REQUIRE(ok);
    CHECK(ok->size() == 384);
    CHECK(node.log().find("request_id=fine-id.3:x_y") == std::string::npos);
  }
}

TEST_CASE("an expired request is logged with its id, model and peer",
          "[request_log][process]") {
  node_process node{{"--pool.workers=1", "--fault.compute-delay=400ms",
                     "--pool.request-timeout=100ms"}};
  auto cl = pool::test::connect_client(node.port());
  auto r = cl->embed("slow text", "", "", "slow-1");
  REQUIRE_FALSE(r);
  CHECK(pool::pool_code(r.error()) == pool::pool_errc::deadline_exceeded);
  auto lines = request_lines(node, "request_expired", "slow-1");
  REQUIRE(lines.size() == 1);
  CHECK_THAT(lines[0], Catch::Contains(" warning supervisor "));
  CHECK(field(lines[0], "model") == default_model);
  CHECK(field(lines[0], "code") == "deadline_exceeded");
  CHECK(field(lines[0], "attempts") == "1");
  check_basp_peer(lines[0]);
}

TEST_CASE("a request whose worker crashes is logged when retried and when it fails",
          "[request_log][process]") {
  node_process node{{"--pool.workers=1", "--fault.crash-every=1", "--pool.max-attempts=2",
                     "--pool.max-restarts=1000", "--pool.restart-backoff=10ms",
                     "--pool.restart-backoff-max=50ms"}};
  auto cl = pool::test::connect_client(node.port());
  auto r = cl->embed("poison", "", "", "crash-1");
  REQUIRE_FALSE(r);
  CHECK(pool::pool_code(r.error()) == pool::pool_errc::worker_failed);
  auto failed = request_lines(node, "request_failed", "crash-1");
  REQUIRE(failed.size() == 1);
  CHECK(field(failed[0], "code") == "worker_failed");
  CHECK(field(failed[0], "attempts") == "2");
  check_basp_peer(failed[0]);
  auto retried = request_lines(node, "request_retried", "crash-1");
  REQUIRE(retried.size() == 1);
  CHECK(field(retried[0], "model") == default_model);
  CHECK(field(retried[0], "worker") == "0");
  CHECK(field(retried[0], "attempts") == "1");
  check_basp_peer(retried[0]);
}

TEST_CASE(
    "an HTTP request's X-Request-Id is echoed and names it in the node's log, with "
    "the client's address",
    "[request_log][process][http]") {
  node_process node{{"--http.port=0", "--pool.workers=1", "--fault.compute-delay=400ms",
                     "--pool.request-timeout=100ms"}};
  httplib::Client http{"127.0.0.1", http_port(node)};
  http.set_read_timeout(30, 0);

  auto res = http.Post("/embed", httplib::Headers{{"X-Request-Id", "http-slow-1"}},
                       R"({"inputs":"slow text"})", "application/json");
  REQUIRE(res);
  CHECK(res->status == 504);
  CHECK(res->get_header_value("X-Request-Id") == "http-slow-1");
  auto lines = request_lines(node, "request_expired", "http-slow-1");
  REQUIRE(lines.size() == 1);
  CHECK(field(lines[0], "peer") == "http");
  CHECK(std::regex_match(field(lines[0], "peer_address"),
                         std::regex{R"(127\.0\.0\.1:\d+)"}));
  CHECK(field(lines[0], "model") == default_model);

  // Without a header of its own the request gets an id, echoed and logged.
  res = http.Post("/embed", R"({"inputs":"slow again"})", "application/json");
  REQUIRE(res);
  auto made = res->get_header_value("X-Request-Id");
  REQUIRE(pool::detail::valid_request_id(made));
  REQUIRE(request_lines(node, "request_expired", made).size() == 1);
}

TEST_CASE("embedpool-cli --request-id names its requests in the node's log",
          "[request_log][process][cli]") {
  node_process node{{"--pool.workers=1"}};
  auto port = "--port=" + std::to_string(node.port());
  auto r = pool::test::run_command(
      {EMBEDPOOL_CLI_BIN, port, "--request-id=cli-7", "embed", "fine", ""}, 60s);
  CHECK(r.status.code == 1);
  // Two texts, two requests: the second (empty) one is cli-7.2.
  auto lines = request_lines(node, "request_rejected", "cli-7.2");
  REQUIRE(lines.size() == 1);
  check_basp_peer(lines[0]);
  r = pool::test::run_command({EMBEDPOOL_CLI_BIN, port, "--request-id", "b-1", "batch"},
                              60s);
  CHECK(r.status.code == 1);  // an empty batch (stdin is /dev/null)
  lines = request_lines(node, "request_rejected", "b-1");
  REQUIRE(lines.size() == 1);
  CHECK_THAT(field(lines[0], "reason"), Catch::Contains("batch is empty"));
}
