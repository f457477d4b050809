// The metrics registry: histogram buckets and rendering, and the supervisor's
// histograms against its ledger on CAF's test coordinator (simulated time).
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "actor_fixture.hpp"
#include "metrics.hpp"
#include "pool/version.hpp"

using namespace pool;
using namespace pool::test;
using namespace std::chrono_literals;

namespace {

/// The value of the sample `series` (name and labels) in an exposition, or -1.
double sample_value(const std::string& text, const std::string& series) {
  auto pos = text.find(series + " ");
  if (pos == std::string::npos || (pos > 0 && text[pos - 1] != '\n'))
    return -1;
  return std::stod(text.substr(pos + series.size() + 1));
}

}  // namespace

TEST_CASE("a histogram puts a value into the first bucket whose bound it does not exceed",
          "[metrics]") {
  detail::histogram h{{10, 100}, 1.0};
  for (uint64_t v : {0, 10, 11, 100, 1000})
    h.observe(v);
  CHECK(h.count() == 5);
  std::string out;
  h.render(out, "x", "model=\"m\"");
  CHECK(out ==
        "x_bucket{model=\"m\",le=\"10\"} 2\n"
        "x_bucket{model=\"m\",le=\"100\"} 4\n"
        "x_bucket{model=\"m\",le=\"+Inf\"} 5\n"
        "x_sum{model=\"m\"} 1121\n"
        "x_count{model=\"m\"} 5\n");
}

TEST_CASE("a duration histogram renders microseconds as seconds", "[metrics]") {
  detail::histogram h{{500, 250000}, 1e6};
  h.observe(200000);
  std::string out;
  h.render(out, "t", "model=\"m\"");
  CHECK(sample_value(out, "t_bucket{model=\"m\",le=\"0.0005\"}") == 0);
  CHECK(sample_value(out, "t_bucket{model=\"m\",le=\"0.25\"}") == 1);
  CHECK(sample_value(out, "t_sum{model=\"m\"}") == Approx(0.2));
}

TEST_CASE("the registry keeps one metrics object per model", "[metrics]") {
  detail::metrics_registry reg;
  auto a = reg.model("a");
  CHECK(reg.model("a") == a);
  CHECK(reg.model("b") != a);
  CHECK(reg.models().size() == 2);
  a->count_reply(0);
  a->count_reply(static_cast<uint8_t>(pool_errc::overloaded));
  a->count_reply(200);  // another category
  CHECK(a->replies[0] == 1);
  CHECK(a->replies[static_cast<size_t>(pool_errc::overloaded)] == 1);
  CHECK(a->replies[8] == 1);
}

TEST_CASE_METHOD(actor_fixture, "the supervisor's histograms match its ledger",
                 "[metrics][supervisor]") {
  auto registry = std::make_shared<detail::metrics_registry>();
  auto c = fake_config(1);  // 3 embed credits, 4 pending places
  c.pool.request_timeout = 1s;
  c.heartbeat.timeout = 10s;  // the slow worker is not stuck
  c.metrics = registry;
  start(c);
  std::vector<std::shared_ptr<answer>> as;
  for (int i = 0; i < 8; ++i)
    as.push_back(embed("x"));
  sched.run();  // 3 dispatched at once, 4 parked, 1 refused
  auto w = current_workers().at(0);
  advance(200ms);
  release(w);   // 3 complete after 200 ms; 3 parked ones are dispatched
  advance(1s);  // the 3 dispatched and the 1 still parked expire
  auto st = status();
  REQUIRE(ledger_balances(st));
  CHECK(st.ledger.accepted == 7);
  CHECK(st.ledger.completed == 3);
  CHECK(st.ledger.expired == 4);
  CHECK(st.ledger.rejected == 1);
  auto m = registry->model("fake");
  CHECK(m->end_to_end.count() ==
        st.ledger.completed + st.ledger.failed + st.ledger.expired);
  CHECK(m->queue_wait.count() == 6);  // every accepted request that reached a worker
  CHECK(m->replies[0] == 3);
  CHECK(m->replies[static_cast<size_t>(pool_errc::overloaded)] == 1);
  CHECK(m->replies[static_cast<size_t>(pool_errc::deadline_exceeded)] == 4);
  auto text = detail::render_prometheus(*registry, {st}, detail::node_gauges{});
  // Simulated time: 3 dispatched at once, 3 after 200 ms of waiting.
  CHECK(sample_value(
            text, "embedpool_queue_wait_seconds_bucket{model=\"fake\",le=\"0.0005\"}") ==
        3);
  CHECK(sample_value(text,
                     "embedpool_queue_wait_seconds_bucket{model=\"fake\",le=\"0.25\"}") ==
        6);
  CHECK(sample_value(text, "embedpool_request_duration_seconds_count{model=\"fake\"}") ==
        7);
  CHECK(sample_value(
            text, "embedpool_requests_total{model=\"fake\",outcome=\"expired\"}") == 4);
}

