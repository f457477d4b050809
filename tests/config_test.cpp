// Tests of the node configuration loader (pool/config.hpp).
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include <unistd.h>

#include <caf/actor_system_config.hpp>
#include <caf/all.hpp>

#include "pool/caf_defaults.hpp"
#include "pool/config.hpp"
#include "pool/error.hpp"

using namespace std::chrono_literals;

namespace {

/// Every key of ours, from the task's key list (independent of the schema).
const std::vector<std::string> all_keys = {
    "node.host",
    "node.port",
    "node.role",
    "node.join",
    "node.name",
    "node.allow-insecure",
    "pool.workers",
    "pool.embed-queue-capacity",
    "pool.batch-queue-capacity",
    "pool.pending-capacity",
    "pool.overload-policy",
    "pool.request-timeout",
    "pool.max-attempts",
    "pool.max-text-bytes",
    "pool.max-batch-items",
    "pool.micro-batch-texts",
    "pool.inline-compute",
    "pool.restart-backoff",
    "pool.restart-backoff-max",
    "pool.max-restarts",
    "pool.restart-window",
    "pool.max-abandoned",
    "pool.drain-timeout",
    "pool.min-workers",
    "pool.max-workers",
    "pool.scale-up-queue-depth",
    "pool.scale-up-window",
    "pool.idle-cooldown",
    "pool.memory-budget",
    "heartbeat.interval",
    "heartbeat.timeout",
    "model.name",
    "model.kind",
    "model.path",
    "model.dim",
    "model.hash-buckets",
    "model.blas-threads",
    "model.truncate",
    "model.matryoshka",
    "models.names",
    "tls.certificate",
    "tls.key",
    "tls.ca-file",
    "tls.passphrase",
    "log.level",
    "log.file",
    "log.max-size",
    "log.max-files",
    "log.format",
    "log.console",
    "log.stats-interval",
    "fault.compute-delay",
    "fault.crash-every",
    "fault.hang-marker",
    "http.host",
    "http.port",
    "http.threads",
    "http.max-connections",
    "http.max-body-bytes",
    "http.access-log",
    "http.read-timeout",
};

/// A temporary INI file, removed on destruction.
class temp_ini {
 public:
  explicit temp_ini(const std::string& text) {
    static std::atomic<int> counter{0};
    path_ = (std::filesystem::temp_directory_path() /
             ("embedpool_config_test_" + std::to_string(::getpid()) + "_" +
              std::to_string(counter++) + ".ini"))
                .string();
    std::ofstream out{path_, std::ios::binary};
    out << text;
  }
  ~temp_ini() { std::remove(path_.c_str()); }
  temp_ini(const temp_ini&) = delete;
  temp_ini& operator=(const temp_ini&) = delete;

  const std::string& path() const { return path_; }
  std::string arg() const { return "--config-file=" + path_; }

 private:
  std::string path_;
};

pool::node_config load(const std::vector<std::string>& args) {
  auto result = pool::parse_node_args(args);
  if (!result)
    FAIL("unexpected error: " << pool::describe(result.error()));
  CHECK_FALSE(result->help);
  return result->config;
}

/// The message of the error `args` must produce; checks it is invalid_input.
std::string error_of(const std::vector<std::string>& args) {
  auto result = pool::parse_node_args(args);
  if (result)
    FAIL("expected an error for the arguments");
  CHECK(pool::pool_code(result.error()) == pool::pool_errc::invalid_input);
  return pool::error_message(result.error());
}

std::string file_error(const std::string& ini_text) {
  temp_ini file{ini_text};
  return error_of({file.arg()});
}

void check_same(const pool::node_config& a, const pool::node_config& b) {
  CHECK(a.node.host == b.node.host);
  CHECK(a.node.port == b.node.port);
  CHECK(a.node.role == b.node.role);
  CHECK(a.node.join == b.node.join);
  CHECK(a.node.name == b.node.name);
  CHECK(a.node.allow_insecure == b.node.allow_insecure);
  CHECK(a.tls.certificate == b.tls.certificate);
  CHECK(a.tls.key == b.tls.key);
  CHECK(a.tls.ca_file == b.tls.ca_file);
  CHECK(a.tls.passphrase == b.tls.passphrase);
  CHECK(a.pool.workers == b.pool.workers);
  CHECK(a.pool.embed_queue_capacity == b.pool.embed_queue_capacity);
  CHECK(a.pool.batch_queue_capacity == b.pool.batch_queue_capacity);
  CHECK(a.pool.pending_capacity == b.pool.pending_capacity);
  CHECK(a.pool.policy == b.pool.policy);
  CHECK(a.pool.request_timeout == b.pool.request_timeout);
  CHECK(a.pool.max_attempts == b.pool.max_attempts);
  CHECK(a.pool.max_text_bytes == b.pool.max_text_bytes);
  CHECK(a.pool.max_batch_items == b.pool.max_batch_items);
  CHECK(a.pool.micro_batch_texts == b.pool.micro_batch_texts);
  CHECK(a.pool.restart_backoff == b.pool.restart_backoff);
  CHECK(a.pool.restart_backoff_max == b.pool.restart_backoff_max);
  CHECK(a.pool.max_restarts == b.pool.max_restarts);
  CHECK(a.pool.restart_window == b.pool.restart_window);
  CHECK(a.pool.max_abandoned == b.pool.max_abandoned);
  CHECK(a.pool.drain_timeout == b.pool.drain_timeout);
  CHECK(a.pool.min_workers == b.pool.min_workers);
  CHECK(a.pool.max_workers == b.pool.max_workers);
  CHECK(a.pool.scale_up_queue_depth == b.pool.scale_up_queue_depth);
  CHECK(a.pool.scale_up_window == b.pool.scale_up_window);
  CHECK(a.pool.idle_cooldown == b.pool.idle_cooldown);
  CHECK(a.pool.memory_budget_mib == b.pool.memory_budget_mib);
  CHECK(a.heartbeat.interval == b.heartbeat.interval);
  CHECK(a.heartbeat.timeout == b.heartbeat.timeout);
  CHECK(a.model.name == b.model.name);
  CHECK(a.model.kind == b.model.kind);
  CHECK(a.models.size() == b.models.size());
  CHECK(a.model.path == b.model.path);
  CHECK(a.model.dim == b.model.dim);
  CHECK(a.model.hash_buckets == b.model.hash_buckets);
  CHECK(a.model.blas_threads == b.model.blas_threads);
  CHECK(a.log.level == b.log.level);
  CHECK(a.log.file == b.log.file);
  CHECK(a.log.max_size_mib == b.log.max_size_mib);
  CHECK(a.log.max_files == b.log.max_files);
  CHECK(a.log.format == b.log.format);
  CHECK(a.log.console == b.log.console);
  CHECK(a.log.stats_interval == b.log.stats_interval);
  CHECK(a.fault.compute_delay == b.fault.compute_delay);
  CHECK(a.fault.crash_every == b.fault.crash_every);
  CHECK(a.fault.hang_marker == b.fault.hang_marker);
  CHECK(a.http.host == b.http.host);
  CHECK(a.http.port == b.http.port);
  CHECK(a.http.threads == b.http.threads);
  CHECK(a.http.max_connections == b.http.max_connections);
  CHECK(a.http.max_body_bytes == b.http.max_body_bytes);
  CHECK(a.http.access_log == b.http.access_log);
  CHECK(a.http.read_timeout == b.http.read_timeout);
}

size_t count_of(const std::vector<std::string>& xs, const std::string& x) {
  return static_cast<size_t>(std::count(xs.begin(), xs.end(), x));
}

bool has_prefix(const std::vector<std::string>& xs, const std::string& prefix) {
  return std::any_of(xs.begin(), xs.end(), [&](const std::string& x) {
    return x.compare(0, prefix.size(), prefix) == 0;
  });
}

/// Feeds `args` to CAF's own parser; returns the config after checking no error.
void caf_parse(caf::actor_system_config& cfg, const std::vector<std::string>& args) {
  std::istringstream no_ini;
  auto err = cfg.parse(args, no_ini);
  INFO("CAF: " << caf::actor_system_config::render(err));
  REQUIRE_FALSE(err);
}

const std::string source_dir = EMBEDPOOL_SOURCE_DIR;

}  // namespace

