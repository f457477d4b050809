// Log lines: key=value text and JSON lines, escaping, bounded values, level
// names; rotation past log.max-size, reopening the file, and a node that
// reopens it on SIGHUP.
#include <catch2/catch.hpp>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "logging.hpp"
#include "process_helpers.hpp"

using pool::detail::bounded;
using pool::detail::log_event;

namespace {

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream in{path};
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(in, line))
    lines.push_back(line);
  return lines;
}

std::string temp_log(const char* name) {
  auto dir = std::filesystem::temp_directory_path() /
             ("embedpool-logging-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  return (dir / name / "supervisor.log").string();
}

}  // namespace

TEST_CASE("text log lines carry an ISO timestamp, the component and key=value fields",
          "[logging]") {
  pool::log_section cfg;
  cfg.console = false;
  cfg.file = temp_log("text");
  REQUIRE(pool::detail::setup_logging(cfg).empty());
  log_event("worker_stuck")
      .add("worker", 3u)
      .add("reason", "no pong in time")
      .add("plain", "word")
      .write(*pool::detail::get_logger("supervisor"), spdlog::level::warn);
  pool::detail::shutdown_logging();
  auto lines = read_lines(cfg.file);
  REQUIRE(lines.size() == 1);
  auto& l = lines[0];
  CHECK(l.size() > 30);
  CHECK(l[4] == '-');
  CHECK(l[10] == 'T');
  CHECK_THAT(l, Catch::Contains(" warning supervisor event=worker_stuck worker=3 "
                                "reason=\"no pong in time\" plain=word"));
}

TEST_CASE("JSON log lines are valid JSON objects with every field", "[logging]") {
  pool::log_section cfg;
  cfg.console = false;
  cfg.format = "json";
  cfg.file = temp_log("json");
  REQUIRE(pool::detail::setup_logging(cfg).empty());
  log_event("stats")
      .add("accepted", uint64_t{12})
      .add("quote", "a \"quoted\"\nvalue\\")
      .add("ratio", 0.5)
      .add("draining", false)
      .add_raw("workers", "[0:ready]", R"([{"id":0,"state":"ready"}])")
      .write(*pool::detail::get_logger("supervisor"), spdlog::level::info);
  pool::detail::shutdown_logging();
  auto lines = read_lines(cfg.file);
  REQUIRE(lines.size() == 1);
  auto j = nlohmann::json::parse(lines[0]);
  CHECK(j["logger"] == "supervisor");
  CHECK(j["level"] == "info");
  CHECK(j["event"] == "stats");
  CHECK(j["accepted"] == 12);
  CHECK(j["quote"] == "a \"quoted\"\nvalue\\");
  CHECK(j["ratio"] == 0.5);
  CHECK(j["draining"] == false);
  CHECK(j["workers"][0]["state"] == "ready");
}

TEST_CASE("log values are cut to a bounded length at a UTF-8 boundary", "[logging]") {
  CHECK(bounded("short", 10) == "short");
  CHECK(bounded(std::string(300, 'x'), 256) == std::string(256, 'x') + "...");
  // "é" is two bytes; a cut inside it backs off to the character start.
  CHECK(bounded("ab\xc3\xa9", 3) == "ab...");
}

TEST_CASE("levels below the configured one are not written", "[logging]") {
  pool::log_section cfg;
  cfg.console = false;
  cfg.level = "warn";
  cfg.file = temp_log("level");
  REQUIRE(pool::detail::setup_logging(cfg).empty());
  auto lg = pool::detail::get_logger("worker");
  log_event("quiet").write(*lg, spdlog::level::info);
  log_event("loud").write(*lg, spdlog::level::warn);
  pool::detail::shutdown_logging();
  auto lines = read_lines(cfg.file);
  REQUIRE(lines.size() == 1);
  CHECK_THAT(lines[0], Catch::Contains("event=loud"));
}

TEST_CASE("the level names of the configuration are the ones the lines print",
          "[logging]") {
  for (const char* level : {"warning", "warn"}) {
    pool::log_section cfg;
    cfg.console = false;
    cfg.level = level;
    cfg.file = temp_log("names");
    REQUIRE(pool::detail::setup_logging(cfg).empty());
    auto lg = pool::detail::get_logger("node");
    log_event("quiet").write(*lg, spdlog::level::info);
    log_event("loud").write(*lg, spdlog::level::warn);
    log_event("worse").write(*lg, spdlog::level::critical);
    pool::detail::shutdown_logging();
    auto lines = read_lines(cfg.file);
    INFO(level);
    REQUIRE(lines.size() == 2);
    CHECK_THAT(lines[0], Catch::Contains(" warning node event=loud"));
    CHECK_THAT(lines[1], Catch::Contains(" critical node event=worse"));
  }
}

