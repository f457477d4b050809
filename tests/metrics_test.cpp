// The metrics registry: histogram buckets and rendering, and the supervisor's
// histograms against its ledger on CAF's test coordinator (simulated time).
#include <catch2/catch.hpp>

#include "actor_fixture.hpp"
#include "metrics.hpp"

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