TEST_CASE("Without arguments every key has its built-in default", "[config]") {
  auto cfg = load({});
  check_same(cfg, pool::node_config{});
  CHECK(cfg.config_file.empty());
  CHECK(count_of(cfg.caf_args, "--middleman.heartbeat-interval=1s") == 1);
  CHECK(count_of(cfg.caf_args, "--middleman.connection-timeout=10s") == 1);
  CHECK(count_of(cfg.caf_args, "--work-stealing.moderate-poll-attempts=0") == 1);
  CHECK(count_of(cfg.caf_args, "--work-stealing.relaxed-sleep-duration=100ms") == 1);
  CHECK(count_of(cfg.caf_args, "--scheduler.max-threads=" +
                                   std::to_string(pool::node_scheduler_threads())) == 1);
  CHECK(pool::node_scheduler_threads() >= 2);
  CHECK(pool::node_scheduler_threads() <= 8);
  CHECK(cfg.caf_args.size() == 5);
  CHECK(cfg.caf_args == pool::node_caf_defaults());
}

TEST_CASE("conf/embedpool.ini yields exactly the built-in defaults", "[config]") {
  auto path = source_dir + "/conf/embedpool.ini";
  auto cfg = load({"--config-file=" + path});
  check_same(cfg, pool::node_config{});
  CHECK(cfg.config_file == path);
  CHECK(count_of(cfg.caf_args, "--middleman.heartbeat-interval=1s") == 1);
  CHECK(count_of(cfg.caf_args, "--middleman.connection-timeout=10s") == 1);
  caf::actor_system_config caf_cfg;
  caf_parse(caf_cfg, cfg.caf_args);
  CHECK(caf::get_or(caf_cfg, "middleman.heartbeat-interval", caf::timespan{0}) == 1s);
  CHECK(caf::get_or(caf_cfg, "middleman.connection-timeout", caf::timespan{0}) == 10s);
  CHECK(caf::get_or(caf_cfg, "work-stealing.moderate-poll-attempts", size_t{500}) == 0);
  CHECK(caf::get_or(caf_cfg, "work-stealing.relaxed-sleep-duration", caf::timespan{0}) ==
        100ms);
  CHECK(caf::get_or(caf_cfg, "scheduler.max-threads", size_t{0}) ==
        pool::node_scheduler_threads());
}

TEST_CASE("conf/embedpool.ini documents every key", "[config]") {
  std::ifstream in{source_dir + "/conf/embedpool.ini"};
  REQUIRE(in);
  std::stringstream buf;
  buf << in.rdbuf();
  // Collect "section.key" for every `key =` line, commented out or not.
  std::vector<std::string> found;
  std::string line;
  std::string section;
  while (std::getline(buf, line)) {
    if (line.size() > 2 && line[0] == '[') {
      section = line.substr(1, line.find(']') - 1);
      continue;
    }
    auto body = line;
    if (!body.empty() && (body[0] == ';' || body[0] == '#')) {
      auto start = body.find_first_not_of(";# ");
      body = start == std::string::npos ? std::string{} : body.substr(start);
    }
    auto eq = body.find(" = ");
    if (eq != std::string::npos && body.find(' ') == eq)
      found.push_back(section + "." + body.substr(0, eq));
  }
  for (const auto& key : all_keys) {
    INFO(key);
    CHECK(count_of(found, key) == 1);
  }
  CHECK(count_of(found, "middleman.heartbeat-interval") == 1);
  CHECK(count_of(found, "middleman.connection-timeout") == 1);
}

