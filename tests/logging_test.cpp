// Log lines: key=value text and JSON lines, escaping, bounded values.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "logging.hpp"

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
