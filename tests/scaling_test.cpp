// Deterministic tests of adaptive workers (scale-up under a sustained queue,
// eviction after the idle cooldown, min/max limits) and of the memory budget,
// on CAF's test coordinator with fake workers.
#include <catch2/catch.hpp>

#include "actor_fixture.hpp"
#include "memory_budget.hpp"
#include "pool/embedder.hpp"

using namespace pool;
using namespace pool::test;
using namespace std::chrono_literals;

namespace {

/// An embedder that only reports a footprint: 1000 bytes of weights and 100
/// bytes per text of a call.
class footprint_embedder : public embedder {
 public:
  std::string name() const override { return "footprint"; }
  size_t dim() const override { return 1; }
  void embed(const std::vector<std::string_view>& texts, const std::string&,
             float* out) const override {
    std::fill(out, out + texts.size(), 1.0f);
  }
  size_t weights_bytes() const override { return 1000; }
  size_t worker_bytes(uint32_t texts) const override { return size_t{texts} * 100; }
};

size_t count_state(const pool_status& st, const std::string& state) {
  return static_cast<size_t>(
      std::count_if(st.workers.begin(), st.workers.end(),
                    [&](const worker_status& w) { return w.state == state; }));
}

/// Lets every current worker answer what it holds, `rounds` times.
void release_all(actor_fixture& f, int rounds) {
  for (int round = 0; round < rounds; ++round)
    for (auto& w : f.current_workers())
      f.release(w);
}

bool all_ok(const std::vector<std::shared_ptr<answer>>& as) {
  return std::all_of(as.begin(), as.end(), [](const auto& a) { return a->ok(); });
}

}  // namespace

TEST_CASE_METHOD(actor_fixture,
                 "a sustained queue depth adds one worker per window, up to the maximum",
                 "[supervisor][scaling]") {
  auto c = fake_config(1);
  c.pool.min_workers = 1;
  c.pool.max_workers = 3;
  c.pool.scale_up_queue_depth = 2;
  c.pool.scale_up_window = 500ms;
  c.pool.pending_capacity = 20;
  c.pool.request_timeout = 60s;
  start(c);
  std::vector<std::shared_ptr<answer>> as;
  for (int i = 0; i < 12; ++i)
    as.push_back(embed("t" + std::to_string(i)));
  sched.run();
  auto st = status();
  CHECK(st.min_workers == 1);
  CHECK(st.max_workers == 3);
  CHECK(st.pending == 9);
  advance(300ms);
  CHECK(count_state(status(), "ready") == 1);  // above, but not for a window yet
  advance(400ms);
  st = status();
  CHECK(count_state(st, "ready") == 2);
  CHECK(st.workers_spawned == 2);
  CHECK(st.pending == 6);  // the new worker took work at once
  advance(600ms);
  CHECK(count_state(status(), "ready") == 3);
  advance(3s);  // still above the threshold, but at the maximum
  st = status();
  CHECK(count_state(st, "ready") == 3);
  CHECK(st.workers.size() == 3);
  CHECK(st.workers_spawned == 3);
  for (auto& w : current_workers())
    CHECK(w->max_held <= 3);
  release_all(*this, 4);
  CHECK(all_ok(as));
  st = status();
  CHECK(st.ledger.completed == 12);
  CHECK(ledger_balances(st));
}

TEST_CASE_METHOD(actor_fixture, "a queue depth at or below the threshold adds no worker",
                 "[supervisor][scaling]") {
  auto c = fake_config(1);
  c.pool.max_workers = 4;
  c.pool.scale_up_queue_depth = 3;
  c.pool.scale_up_window = 200ms;
  start(c);
  auto a = embed("x");
  auto b = embed("y");
  auto d = embed("z");  // depth 3 == threshold
  advance(2s);
  auto st = status();
  CHECK(st.workers.size() == 1);
  CHECK(st.workers_spawned == 1);
  release(current_workers().at(0));
  CHECK((a->ok() && b->ok() && d->ok()));
}

TEST_CASE_METHOD(actor_fixture,
                 "idle workers are evicted after the cooldown, never below the minimum",
                 "[supervisor][scaling]") {
  auto c = fake_config(3);
  c.pool.min_workers = 1;
  c.pool.idle_cooldown = 1s;
  c.pool.scale_up_queue_depth = 100;  // no scale-up in this test
  c.pool.request_timeout = 60s;
  start(c);
  auto held = embed("kept busy");
  sched.run();
  auto workers = current_workers();
  REQUIRE(workers.size() == 3);
  auto busy = std::find_if(workers.begin(), workers.end(),
                           [](const auto& w) { return !w->held.empty(); });
  REQUIRE(busy != workers.end());
  advance(800ms);
  CHECK(count_state(status(), "ready") == 3);  // not idle long enough yet
  advance(400ms);
  auto st = status();
  CHECK(count_state(st, "evicted") == 2);
  CHECK(count_state(st, "ready") == 1);
  CHECK(st.workers_evicted == 2);
  CHECK(st.workers.at((*busy)->slot).state == "ready");  // it holds work
  CHECK(held->count == 0);
  {
    release(*busy);
    CHECK(held->ok());
    advance(3s);
    st = status();
    CHECK(count_state(st, "ready") == 1);
    CHECK(st.workers_evicted == 2);
    auto again = embed("served by the last worker");
    sched.run();
    release(*busy);
    CHECK(again->ok());
    CHECK(ledger_balances(status()));
  }
}