TEST_CASE("A file sets every key of ours", "[config]") {
  temp_ini file{R"(
[node]
host = "0.0.0.0"
port = 0
[pool]
workers = 7
embed-queue-capacity = 11
batch-queue-capacity = 12
pending-capacity = 0
overload-policy = reject
request-timeout = 2500ms
max-attempts = 9
max-text-bytes = 1000
max-batch-items = 17
micro-batch-texts = 4096
inline-compute = 250us
restart-backoff = 1s
restart-backoff-max = 1s
max-restarts = 0
restart-window = 2min
max-abandoned = 1000
drain-timeout = 0s
min-workers = 3
max-workers = 9
scale-up-queue-depth = 6
scale-up-window = 3s
idle-cooldown = 90s
memory-budget = 2048
[heartbeat]
interval = 200ms
timeout = 201ms
[model]
kind = bert
path = "models/all-MiniLM-L6-v2"
dim = 4096
hash-buckets = 16
blas-threads = 64
[log]
level = off
file = ""
max-size = 64
max-files = 0
format = json
console = false
stats-interval = 0s
[fault]
compute-delay = 5us
crash-every = 13
hang-marker = "HANG"
[http]
host = "127.0.0.2"
port = 0
threads = 3
max-connections = 5
max-body-bytes = 2048
access-log = true
read-timeout = 750ms
)"};
  auto cfg = load({file.arg()});
  CHECK(cfg.node.host == "0.0.0.0");
  CHECK(cfg.node.port == 0);
  CHECK(cfg.pool.workers == 7);
  CHECK(cfg.pool.embed_queue_capacity == 11);
  CHECK(cfg.pool.batch_queue_capacity == 12);
  CHECK(cfg.pool.pending_capacity == 0);
  CHECK(cfg.pool.policy == pool::overload_policy::reject);
  CHECK(cfg.pool.request_timeout == 2500ms);
  CHECK(cfg.pool.max_attempts == 9);
  CHECK(cfg.pool.max_text_bytes == 1000);
  CHECK(cfg.pool.max_batch_items == 17);
  CHECK(cfg.pool.micro_batch_texts == 4096);
  CHECK(cfg.pool.inline_compute == 250us);
  CHECK(cfg.pool.restart_backoff == 1s);
  CHECK(cfg.pool.restart_backoff_max == 1s);
  CHECK(cfg.pool.max_restarts == 0);
  CHECK(cfg.pool.restart_window == 120s);
  CHECK(cfg.pool.max_abandoned == 1000);
  CHECK(cfg.pool.drain_timeout == 0s);
  CHECK(cfg.pool.min_workers == 3);
  CHECK(cfg.pool.max_workers == 9);
  CHECK(cfg.pool.scale_up_queue_depth == 6);
  CHECK(cfg.pool.scale_up_window == 3s);
  CHECK(cfg.pool.idle_cooldown == 90s);
  CHECK(cfg.pool.memory_budget_mib == 2048);
  CHECK(cfg.heartbeat.interval == 200ms);
  CHECK(cfg.heartbeat.timeout == 201ms);
  CHECK(cfg.model.kind == "bert");
  CHECK(cfg.model.path == "models/all-MiniLM-L6-v2");
  CHECK(cfg.http.host == "127.0.0.2");
  CHECK(cfg.http.port == 0);
  CHECK(cfg.http.threads == 3);
  CHECK(cfg.http.max_connections == 5);
  CHECK(cfg.http.max_body_bytes == 2048);
  CHECK(cfg.http.access_log);
  CHECK(cfg.http.read_timeout == 750ms);
  CHECK(cfg.model.dim == 4096);
  CHECK(cfg.model.hash_buckets == 16);
  CHECK(cfg.model.blas_threads == 64);
  CHECK(cfg.log.level == "off");
  CHECK(cfg.log.file.empty());
  CHECK(cfg.log.max_size_mib == 64);
  CHECK(cfg.log.max_files == 0);
  CHECK(cfg.log.format == "json");
  CHECK_FALSE(cfg.log.console);
  CHECK(cfg.log.stats_interval == 0s);
  CHECK(cfg.fault.compute_delay == 5us);
  CHECK(cfg.fault.crash_every == 13);
  CHECK(cfg.fault.hang_marker == "HANG");
  CHECK(cfg.config_file == file.path());
}

TEST_CASE("Command-line values override the file", "[config]") {
  temp_ini file{"[pool]\nworkers = 4\nmax-attempts = 5\n[log]\nlevel = debug\n"};
  SECTION("an override after the file argument") {
    auto cfg = load({file.arg(), "--pool.workers=7", "--log.level=warn"});
    CHECK(cfg.pool.workers == 7);
    CHECK(cfg.log.level == "warn");  // still accepted for "warning"
    CHECK(load({"--log.level=warning"}).log.level == "warning");
    CHECK(load({"--log.level=critical"}).log.level == "critical");
    CHECK(cfg.pool.max_attempts == 5);  // set only in the file
  }
  SECTION("an override before the file argument") {
    auto cfg = load({"--pool.workers=7", file.arg()});
    CHECK(cfg.pool.workers == 7);
    CHECK(cfg.log.level == "debug");
  }
  SECTION("the last of repeated overrides") {
    auto cfg = load({file.arg(), "--pool.workers=7", "--pool.workers=8"});
    CHECK(cfg.pool.workers == 8);
  }
}

