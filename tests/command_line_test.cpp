// The command lines of embedpool-cli and embedpool-loadgen: both value forms
// (`--key=value`, `--key value`), an empty `--key=`, and the messages and exit
// status (2) of unknown options and bad values. Runs the built binaries; the
// cases that must parse talk to a real node on 127.0.0.1.
#include <chrono>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "process_helpers.hpp"

using namespace std::chrono_literals;
using pool::test::node_process;
using pool::test::run_command;
using pool::test::run_result;

namespace {

bool starts_with(const std::string& text, const std::string& prefix) {
  return text.rfind(prefix, 0) == 0;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

/// Runs `program` with `args` to completion.
run_result run(const std::string& program, std::vector<std::string> args) {
  args.insert(args.begin(), program);
  return run_command(args, 60s);
}

run_result cli(std::vector<std::string> args) {
  return run(EMBEDPOOL_CLI_BIN, std::move(args));
}

/// Requires a usage error of `name`: exit status 2, "NAME: MESSAGE" first on
/// stderr, then the usage text, nothing on stdout.
void require_usage_error(const std::string& name, const run_result& r,
                         const std::string& message) {
  INFO("stderr: " << r.err);
  REQUIRE(r.status.exited);
  CHECK(r.status.code == 2);
  CHECK(starts_with(r.err, name + ": " + message + "\n"));
  CHECK(contains(r.err, "usage: " + name));
  CHECK(r.out.empty());
}

void require_cli_usage_error(const run_result& r, const std::string& message) {
  require_usage_error("embedpool-cli", r, message);
}

}  // namespace

TEST_CASE("embedpool-cli refuses unknown options and bad values with status 2",
          "[cli][command_line]") {
  SECTION("an unknown option is named as given") {
    require_cli_usage_error(cli({"--bogus=1", "status"}), "unknown option --bogus=1");
    require_cli_usage_error(cli({"status", "--bogus"}), "unknown option --bogus");
  }
  SECTION("a port out of range") {
    require_cli_usage_error(cli({"--port=0", "status"}),
                            "--port: expected a port number in [1, 65535], got \"0\"");
    require_cli_usage_error(
        cli({"--port", "70000", "status"}),
        "--port: expected a port number in [1, 65535], got \"70000\"");
  }
  SECTION("a timeout that is not a positive number") {
    require_cli_usage_error(cli({"--timeout=soon", "status"}),
                            "--timeout: expected a number of seconds, got \"soon\"");
    require_cli_usage_error(cli({"--timeout=", "status"}),
                            "--timeout: expected a number of seconds, got \"\"");
    require_cli_usage_error(cli({"--timeout=0", "status"}),
                            "--timeout must be a positive number of seconds");
  }
  SECTION("a missing or unknown command") {
    require_cli_usage_error(cli({"--port=4242"}), "missing command");
    require_cli_usage_error(cli({"frobnicate"}), "unknown command frobnicate");
  }
  SECTION("an option without its value") {
    auto r = cli({"status", "--port"});
    INFO("stderr: " << r.err);
    REQUIRE(r.status.exited);
    CHECK(r.status.code == 2);
    CHECK(starts_with(r.err, "embedpool-cli: "));
    CHECK(contains(r.err, "--port"));
  }
}

TEST_CASE("embedpool-cli prints its usage on stdout for -h and --help",
          "[cli][command_line]") {
  for (std::string flag : {"-h", "--help"}) {
    auto r = cli({flag});
    INFO(flag << " stderr: " << r.err);
    REQUIRE(r.status.exited);
    CHECK(r.status.code == 0);
    CHECK(starts_with(r.out, "usage: embedpool-cli [OPTIONS] COMMAND [ARGS]"));
    CHECK(contains(r.out, "--fallback=H:P"));
    CHECK(r.err.empty());
  }
}

TEST_CASE("embedpool-cli takes --key=value and --key value alike",
          "[cli][command_line]") {
  node_process node{{"--pool.workers=1"}};
  auto port = std::to_string(node.port());
  SECTION("both forms of --port") {
    for (const auto& args : std::vector<std::vector<std::string>>{
             {"--port=" + port, "status"},
             {"--port", port, "status"},
             {"status", "--port", port, "--timeout", "30"}}) {
      auto r = cli(args);
      INFO("stderr: " << r.err);
      REQUIRE(r.status.exited);
      CHECK(r.status.code == 0);
      CHECK(nlohmann::json::parse(r.out).contains("workers"));
    }
  }
  SECTION("--fallback repeats in either form and each names one node") {
    // Port 1 refuses at once: the fallbacks are tried in order.
    auto r = cli({"--port=1", "--fallback", "127.0.0.1:1", "--fallback=127.0.0.1:" + port,
                  "--timeout=30", "status"});
    INFO("stderr: " << r.err);
    REQUIRE(r.status.exited);
    CHECK(r.status.code == 0);
  }
  SECTION("an empty --task= does not take the next argument as its value") {
    auto r = cli({"--port=" + port, "--task=", "embed", "one", "two"});
    INFO("stderr: " << r.err);
    REQUIRE(r.status.exited);
    CHECK(r.status.code == 0);
    CHECK(pool::test::split_lines(r.out).size() == 2);
  }
  SECTION("a TEXT that starts with '-' follows --") {
    auto r = cli({"--port=" + port, "embed", "--", "-v", "--help"});
    INFO("stderr: " << r.err);
    REQUIRE(r.status.exited);
    CHECK(r.status.code == 0);
    CHECK(pool::test::split_lines(r.out).size() == 2);
  }
}

#ifdef EMBEDPOOL_LOADGEN_BIN

namespace {

run_result loadgen(std::vector<std::string> args) {
  return run(EMBEDPOOL_LOADGEN_BIN, std::move(args));
}

void require_loadgen_usage_error(const run_result& r, const std::string& message) {
  require_usage_error("embedpool-loadgen", r, message);
}

}  // namespace

TEST_CASE("embedpool-loadgen refuses unknown options and bad values with status 2",
          "[loadgen][command_line]") {
  SECTION("an unknown option is named by its key") {
    require_loadgen_usage_error(loadgen({"--window=1", "--bogus=3"}),
                                "unknown option --bogus");
  }
  SECTION("an argument that is no option") {
    require_loadgen_usage_error(loadgen({"--window=1", "stray"}),
                                "expected --key=value, got \"stray\"");
  }
  SECTION("values out of range or not numbers, in either form") {
    require_loadgen_usage_error(loadgen({"--window=0"}),
                                "--window: expected a window in [1, 1000000], got \"0\"");
    require_loadgen_usage_error(
        loadgen({"--rate", "fast"}),
        "--rate: expected requests per second in (0, 1e7], got \"fast\"");
    require_loadgen_usage_error(loadgen({"--window=1", "--port=65536"}),
                                "--port: expected a port in [1, 65535], got \"65536\"");
    require_loadgen_usage_error(loadgen({"--window=1", "--mode=stream"}),
                                "--mode: expected embed or batch, got \"stream\"");
    require_loadgen_usage_error(loadgen({"--window=1", "--duration=-1"}),
                                "--duration: expected a positive number of seconds, "
                                "got \"-1\"");
    require_loadgen_usage_error(
        loadgen({"--window=1", "--drain-wait="}),
        "--drain-wait: expected a number of seconds >= 0, got \"\"");
  }
  SECTION("exactly one of --rate and --window") {
    const std::string message =
        "give exactly one of --rate=R (open loop) and --window=W (closed loop)";
    require_loadgen_usage_error(loadgen({"--duration=1"}), message);
    require_loadgen_usage_error(loadgen({"--rate=10", "--window=1"}), message);
  }
}

TEST_CASE("embedpool-loadgen takes --key=value and --key value alike",
          "[loadgen][command_line]") {
  node_process node{{"--pool.workers=1"}};
  auto r = loadgen({"--port", std::to_string(node.port()), "--mode=batch", "--window",
                    "2", "--count=6", "--batch-size", "3", "--duration=30", "--quiet",
                    "--status-interval", "0"});
  INFO("stderr: " << r.err);
  REQUIRE(r.status.exited);
  REQUIRE(r.status.code == 0);
  CHECK(r.err.empty());  // --quiet
  auto summary = nlohmann::json::parse(r.out);
  CHECK(summary.at("sent") == 6);
  CHECK(summary.at("completed") == 6);
}

#endif