TEST_CASE_METHOD(actor_fixture, "evicted slots are reused when the pool grows again",
                 "[supervisor][scaling]") {
  auto c = fake_config(2);
  c.pool.min_workers = 1;
  c.pool.max_workers = 2;
  c.pool.idle_cooldown = 500ms;
  c.pool.scale_up_queue_depth = 2;
  c.pool.scale_up_window = 300ms;
  c.pool.pending_capacity = 20;
  c.pool.request_timeout = 60s;
  start(c);
  advance(700ms);
  auto st = status();
  CHECK(count_state(st, "evicted") == 1);
  std::vector<std::shared_ptr<answer>> as;
  for (int i = 0; i < 8; ++i)
    as.push_back(embed("t" + std::to_string(i)));
  advance(500ms);
  st = status();
  CHECK(st.workers.size() == 2);  // the evicted slot came back, no new slot
  CHECK(count_state(st, "ready") == 2);
  CHECK(st.workers_spawned == 3);
  release_all(*this, 4);
  CHECK(all_ok(as));
  CHECK(ledger_balances(status()));
}

TEST_CASE_METHOD(actor_fixture, "a spawn that would pass the memory budget is refused",
                 "[supervisor][budget]") {
  footprint_embedder model;
  const uint32_t micro_batch = 4;
  const uint64_t weights = model.weights_bytes();
  const uint64_t per_worker = model.worker_bytes(micro_batch);
  REQUIRE(per_worker == 400);
  // Room for the weights and two workers, one byte short of a third.
  const uint64_t limit = weights + 3 * per_worker - 1;
  auto budget = std::make_shared<detail::memory_budget>(limit);
  auto c = fake_config(1);
  c.pool.micro_batch_texts = micro_batch;
  c.pool.min_workers = 1;
  c.pool.max_workers = 4;
  c.pool.scale_up_queue_depth = 1;
  c.pool.scale_up_window = 200ms;
  c.pool.pending_capacity = 50;
  c.pool.request_timeout = 60s;
  c.weights_bytes = weights;
  c.worker_bytes = per_worker;
  c.budget = budget;
  start(c);
  auto st = status();
  CHECK(st.memory_budget_bytes == limit);
  CHECK(st.memory_used_bytes == weights + per_worker);
  std::vector<std::shared_ptr<answer>> as;
  for (int i = 0; i < 30; ++i)
    as.push_back(embed("t" + std::to_string(i)));
  advance(2s);
  st = status();
  CHECK(count_state(st, "ready") == 2);  // the third would pass the budget
  CHECK(st.workers_spawned == 2);
  CHECK(st.memory_used_bytes == weights + 2 * per_worker);
  CHECK(budget->used() == weights + 2 * per_worker);
  CHECK(st.memory_pressure == Approx(double(weights + 2 * per_worker) / double(limit)));
  SECTION("a restart keeps the slot's reservation") {
    caf::anon_send(current_workers().at(0)->handle, crash_atom::value);
    advance(1s);
    st = status();
    CHECK(st.restarts == 1);
    CHECK(count_state(st, "ready") == 2);
    CHECK(st.memory_used_bytes == weights + 2 * per_worker);
  }
  release_all(*this, 12);
  CHECK(all_ok(as));
  CHECK(ledger_balances(status()));
  SECTION("the supervisor gives everything back when it stops") {
    caf::anon_send_exit(supervisor, caf::exit_reason::kill);
    supervisor = nullptr;
    sched.run();
    CHECK(budget->used() == 0);
  }
}

TEST_CASE_METHOD(actor_fixture,
                 "workers above the minimum start only within the memory budget",
                 "[supervisor][budget]") {
  auto budget = std::make_shared<detail::memory_budget>(1000 + 2 * 400);
  auto c = fake_config(3);
  c.pool.min_workers = 1;
  c.weights_bytes = 1000;
  c.worker_bytes = 400;
  c.budget = budget;
  start(c);
  auto st = status();
  CHECK(st.workers.size() == 2);
  CHECK(st.memory_used_bytes == 1000 + 2 * 400);
  CHECK(st.memory_pressure == Approx(1.0));
}

TEST_CASE_METHOD(actor_fixture, "without min and max a pool keeps pool.workers workers",
                 "[supervisor][scaling]") {
  auto c = fake_config(2);
  c.pool.idle_cooldown = 100ms;
  c.pool.scale_up_queue_depth = 1;
  c.pool.scale_up_window = 100ms;
  start(c);
  std::vector<std::shared_ptr<answer>> as;
  for (int i = 0; i < 8; ++i)
    as.push_back(embed("t"));
  advance(1s);
  auto st = status();
  CHECK(st.min_workers == 2);
  CHECK(st.max_workers == 2);
  CHECK(st.workers.size() == 2);
  release_all(*this, 4);
  advance(1s);
  st = status();
  CHECK(count_state(st, "ready") == 2);
  CHECK(st.workers_evicted == 0);
  CHECK(st.workers_spawned == 2);
}