TEST_CASE("Values of the wrong type or out of range are refused naming the key",
          "[config]") {
  struct bad {
    std::string key;
    std::string value;
  };
  const std::vector<bad> cases = {
      {"node.host", ""},
      {"node.host", "[\"a\"]"},
      {"node.port", "-1"},
      {"node.port", "65536"},
      {"node.port", "http"},
      {"pool.workers", "abc"},
      {"pool.workers", "0"},
      {"pool.workers", "257"},
      {"pool.workers", "1.5"},
      {"pool.workers", "99999999999999999999"},
      {"pool.workers", "2s"},
      {"pool.workers", "true"},
      {"pool.workers", "\"2\""},
      {"pool.embed-queue-capacity", "0"},
      {"pool.embed-queue-capacity", "100001"},
      {"pool.batch-queue-capacity", "100001"},
      {"pool.pending-capacity", "1000001"},
      {"pool.pending-capacity", "-1"},
      {"pool.overload-policy", "drop"},
      {"pool.overload-policy", "1"},
      {"pool.request-timeout", "10"},
      {"pool.request-timeout", "0s"},
      {"pool.request-timeout", "-1s"},
      {"pool.request-timeout", "10 ms"},
      {"pool.request-timeout", "1.5s"},
      {"pool.request-timeout", "5x"},
      {"pool.max-attempts", "0"},
      {"pool.max-attempts", "101"},
      {"pool.max-text-bytes", "16777217"},
      {"pool.max-text-bytes", "0"},
      {"pool.max-batch-items", "100001"},
      {"pool.micro-batch-texts", "4097"},
      {"pool.inline-compute", "-1us"},
      {"pool.inline-compute", "100"},
      {"pool.restart-backoff", "-1ms"},
      {"pool.restart-backoff", "100"},
      {"pool.restart-backoff-max", "3"},
      {"pool.max-restarts", "1001"},
      {"pool.restart-window", "0s"},
      {"pool.max-abandoned", "1001"},
      {"pool.drain-timeout", "-1s"},
      {"pool.drain-timeout", "30"},
      {"heartbeat.interval", "0ms"},
      {"heartbeat.timeout", "5"},
      {"model.kind", "onnx"},
      {"model.kind", ""},
      {"model.dim", "0"},
      {"model.dim", "4097"},
      {"model.hash-buckets", "15"},
      {"model.hash-buckets", "1048577"},
      {"model.blas-threads", "0"},
      {"model.blas-threads", "65"},
      {"log.level", "verbose"},
      {"log.level", "INFO"},
      {"log.format", "xml"},
      {"log.console", "yes"},
      {"log.console", "1"},
      {"log.stats-interval", "-1s"},
      {"log.stats-interval", "10"},
      {"fault.compute-delay", "5"},
      {"fault.crash-every", "-1"},
      {"fault.crash-every", "4294967296"},
      {"fault.hang-marker", "[1, 2]"},
  };
  for (const auto& c : cases) {
    INFO(c.key << " = " << c.value);
    auto on_cli = error_of({"--" + c.key + "=" + c.value});
    CHECK_THAT(on_cli, Catch::StartsWith(c.key + ": expected "));
    CHECK_THAT(on_cli, Catch::EndsWith("(command line)"));
    auto section = c.key.substr(0, c.key.find('.'));
    auto name = c.key.substr(c.key.find('.') + 1);
    temp_ini file{"; comment\n[" + section + "]\n" + name + " = " + c.value + "\n"};
    auto in_file = error_of({file.arg()});
    CHECK_THAT(in_file, Catch::StartsWith(c.key + ": expected "));
    CHECK_THAT(in_file, Catch::EndsWith("(" + file.path() + " line 3)"));
  }
}

TEST_CASE("Error messages name key, expectation, value and source", "[config]") {
  temp_ini file{"[node]\nport = 1\n\n[pool]\n; the pool\n\nworkers = abc\n"};
  CHECK(error_of({file.arg()}) ==
        "pool.workers: expected an integer in [1, 256], got \"abc\" (" + file.path() +
            " line 7)");
  CHECK(error_of({"--pool.request-timeout=10"}) ==
        "pool.request-timeout: expected a duration such as 10ms (units ns, us, ms, s, "
        "min, h), got \"10\" (command line)");
  CHECK(error_of({"--pool.wrokers=3"}) == "unknown key pool.wrokers (command line)");
  CHECK(error_of({"--config-file=conf/missing.ini"}) ==
        "conf/missing.ini: cannot open file");
}

TEST_CASE("Range limits themselves are accepted", "[config]") {
  auto low = load({"--node.port=0", "--pool.workers=1", "--pool.pending-capacity=0",
                   "--pool.max-text-bytes=1", "--model.hash-buckets=16",
                   "--pool.drain-timeout=0s", "--pool.restart-backoff=0s",
                   "--pool.max-restarts=0", "--log.stats-interval=0s",
                   "--heartbeat.interval=1ns", "--heartbeat.timeout=2ns"});
  CHECK(low.node.port == 0);
  CHECK(low.pool.workers == 1);
  CHECK(low.pool.max_text_bytes == 1);
  CHECK(low.heartbeat.interval == 1ns);
  auto high = load({"--node.port=65535", "--pool.workers=256",
                    "--pool.max-text-bytes=16777216", "--model.hash-buckets=1048576",
                    "--pool.pending-capacity=1000000", "--fault.crash-every=4294967295"});
  CHECK(high.node.port == 65535);
  CHECK(high.pool.workers == 256);
  CHECK(high.pool.max_text_bytes == 16u * 1024 * 1024);
  CHECK(high.model.hash_buckets == 1048576);
  CHECK(high.pool.pending_capacity == 1000000);
  CHECK(high.fault.crash_every == 4294967295u);
}

TEST_CASE("Rules between keys are checked after all sources are merged", "[config]") {
  CHECK_THAT(error_of({"--pool.restart-backoff=2s", "--pool.restart-backoff-max=1s"}),
             Catch::StartsWith("pool.restart-backoff-max: expected a duration >= "
                               "pool.restart-backoff (2s), got \"1s\""));
  // The file sets the interval, the command line breaks the rule.
  temp_ini file{"[heartbeat]\ninterval = 2s\ntimeout = 3s\n"};
  CHECK(error_of({file.arg(), "--heartbeat.timeout=2s"}) ==
        "heartbeat.timeout: expected a duration > heartbeat.interval (2s), got \"2s\" "
        "(command line)");
  CHECK_THAT(error_of({"--heartbeat.interval=5s"}),
             Catch::StartsWith("heartbeat.timeout: expected a duration > "
                               "heartbeat.interval (5s), got \"5s\" (default)"));
  CHECK_THAT(error_of({"--model.kind=bert"}),
             Catch::StartsWith("model.path: required when model.kind = bert"));
  auto bert = load({"--model.kind=bert", "--model.path=models/x"});
  CHECK(bert.model.path == "models/x");
  // A later source may repair what an earlier one left inconsistent.
  temp_ini partial{"[model]\nkind = bert\n"};
  CHECK(load({partial.arg(), "--model.path=m"}).model.kind == "bert");
}