namespace {

/// One parsed exposition: HELP and TYPE lines by family, samples in order.
struct exposition {
  struct series {
    std::string name;
    std::string labels;  // without braces
    double value = 0;
  };
  std::map<std::string, int> helps;
  std::map<std::string, std::string> types;
  std::map<std::string, int> type_lines;
  std::vector<series> samples;
  std::vector<std::string> problems;

  /// The family of a sample name: a histogram's _bucket, _sum and _count
  /// belong to the histogram.
  std::string family_of(const std::string& name) const {
    for (const char* suffix : {"_bucket", "_sum", "_count"}) {
      std::string s{suffix};
      if (name.size() > s.size() &&
          name.compare(name.size() - s.size(), s.size(), s) == 0) {
        auto base = name.substr(0, name.size() - s.size());
        auto t = types.find(base);
        if (t != types.end() && t->second == "histogram")
          return base;
      }
    }
    return name;
  }

  std::vector<series> named(const std::string& name) const {
    std::vector<series> result;
    for (const auto& s : samples)
      if (s.name == name)
        result.push_back(s);
    return result;
  }

  static exposition parse(const std::string& text) {
    exposition e;
    std::set<std::string> keys;
    std::istringstream in{text};
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("# HELP ", 0) == 0) {
        auto name = line.substr(7, line.find(' ', 7) - 7);
        ++e.helps[name];
      } else if (line.rfind("# TYPE ", 0) == 0) {
        auto rest = line.substr(7);
        auto sp = rest.find(' ');
        e.types[rest.substr(0, sp)] = rest.substr(sp + 1);
        ++e.type_lines[rest.substr(0, sp)];
      } else if (!line.empty()) {
        series s;
        auto brace = line.find('{');
        auto sp = line.rfind(' ');
        if (sp == std::string::npos) {
          e.problems.push_back("no value: " + line);
          continue;
        }
        if (brace != std::string::npos && brace < sp) {
          s.name = line.substr(0, brace);
          auto close = line.rfind('}', sp);
          s.labels = line.substr(brace + 1, close - brace - 1);
        } else {
          s.name = line.substr(0, sp);
        }
        s.value = std::stod(line.substr(sp + 1));
        auto fam = e.family_of(s.name);
        if (e.types.count(fam) == 0)
          e.problems.push_back("sample before its TYPE line: " + line);
        if (!keys.insert(s.name + "{" + s.labels + "}").second)
          e.problems.push_back("duplicate series: " + line);
        e.samples.push_back(std::move(s));
      }
    }
    for (const auto& [name, n] : e.type_lines)
      if (n != 1 || e.helps[name] != 1)
        e.problems.push_back("family " + name + " has " + std::to_string(n) +
                             " TYPE and " + std::to_string(e.helps[name]) +
                             " HELP lines");
    for (const auto& [name, n] : e.helps)
      if (e.type_lines.count(name) == 0)
        e.problems.push_back("HELP without TYPE: " + name);
    return e;
  }
};

pool_status model_status(const std::string& model) {
  pool_status st;
  st.model = model;
  st.memory_budget_bytes = 1000;
  st.memory_used_bytes = 600;  // the node's budget: the same for every model
  st.memory_pressure = 0.6;
  uint32_t id = 0;
  for (const char* state : worker_states) {
    worker_status w;
    w.id = id++;
    w.state = state;
    st.workers.push_back(w);
  }
  return st;
}

}  // namespace