TEST_CASE("log.max-size rotates the file, keeping log.max-files old ones", "[logging]") {
  pool::log_section cfg;
  cfg.console = false;
  cfg.file = temp_log("rotate");
  cfg.max_size_mib = 1;
  cfg.max_files = 2;
  REQUIRE(pool::detail::setup_logging(cfg).empty());
  auto lg = pool::detail::get_logger("supervisor");
  // About 3.7 MiB in lines of ~320 bytes (values are cut at 256): three
  // rotations.
  const std::string filler(250, 'x');
  for (int i = 0; i < 12000; ++i)
    log_event("filler").add("n", i).add("text", filler).write(*lg, spdlog::level::info);
  pool::detail::shutdown_logging();
  auto dir = std::filesystem::path{cfg.file}.parent_path();
  const auto mib = uintmax_t{1} << 20;
  REQUIRE(std::filesystem::exists(dir / "supervisor.log"));
  REQUIRE(std::filesystem::exists(dir / "supervisor.1.log"));
  REQUIRE(std::filesystem::exists(dir / "supervisor.2.log"));
  CHECK_FALSE(std::filesystem::exists(dir / "supervisor.3.log"));  // max-files = 2
  for (const char* name : {"supervisor.log", "supervisor.1.log", "supervisor.2.log"}) {
    INFO(name);
    CHECK(std::filesystem::file_size(dir / name) <= mib);
  }
  CHECK(std::filesystem::file_size(dir / "supervisor.1.log") > mib - 1000);
  // Newest lines in the current file, older ones in .1, then .2; the
  // oldest were deleted.
  auto number = [](const std::string& line) {
    return std::stoi(line.substr(line.find(" n=") + 3));
  };
  auto current = read_lines(cfg.file);
  auto first = read_lines((dir / "supervisor.1.log").string());
  auto second = read_lines((dir / "supervisor.2.log").string());
  REQUIRE_FALSE(current.empty());
  REQUIRE_FALSE(first.empty());
  REQUIRE_FALSE(second.empty());
  CHECK(number(current.back()) == 11999);
  CHECK(number(first.back()) + 1 == number(current.front()));
  CHECK(number(second.back()) + 1 == number(first.front()));
  CHECK(number(second.front()) > 0);
}

TEST_CASE("reopening the log file moves every logger to a new file at the path",
          "[logging]") {
  pool::log_section cfg;
  cfg.console = false;
  cfg.file = temp_log("reopen");
  REQUIRE(pool::detail::setup_logging(cfg).empty());
  auto lg = pool::detail::get_logger("node");  // cached, as components do
  log_event("before").write(*lg, spdlog::level::info);
  auto moved = cfg.file + ".old";
  std::filesystem::rename(cfg.file, moved);
  log_event("still_old").write(*lg, spdlog::level::info);
  REQUIRE(pool::detail::reopen_log_file().empty());
  log_event("after").write(*lg, spdlog::level::warn);
  pool::detail::shutdown_logging();
  auto old_lines = read_lines(moved);
  auto new_lines = read_lines(cfg.file);
  REQUIRE(old_lines.size() == 2);
  CHECK_THAT(old_lines[0], Catch::Contains("event=before"));
  CHECK_THAT(old_lines[1], Catch::Contains("event=still_old"));
  REQUIRE(new_lines.size() == 1);
  // The pattern carries over to the new file.
  CHECK_THAT(new_lines[0], Catch::Contains(" warning node event=after"));
  CHECK(new_lines[0][10] == 'T');
}

TEST_CASE("SIGHUP makes a running node write to a new file at log.file and keep running",
          "[logging][process]") {
  pool::test::node_process node{{"--pool.workers=1"}};
  auto file = (node.dir().path() / "supervisor.log").string();
  auto moved = file + ".1";
  std::filesystem::rename(file, moved);  // what logrotate does
  node.process().signal(SIGHUP);
  REQUIRE(node.wait_for_log("event=log_reopened", std::chrono::seconds(10)));
  CHECK_FALSE(node.process().poll_exit());
  // A second rotation works the same way.
  std::filesystem::rename(file, moved + "b");
  node.process().signal(SIGHUP);
  REQUIRE(node.wait_for_log("event=log_reopened", std::chrono::seconds(10)));
  CHECK_FALSE(node.process().poll_exit());
  node.process().signal(SIGTERM);
  auto st = node.process().wait_exit(std::chrono::seconds(20));
  REQUIRE(st);
  CHECK(st->exited);
  CHECK(st->code == 0);
  auto old_text = pool::test::slurp(moved);
  auto new_text = pool::test::slurp(file);
  INFO("old: " << old_text << "\nnew: " << new_text);
  CHECK_THAT(old_text, Catch::Contains("event=listening"));
  CHECK_THAT(old_text, !Catch::Contains("event=log_reopened"));
  CHECK_THAT(new_text, !Catch::Contains("event=listening"));
  CHECK_THAT(new_text, Catch::Contains("event=log_reopened signal=SIGHUP"));
  CHECK_THAT(new_text, Catch::Contains("event=signal_received signal=SIGTERM"));
  CHECK_THAT(new_text, Catch::Contains("event=node_stopped exit_code=0"));
}