TEST_CASE("Unknown keys, sections and arguments are refused naming them", "[config]") {
  CHECK_THAT(error_of({"--pool.wrokers=3"}), Catch::Contains("pool.wrokers"));
  CHECK_THAT(error_of({"--poool.workers=3"}), Catch::Contains("poool.workers"));
  CHECK_THAT(error_of({"--workers=3"}),
             Catch::StartsWith("workers: key without section"));
  CHECK_THAT(error_of({"--log"}), Catch::StartsWith("log: key without section"));
  CHECK_THAT(error_of({"serve"}), Catch::Contains("unexpected argument \"serve\""));
  CHECK_THAT(error_of({"-v"}), Catch::Contains("unexpected argument \"-v\""));
  CHECK_THAT(error_of({"--"}), Catch::Contains("unexpected argument \"--\""));
  CHECK_THAT(error_of({"--config-file"}), Catch::StartsWith("--config-file: expected"));
  CHECK_THAT(error_of({"--config-file="}), Catch::StartsWith("--config-file: expected"));
  temp_ini a{""};
  temp_ini b{""};
  CHECK_THAT(error_of({a.arg(), b.arg()}), Catch::Contains("given twice"));

  CHECK_THAT(file_error("[pool]\nwrokers = 3\n"),
             Catch::Contains("line 2: unknown key pool.wrokers"));
  CHECK_THAT(file_error("[pool]\n[poool]\nworkers = 3\n"),
             Catch::Contains("line 2: unknown section [poool]"));
  CHECK_THAT(file_error("[pool.sub]\n"), Catch::Contains("unknown section [pool.sub]"));
  CHECK_THAT(file_error("[global]\n"), Catch::Contains("unknown section [global]"));
  CHECK_THAT(file_error("workers = 3\n"),
             Catch::StartsWith("workers: key outside any section"));
  CHECK_THAT(file_error("[pool]\nworkers = 3\nworkers = 4\n"),
             Catch::StartsWith("pool.workers: set twice in the file (also on line 2)"));
}

TEST_CASE("Malformed INI syntax is refused with the line", "[config]") {
  CHECK_THAT(file_error("[pool\nworkers = 3\n"),
             Catch::Contains("line 1: expected a section header"));
  CHECK_THAT(file_error("[pool]\nworkers 3\n"),
             Catch::StartsWith("pool.workers: expected '='"));
  CHECK_THAT(file_error("[pool]\nworkers = 3 4\n"),
             Catch::StartsWith("pool.workers: unexpected text \"4\""));
  CHECK_THAT(file_error("[log]\nfile = \"abc\n"),
             Catch::StartsWith("log.file: unterminated string"));
  CHECK_THAT(file_error("[log]\nfile = \"a\\qb\"\n"),
             Catch::StartsWith("log.file: unknown escape sequence \\q"));
  CHECK_THAT(file_error("[middleman]\napp-identifiers = [\"a\", \"b\"\n"),
             Catch::StartsWith("middleman.app-identifiers: unterminated list"));
  CHECK_THAT(file_error("[middleman]\napp-identifiers = [\"a\" \"b\"]\n"),
             Catch::StartsWith("middleman.app-identifiers: expected ',' or ']'"));
  CHECK_THAT(file_error("[middleman]\nheartbeat-interval =\n"),
             Catch::StartsWith("middleman.heartbeat-interval: missing value"));
  CHECK_THAT(file_error("[pool]\n= 3\n"),
             Catch::Contains("line 2: expected a [section]"));
  CHECK_THAT(file_error("[pool]\nworkers = {a = 1}\n"),
             Catch::StartsWith("pool.workers: maps"));
  CHECK_THAT(file_error(std::string(2 * 1024 * 1024, ';')),
             Catch::EndsWith("file larger than 1 MiB"));
}

TEST_CASE("Durations take the units ns, us, ms, s, min and h", "[config]") {
  auto timeout = [](const std::string& text) {
    return load({"--pool.request-timeout=" + text}).pool.request_timeout;
  };
  CHECK(timeout("7ns") == 7ns);
  CHECK(timeout("7us") == 7us);
  CHECK(timeout("7ms") == 7ms);
  CHECK(timeout("7s") == 7s);
  CHECK(timeout("7min") == 7min);
  CHECK(timeout("7h") == 7h);
  CHECK(timeout("+2s") == 2s);
  CHECK_THAT(error_of({"--pool.request-timeout=99999999999h"}),
             Catch::StartsWith("pool.request-timeout: expected a duration such as 10ms"));
  CHECK_THAT(error_of({"--pool.request-timeout=ms"}),
             Catch::StartsWith("pool.request-timeout: expected a duration such as 10ms"));
  temp_ini file{"[pool]\nrequest-timeout=1min;comment\ndrain-timeout = 90s # why\n"};
  auto cfg = load({file.arg()});
  CHECK(cfg.pool.request_timeout == 60s);
  CHECK(cfg.pool.drain_timeout == 90s);
}

TEST_CASE(
    "Quoted strings keep escapes and comment characters, bare words end at a "
    "comment",
    "[config]") {
  temp_ini file{
      "\xEF\xBB\xBF# leading comment\r\n"
      "[fault]  ; section comment\r\n"
      "hang-marker = \"a \\\"quoted\\\" ; not # a comment \\\\ end\" ; real comment\r\n"
      "  [model]\n"
      "\tpath=models/mini-lm # a comment\n"
      "kind = 'hash'\n"
      "[node]\n"
      "host = 10.0.0.1;comment\n"};
  auto cfg = load({file.arg()});
  CHECK(cfg.fault.hang_marker == "a \"quoted\" ; not # a comment \\ end");
  CHECK(cfg.model.path == "models/mini-lm");
  CHECK(cfg.model.kind == "hash");
  CHECK(cfg.node.host == "10.0.0.1");

  auto cli = load({"--fault.hang-marker=\"x \\\"y\\\"\"", "--model.path=/a b;c#d",
                   "--log.file=", "--node.host=4242"});
  CHECK(cli.fault.hang_marker == "x \"y\"");
  CHECK(cli.model.path == "/a b;c#d");  // no comments on the command line
  CHECK(cli.log.file.empty());
  CHECK(cli.node.host == "4242");
}