TEST_CASE(
    "node-wide series appear once without a model label, each family with HELP "
    "and TYPE",
    "[metrics]") {
  detail::metrics_registry reg;
  reg.model("a")->input_tokens.observe(7);
  reg.model("b")->input_tokens.observe(300);
  reg.count_http(detail::http_endpoint::embeddings, 200);
  reg.count_http(detail::http_endpoint::embeddings, 200);
  reg.count_http(detail::http_endpoint::metrics, 200);
  reg.count_http(detail::http_endpoint::tei_embed, 418);  // an unlisted status
  auto node = detail::read_node_gauges();
  auto text =
      detail::render_prometheus(reg, {model_status("a"), model_status("b")}, node);
  INFO(text);
  auto e = exposition::parse(text);
  CHECK(e.problems == std::vector<std::string>{});
  const std::vector<std::string> node_wide = {"embedpool_memory_budget_bytes",
                                              "embedpool_memory_used_bytes",
                                              "embedpool_memory_pressure",
                                              "embedpool_resident_memory_bytes",
                                              "embedpool_build_info",
                                              "process_cpu_seconds_total",
                                              "process_resident_memory_bytes",
                                              "process_virtual_memory_bytes",
                                              "process_open_fds",
                                              "process_max_fds",
                                              "process_start_time_seconds"};
  for (const auto& name : node_wide) {
    INFO(name);
    auto s = e.named(name);
    REQUIRE(s.size() == 1);
    CHECK(s.front().labels.find("model=") == std::string::npos);
  }
  // sum() over a node-wide family is the node's value, not one per model.
  CHECK(e.named("embedpool_memory_used_bytes").front().value == 600);
  auto http = e.named("embedpool_http_responses_total");
  REQUIRE(http.size() == 3);
  for (const auto& s : http)
    CHECK(s.labels.find("model=") == std::string::npos);
  CHECK(http[0].labels == "endpoint=\"/v1/embeddings\",status=\"200\"");
  CHECK(http[0].value == 2);
  CHECK(http[1].labels == "endpoint=\"/embed\",status=\"other\"");
  CHECK(http[2].labels == "endpoint=\"/metrics\",status=\"200\"");
  // Node-wide families by reason: each reason once, no model label.
  auto dropped = e.named("embedpool_peer_messages_dropped_total");
  REQUIRE(dropped.size() == 3);
  CHECK(dropped[0].labels == "reason=\"foreign\"");
  CHECK(dropped[1].labels == "reason=\"inbox_full\"");
  CHECK(dropped[2].labels == "reason=\"unread_replies\"");
  auto closed = e.named("embedpool_peer_connections_closed_total");
  REQUIRE(closed.size() == 2);
  CHECK(closed[0].labels == "reason=\"unread_replies\"");
  CHECK(closed[1].labels == "reason=\"dropped_messages\"");
  // Every other series is per model.
  for (const auto& s : e.samples) {
    auto fam = e.family_of(s.name);
    if (fam == "embedpool_http_responses_total" ||
        fam == "embedpool_peer_messages_dropped_total" ||
        fam == "embedpool_peer_connections_closed_total" ||
        std::find(node_wide.begin(), node_wide.end(), fam) != node_wide.end())
      continue;
    INFO(s.name << "{" << s.labels << "}");
    CHECK(s.labels.rfind("model=", 0) == 0);
  }
  // The build and the process.
  CHECK(e.named("embedpool_build_info").front().labels ==
        std::string{"version=\""} + project_version() + "\",revision=\"" +
            git_revision() + "\"");
  CHECK(e.named("embedpool_build_info").front().value == 1);
  CHECK(e.types["process_cpu_seconds_total"] == "counter");
  CHECK(e.named("process_resident_memory_bytes").front().value > 0);
  CHECK(e.named("process_resident_memory_bytes").front().value ==
        e.named("embedpool_resident_memory_bytes").front().value);
  CHECK(e.named("process_virtual_memory_bytes").front().value >=
        e.named("process_resident_memory_bytes").front().value);
  auto fds = e.named("process_open_fds").front().value;
  CHECK(fds >= 3);  // at least stdin, stdout, stderr
  CHECK(e.named("process_max_fds").front().value >= fds);
  auto now =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
          .count();
  auto started = e.named("process_start_time_seconds").front().value;
  CHECK(started <= now + 1);
  CHECK(started > now - 24 * 3600);  // a test binary started within the last day
  CHECK(e.named("process_cpu_seconds_total").front().value >= 0);
  // Every worker state the supervisor reports has a series per model; none
  // that it never reports.
  for (const char* state : worker_states)
    for (const char* model : {"a", "b"})
      CHECK(sample_value(text, std::string{"embedpool_workers{model=\""} + model +
                                   "\",state=\"" + state + "\"}") == 1);
  CHECK(text.find("state=\"starting\"") == std::string::npos);
  CHECK(sample_value(text, "embedpool_workers{model=\"a\",state=\"evicted\"}") == 1);
  // Input lengths per model.
  CHECK(e.types["embedpool_input_tokens"] == "histogram");
  CHECK(sample_value(text, "embedpool_input_tokens_bucket{model=\"a\",le=\"8\"}") == 1);
  CHECK(sample_value(text, "embedpool_input_tokens_bucket{model=\"b\",le=\"256\"}") == 0);
  CHECK(sample_value(text, "embedpool_input_tokens_bucket{model=\"b\",le=\"512\"}") == 1);
  CHECK(sample_value(text, "embedpool_input_tokens_sum{model=\"b\"}") == 300);
}
