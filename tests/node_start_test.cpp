// A node that refuses to start: exit status 2, the reason on stderr, and with
// log.format = json a log whose every line is one JSON object, the refusal
// among them with its event name and the reason as `error`.
#include <chrono>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "process_helpers.hpp"

using namespace std::chrono_literals;
using pool::test::run_command;
using pool::test::slurp;
using pool::test::split_lines;
using pool::test::temp_dir;

namespace {

struct refused_start {
  std::string err;                    // the node's stderr
  std::vector<nlohmann::json> lines;  // its log file, one object per line
};

/// Runs the node with `args` and a JSON log; requires exit status `exit_code`
/// and a log file whose every line parses as a JSON object.
refused_start start_refused(const std::vector<std::string>& args, int exit_code = 2) {
  temp_dir dir;
  auto log_file = (dir.path() / "node.log").string();
  std::vector<std::string> argv = {EMBEDPOOL_NODE_BIN, "--node.port=0",
                                   "--log.format=json", "--log.file=" + log_file};
  argv.insert(argv.end(), args.begin(), args.end());
  auto r = run_command(argv, 30s);
  INFO("stderr: " << r.err);
  REQUIRE(r.status.exited);
  REQUIRE(r.status.code == exit_code);
  refused_start result{r.err, {}};
  for (const auto& line : split_lines(slurp(log_file))) {
    INFO("log line: " << line);
    auto parsed = nlohmann::json::parse(line, nullptr, false);
    REQUIRE_FALSE(parsed.is_discarded());
    REQUIRE(parsed.is_object());
    result.lines.push_back(std::move(parsed));
  }
  return result;
}

/// The first line of `event` at level error, or null.
nlohmann::json error_event(const refused_start& s, const std::string& event) {
  for (const auto& line : s.lines)
    if (line.value("event", "") == event && line.value("level", "") == "error")
      return line;
  return nullptr;
}

}  // namespace

TEST_CASE("A refused start logs its reason as one JSON object with log.format=json",
          "[node][config][logging]") {
  SECTION("a rule that spans several keys") {
    auto s = start_refused({"--node.host=0.0.0.0"});
    INFO("stderr: " << s.err);
    auto ev = error_event(s, "config_refused");
    REQUIRE_FALSE(ev.is_null());
    auto why = ev.at("error").get<std::string>();
    CHECK(why.find("node.host: binding 0.0.0.0 (not loopback) without TLS") !=
          std::string::npos);
    CHECK(s.err.find("embedpool-node: " + why.substr(0, 60)) != std::string::npos);
  }
  SECTION("a node.join entry that is no HOST:PORT") {
    auto s = start_refused({"--node.role=worker", "--node.join=nowhere"});
    INFO("stderr: " << s.err);
    auto ev = error_event(s, "config_refused");
    REQUIRE_FALSE(ev.is_null());
    auto why = ev.at("error").get<std::string>();
    CHECK(why.find("node.join") != std::string::npos);
    CHECK(s.err.find("embedpool-node: " + why + "\n") != std::string::npos);
  }
  SECTION("a model that cannot be loaded, its reason quoting a path") {
    temp_dir empty;
    auto s =
        start_refused({"--model.kind=bert", "--model.path=" + empty.path().string()});
    INFO("stderr: " << s.err);
    auto ev = error_event(s, "model_failed");
    REQUIRE_FALSE(ev.is_null());
    CHECK(ev.contains("model"));
    auto why = ev.at("error").get<std::string>();
    CHECK_FALSE(why.empty());
    CHECK(s.err.find("embedpool-node: " + why.substr(0, 60)) != std::string::npos);
  }
  SECTION("a CAF option CAF refuses is logged, not printed") {
    auto s = start_refused({"--scheduler.max-threads=many"});
    INFO("stderr: " << s.err);
    auto ev = error_event(s, "config_failed");
    REQUIRE_FALSE(ev.is_null());
    CHECK_FALSE(ev.at("error").get<std::string>().empty());
    CHECK(s.err.find("embedpool-node: ") == std::string::npos);
  }
}

TEST_CASE(
    "A port another process holds: the node exits 1 and logs publish_failed as one "
    "JSON object naming the port",
    "[node][logging]") {
  // Holds a listening socket on 127.0.0.1 for the test's duration.
  int holder = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(holder >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(holder, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  REQUIRE(::listen(holder, 1) == 0);
  socklen_t len = sizeof(addr);
  REQUIRE(::getsockname(holder, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
  const auto port = ntohs(addr.sin_port);
  auto s =
      start_refused({"--node.host=127.0.0.1", "--node.port=" + std::to_string(port)}, 1);
  ::close(holder);
  auto ev = error_event(s, "publish_failed");
  REQUIRE_FALSE(ev.is_null());
  CHECK(ev.at("host") == "127.0.0.1");
  CHECK(ev.at("port") == port);
  // CAF's reason quotes its own strings: they stay inside the JSON string.
  CHECK(ev.at("error").get<std::string>().find("cannot_open_port") != std::string::npos);
}