TEST_CASE("Booleans on the command line are bare flags or =true/=false", "[config]") {
  temp_ini off{"[log]\nconsole = false\n"};
  CHECK_FALSE(load({off.arg()}).log.console);
  CHECK(load({off.arg(), "--log.console"}).log.console);
  CHECK(load({off.arg(), "--log.console=true"}).log.console);
  CHECK_FALSE(load({"--log.console=false"}).log.console);
  CHECK_THAT(error_of({"--pool.workers"}),
             Catch::StartsWith("pool.workers: expected a value"));
  CHECK_THAT(error_of({"--log.console=on"}),
             Catch::StartsWith("log.console: expected true or false"));
}

TEST_CASE("CAF's own sections pass through to caf_args and CAF accepts them",
          "[config]") {
  temp_ini file{
      "[scheduler]\n"
      "max-threads = 3 ; comment\n"
      "[middleman]\n"
      "enable-automatic-connections = true\n"
      "attach-utility-actors = false\n"
      "app-identifiers = [ \"a\", ; first\n"
      "    \"b\",  # second\n"
      "]\n"
      "[logger]\n"
      "verbosity = 'trace'\n"
      "file-name = \"x y.log\"\n"};
  auto cfg = load({file.arg(), "--stream.desired-batch-complexity=75us"});
  CHECK(count_of(cfg.caf_args, "--scheduler.max-threads=3") == 1);
  CHECK(count_of(cfg.caf_args, "--middleman.enable-automatic-connections") == 1);
  CHECK_FALSE(has_prefix(cfg.caf_args, "--middleman.attach-utility-actors"));
  CHECK(count_of(cfg.caf_args, "--middleman.app-identifiers=[\"a\", \"b\"]") == 1);
  CHECK(count_of(cfg.caf_args, "--stream.desired-batch-complexity=75us") == 1);

  caf::actor_system_config caf_cfg;
  caf_parse(caf_cfg, cfg.caf_args);
  CHECK(caf::get_or(caf_cfg, "scheduler.max-threads", size_t{0}) == 3);
  CHECK(caf::get_or(caf_cfg, "middleman.enable-automatic-connections", false));
  CHECK(caf::get_or(caf_cfg, "middleman.app-identifiers", std::vector<std::string>{}) ==
        std::vector<std::string>{"a", "b"});
  CHECK(caf::get_or(caf_cfg, "logger.verbosity", caf::atom("none")) ==
        caf::atom("trace"));
  CHECK(caf::get_or(caf_cfg, "logger.file-name", std::string{}) == "x y.log");
  CHECK(caf::get_or(caf_cfg, "stream.desired-batch-complexity", caf::timespan{0}) ==
        75us);
}

TEST_CASE("A typo in one of CAF's sections is refused like one in ours", "[config]") {
  CHECK(error_of({"--scheduler.max-thread=2"}) ==
        "unknown key scheduler.max-thread (command line)");
  CHECK(error_of({"--middleman.heartbeat-intervall=1s"}) ==
        "unknown key middleman.heartbeat-intervall (command line)");
  CHECK_THAT(file_error("[scheduler]\nmax-thread = 2\n"),
             Catch::Contains("line 2: unknown key scheduler.max-thread"));
  CHECK_THAT(file_error("[openssl]\ncertificat = \"a.pem\"\n"),
             Catch::Contains("line 2: unknown key openssl.certificat"));
  // Keys CAF knows, in each of its sections, still pass.
  auto cfg =
      load({"--scheduler.max-threads=2", "--work-stealing.aggressive-poll-attempts=10",
            "--openssl.cafile=ca.pem", "--logger.verbosity=quiet"});
  CHECK(count_of(cfg.caf_args, "--scheduler.max-threads=2") == 1);
  CHECK(count_of(cfg.caf_args, "--openssl.cafile=ca.pem") == 1);
}

TEST_CASE("Middleman heartbeat and connection timeout default to 1s and 10s unless set",
          "[config]") {
  SECTION("defaults are accepted by CAF") {
    auto cfg = load({});
    caf::actor_system_config caf_cfg;
    caf_parse(caf_cfg, cfg.caf_args);
    CHECK(caf::get_or(caf_cfg, "middleman.heartbeat-interval", caf::timespan{0}) == 1s);
    CHECK(caf::get_or(caf_cfg, "middleman.connection-timeout", caf::timespan{0}) == 10s);
  }
  SECTION("a user value replaces the default") {
    temp_ini file{"[middleman]\nconnection-timeout = 30s\n"};
    auto cfg = load({file.arg(), "--middleman.heartbeat-interval=2s"});
    CHECK(count_of(cfg.caf_args, "--middleman.heartbeat-interval=1s") == 0);
    CHECK(count_of(cfg.caf_args, "--middleman.connection-timeout=10s") == 0);
    caf::actor_system_config caf_cfg;
    caf_parse(caf_cfg, cfg.caf_args);
    CHECK(caf::get_or(caf_cfg, "middleman.heartbeat-interval", caf::timespan{0}) == 2s);
    CHECK(caf::get_or(caf_cfg, "middleman.connection-timeout", caf::timespan{0}) == 30s);
  }
}

TEST_CASE(
    "The scheduler does not poll while idle unless told to: node and client "
    "defaults, each replaced by a user value",
    "[config]") {
  SECTION("node defaults, accepted by CAF") {
    auto cfg = load({});
    caf::actor_system_config caf_cfg;
    caf_parse(caf_cfg, cfg.caf_args);
    CHECK(caf::get_or(caf_cfg, "work-stealing.moderate-poll-attempts", size_t{500}) == 0);
    CHECK(caf::get_or(caf_cfg, "work-stealing.relaxed-sleep-duration",
                      caf::timespan{0}) == 100ms);
  }
  SECTION("a user value replaces the node's default") {
    temp_ini file{"[work-stealing]\nrelaxed-sleep-duration = 10ms\n"};
    auto cfg = load({file.arg(), "--work-stealing.moderate-poll-attempts=500"});
    CHECK(count_of(cfg.caf_args, "--work-stealing.moderate-poll-attempts=0") == 0);
    CHECK(count_of(cfg.caf_args, "--work-stealing.relaxed-sleep-duration=100ms") == 0);
    caf::actor_system_config caf_cfg;
    caf_parse(caf_cfg, cfg.caf_args);
    CHECK(caf::get_or(caf_cfg, "work-stealing.moderate-poll-attempts", size_t{0}) == 500);
    CHECK(caf::get_or(caf_cfg, "work-stealing.relaxed-sleep-duration",
                      caf::timespan{0}) == 10ms);
  }
  SECTION("pool::client's defaults, and a later option wins as in client_options") {
    auto args = pool::client_caf_defaults();
    CHECK(count_of(args, "--scheduler.max-threads=2") == 1);
    CHECK(count_of(args, "--middleman.heartbeat-interval=1s") == 1);
    for (const auto& option : pool::scheduler_caf_defaults())
      CHECK(count_of(args, option) == 1);
    caf::actor_system_config caf_cfg;
    args.emplace_back("--work-stealing.moderate-poll-attempts=7");
    caf_parse(caf_cfg, args);
    CHECK(caf::get_or(caf_cfg, "work-stealing.moderate-poll-attempts", size_t{0}) == 7);
    CHECK(caf::get_or(caf_cfg, "work-stealing.relaxed-sleep-duration",
                      caf::timespan{0}) == 100ms);
  }
}

TEST_CASE("--help and -h set help", "[config]") {
  for (const auto& flag : {"--help", "-h"}) {
    auto result = pool::parse_node_args({"--pool.workers=4", flag, "--not.a-key"});
    REQUIRE(result);
    CHECK(result->help);
  }
  auto plain = pool::parse_node_args({});
  REQUIRE(plain);
  CHECK_FALSE(plain->help);
}

TEST_CASE("Usage lists every key with its default", "[config]") {
  auto usage = pool::node_usage("embedpool-node");
  CHECK_THAT(usage, Catch::StartsWith("Usage: embedpool-node"));
  for (const auto& key : all_keys) {
    INFO(key);
    CHECK_THAT(usage, Catch::Contains("--" + key + "="));
  }
  // Defaults as declared in config.hpp.
  CHECK_THAT(usage, Catch::Contains("--node.host=127.0.0.1\n"));
  CHECK_THAT(usage, Catch::Contains("--pool.workers=2\n"));
  CHECK_THAT(usage, Catch::Contains("--pool.overload-policy=wait\n"));
  CHECK_THAT(usage, Catch::Contains("--pool.request-timeout=30s\n"));
  CHECK_THAT(usage, Catch::Contains("--pool.restart-backoff=100ms\n"));
  CHECK_THAT(usage, Catch::Contains("--pool.restart-window=1min\n"));
  CHECK_THAT(usage, Catch::Contains("--log.console=true\n"));
  CHECK_THAT(usage, Catch::Contains("--model.path=\"\"\n"));
  CHECK_THAT(usage, Catch::Contains("--fault.compute-delay=0s\n"));
  CHECK_THAT(usage, Catch::Contains("--middleman.heartbeat-interval=1s"));
}

TEST_CASE("Mangled configuration files are answered with a value or an error",
          "[config]") {
  std::ifstream in{source_dir + "/conf/embedpool.ini", std::ios::binary};
  REQUIRE(in);
  // The shipped file without its comment lines, so that edits hit values.
  std::string original;
  for (std::string line; std::getline(in, line);)
    if (!line.empty() && line[0] != ';')
      original += line + "\n";
  const char alphabet_chars[] = "[]=\"'\\;#,\n \t{}.-0123456789smhnu\0\xff";
  const std::string alphabet{alphabet_chars, sizeof(alphabet_chars) - 1};
  std::mt19937 rng{20240611};
  size_t errors = 0;
  constexpr int rounds = 300;
  for (int round = 0; round < rounds; ++round) {
    auto text = original;
    std::uniform_int_distribution<size_t> edits{1, 8};
    for (size_t i = edits(rng); i > 0 && !text.empty(); --i) {
      std::uniform_int_distribution<size_t> at{0, text.size() - 1};
      std::uniform_int_distribution<size_t> pick{0, alphabet.size() - 1};
      switch (rng() % 3) {
        case 0:
          text[at(rng)] = alphabet[pick(rng)];
          break;
        case 1:
          text.insert(at(rng), 1, alphabet[pick(rng)]);
          break;
        default:
          text.erase(at(rng), 1 + rng() % 16);
      }
    }
    temp_ini file{text};
    auto result = pool::parse_node_args({file.arg()});
    if (!result) {
      ++errors;
      CHECK(pool::pool_code(result.error()) == pool::pool_errc::invalid_input);
      CHECK_FALSE(pool::error_message(result.error()).empty());
      continue;
    }
    // Whatever was accepted satisfies the rules.
    const auto& cfg = result->config;
    CHECK(cfg.pool.workers >= 1);
    CHECK(cfg.pool.workers <= 256);
    CHECK(cfg.heartbeat.timeout > cfg.heartbeat.interval);
    CHECK(cfg.pool.restart_backoff_max >= cfg.pool.restart_backoff);
    CHECK(cfg.pool.request_timeout > caf::timespan{0});
    CHECK((cfg.model.kind == "hash" || cfg.model.kind == "bert"));
  }
  // Most mutations of a file full of values must be noticed.
  CHECK(errors > rounds / 2);
}

TEST_CASE("node.join takes HOST:PORT entries as one comma-separated string or a list",
          "[config]") {
  auto from_cli = pool::parse_node_args({"--node.role=worker", "--node.join=a:1, b:2"});
  REQUIRE(from_cli);
  CHECK(from_cli->config.node.role == "worker");
  CHECK(from_cli->config.node.join == std::vector<std::string>{"a:1", "b:2"});
  temp_ini file{"[node]\nrole = worker\njoin = [\"h1:4242\", \"h2:4243\"]\n"};
  auto from_file = pool::parse_node_args({"--config-file=" + file.path()});
  REQUIRE(from_file);
  CHECK(from_file->config.node.join == std::vector<std::string>{"h1:4242", "h2:4243"});
  auto bad = pool::parse_node_args({"--node.role=boss"});
  REQUIRE_FALSE(bad);
  CHECK_THAT(pool::describe(bad.error()), Catch::Contains("node.role"));
}

TEST_CASE("HOST:PORT endpoints parse, and bad ones name the key", "[config]") {
  auto plain = pool::parse_host_port("10.0.0.7:4242", "node.join");
  REQUIRE(plain);
  CHECK(plain->first == "10.0.0.7");
  CHECK(plain->second == 4242);
  auto v6 = pool::parse_host_port("[::1]:99", "node.join");
  REQUIRE(v6);
  CHECK(v6->first == "::1");
  for (auto bad : {"nohost", ":4242", "host:", "host:0", "host:70000", "host:12x"}) {
    INFO(bad);
    auto r = pool::parse_host_port(bad, "node.join");
    REQUIRE_FALSE(r);
    CHECK_THAT(pool::describe(r.error()), Catch::Contains("node.join"));
  }
}

TEST_CASE("Worker limits default to pool.workers and refuse min above max", "[config]") {
  auto limits = [](const std::vector<std::string>& args) {
    auto cfg = load(args);
    auto result = pool::resolve_worker_limits(cfg.pool);
    REQUIRE(result);
    return std::make_tuple(result->min, result->initial, result->max);
  };
  CHECK(limits({}) == std::make_tuple(2u, 2u, 2u));
  CHECK(limits({"--pool.workers=5"}) == std::make_tuple(5u, 5u, 5u));
  CHECK(limits({"--pool.max-workers=8"}) == std::make_tuple(2u, 2u, 8u));
  CHECK(limits({"--pool.max-workers=1"}) == std::make_tuple(1u, 1u, 1u));
  CHECK(limits({"--pool.min-workers=4"}) == std::make_tuple(4u, 4u, 4u));
  CHECK(limits({"--pool.min-workers=1", "--pool.max-workers=6"}) ==
        std::make_tuple(1u, 2u, 6u));
  CHECK(limits({"--pool.workers=9", "--pool.min-workers=1", "--pool.max-workers=6"}) ==
        std::make_tuple(1u, 6u, 6u));
  auto bad = pool::parse_node_args({"--pool.min-workers=5", "--pool.max-workers=3"});
  REQUIRE_FALSE(bad);
  CHECK_THAT(pool::error_message(bad.error()),
             Catch::Contains("pool.min-workers: expected at most pool.max-workers (3)"));
}

TEST_CASE("Named models come from models.names and their own sections",
          "[config][models]") {
  temp_ini file{R"(
[pool]
workers = 3
pending-capacity = 7
[model]
name = "main"
[models]
names = ["small", "big"]
[models.small]
kind = hash
dim = 64
[models.big]
kind = bert
path = "models/minilm"
workers = 1
max-workers = 4
)"};
  SECTION("each model takes its section, then [pool] and the [model] defaults") {
    auto cfg = load({file.arg(), "--models.small.embed-queue-capacity=9"});
    CHECK(pool::default_model_name(cfg) == "main");
    REQUIRE(cfg.models.size() == 2);
    auto& small = cfg.models[0];
    CHECK(small.name == "small");
    CHECK(small.model.name == "small");
    CHECK(small.model.kind == "hash");
    CHECK(small.model.dim == 64);
    CHECK(small.model.hash_buckets == pool::model_config{}.hash_buckets);
    CHECK(small.pool.workers == 3);
    CHECK(small.pool.pending_capacity == 7);
    CHECK(small.pool.embed_queue_capacity == 9);
    auto& big = cfg.models[1];
    CHECK(big.model.kind == "bert");
    CHECK(big.model.path == "models/minilm");
    CHECK(big.pool.workers == 1);
    CHECK(big.pool.max_workers == 4);
  }
  SECTION("[pool] values given on the command line reach the models too") {
    auto cfg = load({file.arg(), "--pool.pending-capacity=11"});
    CHECK(cfg.models[0].pool.pending_capacity == 11);
  }
  SECTION("the default model is named by model.name, else later by its embedder") {
    CHECK(pool::default_model_name(load({})).empty());
    CHECK(pool::default_model_name(load({"--model.name=x"})) == "x");
  }
}

TEST_CASE("Bad named-model settings are refused naming the key", "[config][models]") {
  auto refused = [](const std::vector<std::string>& args) {
    auto result = pool::parse_node_args(args);
    REQUIRE_FALSE(result);
    return pool::error_message(result.error());
  };
  CHECK_THAT(refused({"--models.small.kind=hash"}),
             Catch::Contains("models.small.kind: model \"small\" is not listed in "
                             "models.names"));
  CHECK_THAT(refused({"--models.names=a", "--models.a.colour=red"}),
             Catch::Contains("unknown key models.a.colour"));
  CHECK_THAT(refused({"--models.names=a", "--models.a.dim=0"}),
             Catch::Contains("models.a.dim: expected an integer in [1, 4096]"));
  CHECK_THAT(refused({"--models.names=a,a"}), Catch::Contains("listed twice"));
  CHECK_THAT(refused({"--model.name=main", "--models.names=main"}),
             Catch::Contains("the default model's name"));
  CHECK_THAT(refused({"--models.names=a b"}), Catch::Contains("models.names: expected"));
  CHECK_THAT(refused({"--models.names=a", "--models.a.kind=bert"}),
             Catch::Contains("models.a.path: required when models.a.kind = bert"));
  CHECK_THAT(
      refused(
          {"--models.names=a", "--models.a.min-workers=5", "--models.a.max-workers=2"}),
      Catch::Contains("models.a.min-workers: expected at most models.a.max-workers"));
  temp_ini unlisted{"[models.ghost]\ndim = 8\n"};
  CHECK_THAT(refused({unlisted.arg()}), Catch::Contains("not listed in models.names"));
}
