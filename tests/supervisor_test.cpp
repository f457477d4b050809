// Deterministic tests of the supervisor's credits, overload policies,
// deadlines, heartbeats, restarts and drain on CAF's test coordinator.
#include <catch2/catch.hpp>

#include "actor_fixture.hpp"

using namespace pool;
using namespace pool::test;
using namespace std::chrono_literals;

namespace {

size_t count_ok(const std::vector<std::shared_ptr<answer>>& as) {
  size_t n = 0;
  for (auto& a : as)
    n += a->ok() ? 1 : 0;
  return n;
}

size_t count_code(const std::vector<std::shared_ptr<answer>>& as, pool_errc code) {
  size_t n = 0;
  for (auto& a : as)
    n += (a->count == 1 && a->code() == code) ? 1 : 0;
  return n;
}

bool all_answered_once(const std::vector<std::shared_ptr<answer>>& as) {
  for (auto& a : as)
    if (a->count != 1)
      return false;
  return true;
}

}  // namespace

TEST_CASE_METHOD(actor_fixture, "a worker never holds more embed jobs than its credits",
                 "[supervisor][credits]") {
  auto c = fake_config(2);
  start(c);
  std::vector<std::shared_ptr<answer>> as;
  for (int i = 0; i < 20; ++i)
    as.push_back(embed("text " + std::to_string(i)));
  sched.run();
  auto workers = current_workers();
  REQUIRE(workers.size() == 2);
  for (auto& w : workers) {
    INFO("slot " << w->slot);
    CHECK(w->max_held == 3);
    CHECK(w->held.size() == 3);
  }
  auto st = status();
  CHECK(st.ledger.accepted == 6 + 4);  // 6 dispatched, 4 parked
  CHECK(st.ledger.rejected == 10);
  CHECK(st.pending == 4);
  CHECK(count_code(as, pool_errc::overloaded) == 10);
  CHECK(ledger_balances(st));
  for (auto& w : st.workers)
    CHECK(w.credits_embed == 0);
  SECTION("returned credits pull parked requests, still within capacity") {
    release(workers[0], 2);
    CHECK(workers[0]->max_held == 3);
    CHECK(workers[0]->held.size() == 3);
    for (int round = 0; round < 4; ++round)
      for (auto& w : workers)
        release(w);
    CHECK(all_answered_once(as));
    CHECK(count_ok(as) == 10);
    for (auto& w : workers)
      CHECK(w->max_held == 3);
    auto end = status();
    CHECK(end.ledger.completed == 10);
    CHECK(end.ledger.in_flight == 0);
    CHECK(end.pending == 0);
    CHECK(ledger_balances(end));
    for (auto& w : end.workers) {
      CHECK(w.credits_embed == 3);
      CHECK(w.credits_batch == 2);
    }
  }
}

TEST_CASE_METHOD(actor_fixture, "batch and embed lanes have separate credits",
                 "[supervisor][credits]") {
  auto c = fake_config(1);
  c.pool.pending_capacity = 0;
  start(c);
  std::vector<std::shared_ptr<answer>> embeds, batches;
  for (int i = 0; i < 5; ++i)
    embeds.push_back(embed("e"));
  for (int i = 0; i < 5; ++i)
    batches.push_back(submit(lane::batch, {"a", "b", "c"}));
  sched.run();
  auto w = current_workers().at(0);
  CHECK(w->held.size() == 3 + 2);
  CHECK(count_code(embeds, pool_errc::overloaded) == 2);
  CHECK(count_code(batches, pool_errc::overloaded) == 3);
  release(w);
  CHECK(count_ok(embeds) == 3);
  CHECK(count_ok(batches) == 2);
  for (auto& b : batches)
    if (b->ok())
      CHECK(b->value->rows == 3);
}

TEST_CASE_METHOD(actor_fixture, "policy reject sheds at once with a retry hint",
                 "[supervisor][overload]") {
  auto c = fake_config(1);
  c.pool.policy = overload_policy::reject;
  start(c);
  std::vector<std::shared_ptr<answer>> as;
  for (int i = 0; i < 5; ++i)
    as.push_back(embed("x"));
  sched.run();
  CHECK(count_code(as, pool_errc::overloaded) == 2);
  for (auto& a : as)
    if (a->code() == pool_errc::overloaded)
      CHECK_THAT(error_message(a->err), Catch::Contains("retry after"));
  auto st = status();
  CHECK(st.pending == 0);
  CHECK(st.ledger.accepted == 3);
  CHECK(st.ledger.rejected == 2);
  CHECK(ledger_balances(st));
}

TEST_CASE_METHOD(actor_fixture, "parked and running requests expire at their deadline",
                 "[supervisor][deadline]") {
  auto c = fake_config(1);
  c.pool.request_timeout = 1s;
  c.heartbeat.timeout = 10s;  // keep the silent-ish worker from being declared stuck
  start(c);
  std::vector<std::shared_ptr<answer>> as;
  for (int i = 0; i < 5; ++i)
    as.push_back(embed("x"));
  sched.run();
  auto w = current_workers().at(0);
  REQUIRE(w->held.size() == 3);
  advance(500ms);
  CHECK(std::none_of(as.begin(), as.end(), [](auto& a) { return a->count > 0; }));
  advance(700ms);
  CHECK(all_answered_once(as));
  CHECK(count_code(as, pool_errc::deadline_exceeded) == 5);
  auto st = status();
  CHECK(st.ledger.expired == 5);
  CHECK(st.ledger.in_flight == 0);
  CHECK(ledger_balances(st));
  // The worker still holds its jobs: their credits stay spent until it answers.
  CHECK(st.workers.at(0).credits_embed == 0);
  SECTION("late results are dropped, not answered twice, and return the credits") {
    release(w);
    for (auto& a : as)
      CHECK(a->count == 1);
    auto after = status();
    CHECK(after.workers.at(0).credits_embed == 3);
    CHECK(after.ledger.completed == 0);
    CHECK(ledger_balances(after));
  }
}

TEST_CASE_METHOD(actor_fixture, "a dead worker's jobs are re-dispatched and it restarts",
                 "[supervisor][restart]") {
  auto c = fake_config(2);
  c.pool.restart_backoff = 200ms;
  start(c);
  std::vector<std::shared_ptr<answer>> as;
  for (int i = 0; i < 4; ++i)
    as.push_back(embed("x" + std::to_string(i)));
  sched.run();
  auto workers = current_workers();
  REQUIRE(workers[0]->held.size() == 2);
  REQUIRE(workers[1]->held.size() == 2);
  caf::anon_send(workers[0]->handle, crash_atom::value);
  sched.run();
  // A retry goes only to a worker that holds nothing else: the survivor is
  // busy, so both orphaned jobs wait, and the new one behind them.
  CHECK(workers[1]->held.size() == 2);
  auto st = status();
  CHECK(st.workers[0].state == "restarting");
  CHECK(st.pending == 2);
  CHECK(ledger_balances(st));
  advance(250ms);
  auto now = current_workers();
  REQUIRE(probes.size() == 3);
  CHECK(now[0] != workers[0]);
  // The restarted worker got one retry, alone and marked solo (embedded in a
  // call of its own).
  REQUIRE(now[0]->held.size() == 1);
  CHECK(now[0]->held.front().first.solo);
  // The survivor answers its jobs: the other retry goes to it, alone.
  release(workers[1]);
  REQUIRE(workers[1]->held.size() == 1);
  CHECK(workers[1]->held.front().first.solo);
  release(now[0]);
  release(workers[1]);
  CHECK(all_answered_once(as));
  CHECK(count_ok(as) == 4);
  auto end = status();
  CHECK(end.restarts == 1);
  CHECK(end.workers[0].restarts == 1);
  CHECK(end.workers[0].state == "ready");
  CHECK(ledger_balances(end));
}

TEST_CASE_METHOD(actor_fixture,
                 "restarts back off exponentially and give up past the intensity limit",
                 "[supervisor][restart]") {
  auto c = fake_config(1);
  c.pool.restart_backoff = 100ms;
  c.pool.restart_backoff_max = 1s;
  c.pool.max_restarts = 3;
  c.pool.restart_window = 60s;
  start(c);
  // Each crash: kill the current worker, then measure how long the restart takes.
  std::vector<int64_t> delays_ms;
  for (int i = 0; i < 3; ++i) {
    auto before = probes.size();
    caf::anon_send(current_workers()[0]->handle, crash_atom::value);
    sched.run();
    int64_t waited = 0;
    while (probes.size() == before && waited < 5000) {
      advance(10ms, 10ms);
      waited += 10;
    }
    REQUIRE(probes.size() == before + 1);
    delays_ms.push_back(waited);
  }
  // 100ms, 200ms, 400ms (within one 10ms step).
  CHECK(delays_ms[0] >= 100);
  CHECK(delays_ms[0] <= 110);
  CHECK(delays_ms[1] >= 200);
  CHECK(delays_ms[1] <= 210);
  CHECK(delays_ms[2] >= 400);
  CHECK(delays_ms[2] <= 410);
  // The fourth death within the window exceeds max-restarts = 3.
  caf::anon_send(current_workers()[0]->handle, crash_atom::value);
  sched.run();
  advance(2s);
  CHECK(probes.size() == 4);
  auto st = status();
  CHECK(st.workers[0].state == "given_up");
  CHECK(st.restarts == 3);
  auto late = embed("anyone?");
  sched.run();
  CHECK(late->code() == pool_errc::unavailable);
}

TEST_CASE_METHOD(actor_fixture, "a request fails with worker_failed after max-attempts",
                 "[supervisor][restart]") {
  next_probe.crash_on_job = 1;  // every worker dies on its first job
  auto c = fake_config(3);
  c.pool.max_attempts = 3;
  start(c);
  auto a = embed("poison");
  sched.run();
  CHECK(a->count == 1);
  CHECK(a->code() == pool_errc::worker_failed);
  CHECK_THAT(error_message(a->err), Catch::Contains("3 worker(s)"));
  size_t jobs = 0;
  for (auto& p : probes)
    jobs += p->jobs_received;
  CHECK(jobs == 3);
  auto st = status();
  CHECK(st.ledger.failed == 1);
  CHECK(ledger_balances(st));
}

TEST_CASE_METHOD(actor_fixture,
                 "heartbeats keep one ping outstanding and detect a stuck worker",
                 "[supervisor][heartbeat]") {
  auto c = fake_config(2);
  c.heartbeat.interval = 100ms;
  c.heartbeat.timeout = 500ms;
  start(c);
  advance(300ms);
  auto workers = current_workers();
  for (auto& w : workers)
    CHECK(w->pings >= 2);
  auto st = status();
  for (auto& w : st.workers) {
    CHECK(w.last_pong_ms >= 0);
    CHECK(w.last_pong_ms <= 100);
  }
  // Worker 0 goes silent while holding two jobs.
  workers[0]->answer_pings = false;
  std::vector<std::shared_ptr<answer>> as;
  for (int i = 0; i < 4; ++i)
    as.push_back(embed("y" + std::to_string(i)));
  sched.run();
  REQUIRE(workers[0]->held.size() == 2);
  advance(400ms);
  CHECK(workers[0]->pings_unanswered == 1);  // never a second ping while one is out
  CHECK(probes.size() == 2);
  advance(300ms);
  // Declared stuck: replaced, and its jobs re-dispatched.
  REQUIRE(probes.size() == 3);
  CHECK(workers[0]->max_pings_unanswered == 1);
  auto now = current_workers();
  CHECK(now[0] != workers[0]);
  // One retry went to the replacement, alone; the other waits for a worker
  // that holds nothing else (worker 1 still holds its two).
  CHECK(now[0]->held.size() == 1);
  CHECK(workers[1]->held.size() == 2);
  auto after = status();
  CHECK(after.pending == 1);
  CHECK(after.abandoned == 1);
  CHECK(after.workers[0].state == "ready");
  // Late results of the abandoned worker are ignored.
  release(workers[0]);
  release(now[0]);  // the replacement is idle again: the second retry goes there
  CHECK(now[0]->held.size() == 1);
  release(now[0]);
  release(workers[1]);
  CHECK(all_answered_once(as));
  CHECK(count_ok(as) == 4);
  for (auto& a : as)
    CHECK(a->value->values.at(0) != 0.0f);
  auto end = status();
  CHECK(end.ledger.completed == 4);
  CHECK(ledger_balances(end));
}

TEST_CASE_METHOD(actor_fixture, "pongs carry the worker's real queue depth",
                 "[supervisor][heartbeat]") {
  auto c = fake_config(1);
  c.pool.embed_queue_capacity = 10;
  start(c);
  for (int i = 0; i < 7; ++i)
    embed("z");
  sched.run();
  advance(200ms);
  auto st = status();
  CHECK(st.workers.at(0).queue_depth == 7);
  CHECK(st.workers.at(0).credits_embed == 3);
  release(current_workers()[0], 5);
  advance(200ms);
  CHECK(status().workers.at(0).queue_depth == 2);
}

TEST_CASE_METHOD(actor_fixture, "draining refuses new work and finishes accepted work",
                 "[supervisor][drain]") {
  auto c = fake_config(1);
  c.pool.drain_timeout = 2s;
  start(c);
  std::vector<std::shared_ptr<answer>> as;
  for (int i = 0; i < 5; ++i)
    as.push_back(embed("d"));
  sched.run();
  caf::anon_send(supervisor, drain_atom::value);
  sched.run();
  auto late = embed("too late");
  sched.run();
  CHECK(late->code() == pool_errc::shutting_down);
  auto w = current_workers()[0];
  SECTION("everything accepted completes, then the supervisor quits") {
    release(w);  // 3 done, 2 parked get dispatched
    release(w);
    CHECK(all_answered_once(as));
    CHECK(count_ok(as) == 5);
    auto probe_status = std::make_shared<int>(0);
    auto target = supervisor;
    spawn_fn([=](caf::event_based_actor* self) -> caf::behavior {
      self->monitor(target);
      self->set_down_handler([=](caf::down_msg&) {
        *probe_status = 1;
        self->quit();
      });
      return {[](int32_t) {}};
    });
    sched.run();
    CHECK(*probe_status == 1);
    supervisor = nullptr;
  }
  SECTION("work still unfinished at the drain timeout gets shutting_down") {
    advance(2100ms);
    CHECK(all_answered_once(as));
    CHECK(count_code(as, pool_errc::shutting_down) == 5);
  }
}

TEST_CASE_METHOD(actor_fixture, "the ledger balances after every step of a mixed run",
                 "[supervisor][ledger]") {
  auto c = fake_config(3);
  c.pool.request_timeout = 800ms;
  c.pool.restart_backoff = 100ms;
  start(c);
  std::vector<std::shared_ptr<answer>> as;
  uint64_t seed = 42;
  auto rnd = [&] {
    seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
    return static_cast<uint32_t>(seed >> 33);
  };
  for (int step = 0; step < 200; ++step) {
    switch (rnd() % 6) {
      case 0:
      case 1:
        as.push_back(embed("s" + std::to_string(step)));
        break;
      case 2:
        as.push_back(submit(lane::batch, {"a", "b"}));
        break;
      case 3: {
        auto ws = current_workers();
        caf::anon_send(ws[rnd() % ws.size()]->handle, release_atom::value, uint64_t{2});
        break;
      }
      case 4:
        if (rnd() % 8 == 0) {
          auto ws = current_workers();
          caf::anon_send(ws[rnd() % ws.size()]->handle, crash_atom::value);
        }
        break;
      default:
        sched.advance_time(60ms);
    }
    sched.run();
    auto st = status();
    INFO("step " << step);
    REQUIRE(ledger_balances(st));
    for (auto& w : current_workers())
      REQUIRE(w->held.size() <= 3 + 2);
  }
  for (int i = 0; i < 30; ++i) {
    for (auto& w : current_workers())
      caf::anon_send(w->handle, release_atom::value, uint64_t{100});
    advance(100ms);
  }
  CHECK(all_answered_once(as));
  auto end = status();
  CHECK(end.ledger.in_flight == 0);
  CHECK(ledger_balances(end));
  CHECK(end.ledger.accepted + end.ledger.rejected == as.size());
}

TEST_CASE_METHOD(actor_fixture, "lent workers join, take work, and leave once idle",
                 "[supervisor][cluster]") {
  auto c = fake_config(1);
  start(c);
  // Two workers of a worker node "w1", made here as fakes.
  std::vector<std::shared_ptr<fake_worker_probe>> lent;
  std::vector<caf::actor> handles;
  for (int i = 0; i < 2; ++i) {
    auto p = std::make_shared<fake_worker_probe>();
    p->slot = 100 + i;
    p->handle = sys.spawn(fake_worker, p);
    lent.push_back(p);
    handles.push_back(p->handle);
  }
  auto joined = std::make_shared<uint32_t>(0);
  auto target = supervisor;
  spawn_fn([=](caf::event_based_actor* self) {
    self->request(target, caf::infinite, join_atom::value, self->node(),
                  std::string{"w1"}, handles)
        .then([=](uint32_t n) { *joined = n; });
  });
  sched.run();
  CHECK(*joined == 2);
  auto st = status();
  REQUIRE(st.workers.size() == 3);
  CHECK(st.workers[1].node == "w1");
  REQUIRE(st.nodes.size() == 2);
  CHECK(st.nodes[1].node == "w1");
  CHECK(st.nodes[1].state == "up");
  CHECK(st.nodes[1].ready == 2);
  std::vector<std::shared_ptr<answer>> as;
  for (int i = 0; i < 9; ++i)
    as.push_back(embed("spread " + std::to_string(i)));
  sched.run();
  CHECK(lent[0]->held.size() == 3);
  CHECK(lent[1]->held.size() == 3);
  auto left = std::make_shared<int>(-1);
  spawn_fn([=](caf::event_based_actor* self) {
    self->request(target, caf::infinite, leave_atom::value, self->node(),
                  std::string{"w1"})
        .then([=](uint32_t n) { *left = static_cast<int>(n); });
  });
  sched.run();
  CHECK(*left == -1);  // still busy
  CHECK(status().nodes[1].state == "leaving");
  // A second leave while the first waits is refused at once; the first is
  // still answered below (each request exactly once, none held forever).
  auto again = std::make_shared<std::string>();
  spawn_fn([=](caf::event_based_actor* self) {
    self->request(target, caf::infinite, leave_atom::value, self->node(),
                  std::string{"w1"})
        .then([=](uint32_t) { *again = "answered"; },
              [=](caf::error& err) { *again = pool::describe(err); });
  });
  sched.run();
  CHECK_THAT(*again, Catch::Contains("leaving already"));
  // New work goes to the local worker only.
  auto local = current_workers()[0];
  release(local);
  auto extra = embed("after leave");
  sched.run();
  CHECK(lent[0]->jobs_received == 3);
  CHECK(lent[1]->jobs_received == 3);
  release(lent[0]);
  CHECK(*left == -1);
  release(lent[1]);
  CHECK(*left == 2);
  release(local);
  CHECK(all_answered_once(as));
  CHECK(count_ok(as) == 9);
  CHECK(extra->ok());
  auto end = status();
  CHECK(end.nodes[1].state == "left");
  CHECK(ledger_balances(end));
  for (auto& p : lent)
    caf::anon_send_exit(p->handle, caf::exit_reason::kill);
}

TEST_CASE_METHOD(actor_fixture,
                 "a lost worker node's work is re-dispatched at its down message",
                 "[supervisor][cluster]") {
  auto c = fake_config(1);
  c.pool.request_timeout = std::chrono::minutes(10);
  start(c);
  auto p = std::make_shared<fake_worker_probe>();
  p->slot = 100;
  p->handle = sys.spawn(fake_worker, p);
  auto target = supervisor;
  std::vector<caf::actor> handles{p->handle};
  spawn_fn([=](caf::event_based_actor* self) {
    self->request(target, caf::infinite, join_atom::value, self->node(),
                  std::string{"w2"}, handles)
        .then([](uint32_t) {});
  });
  sched.run();
  std::vector<std::shared_ptr<answer>> as;
  for (int i = 0; i < 6; ++i)
    as.push_back(embed("x" + std::to_string(i)));
  sched.run();
  REQUIRE(p->held.size() == 3);
  caf::anon_send(p->handle, crash_atom::value);  // what a SIGKILLed node looks like
  sched.run();
  auto st = status();
  CHECK(st.nodes[1].state == "lost");
  CHECK(st.workers[1].state == "lost");
  CHECK(st.restarts == 0);  // lent workers are replaced by their node, not here
  auto local = current_workers()[0];
  release(local);  // its own three jobs
  // The lost node's three, retried one at a time: each alone on the worker.
  for (int i = 0; i < 3; ++i) {
    REQUIRE(local->held.size() == 1);
    CHECK(local->held.front().first.solo);
    release(local);
  }
  CHECK(all_answered_once(as));
  CHECK(count_ok(as) == 6);
  CHECK(ledger_balances(status()));
}

TEST_CASE_METHOD(actor_fixture,
                 "a join is refused whole for workers of another node or past the "
                 "per-node limit, and only the joining node may leave",
                 "[supervisor][cluster][security]") {
  auto c = fake_config(1);
  c.cluster.max_workers_per_node = 2;
  start(c);
  std::vector<caf::actor> handles;
  for (int i = 0; i < 3; ++i) {
    auto p = std::make_shared<fake_worker_probe>();
    p->slot = 100 + static_cast<uint32_t>(i);
    p->handle = sys.spawn(fake_worker, p);
    probes.push_back(p);
    handles.push_back(p->handle);
  }
  auto other = caf::make_node_id(4242, "0123456789abcdef0123456789abcdef01234567");
  REQUIRE(other);
  auto target = supervisor;
  auto ask = [&](caf::message msg) {
    auto result = std::make_shared<std::optional<caf::expected<uint32_t>>>();
    spawn_fn([=](caf::event_based_actor* self) {
      self->request(target, caf::infinite, msg)
          .then([=](uint32_t n) { *result = n; },
                [=](caf::error& err) { *result = std::move(err); });
    });
    sched.run();
    REQUIRE(result->has_value());
    return **result;
  };
  auto workers_now = [&] { return status().workers.size(); };
  // Workers that live on this node, claimed by another node: refused.
  auto stolen = ask(caf::make_message(join_atom::value, *other, std::string{"thief"},
                                      std::vector<caf::actor>{handles[0]}));
  REQUIRE_FALSE(stolen);
  CHECK(pool_code(stolen.error()) == pool_errc::invalid_input);
  CHECK(workers_now() == 1);
  // Three workers past a limit of two: refused, nothing added.
  auto node = sys.node();
  auto three = ask(caf::make_message(join_atom::value, node, std::string{"w"}, handles));
  REQUIRE_FALSE(three);
  CHECK(pool_code(three.error()) == pool_errc::too_large);
  CHECK(workers_now() == 1);
  auto two = ask(caf::make_message(join_atom::value, node, std::string{"w"},
                                   std::vector<caf::actor>{handles[0], handles[1]}));
  REQUIRE(two);
  CHECK(*two == 2);
  // Another node cannot take them back, nor take the name.
  auto leave = ask(caf::make_message(leave_atom::value, *other, std::string{"w"}));
  REQUIRE_FALSE(leave);
  CHECK(pool_code(leave.error()) == pool_errc::invalid_input);
  auto st = status();
  REQUIRE(st.nodes.size() == 2);
  CHECK(st.nodes[1].state == "up");
  CHECK(st.nodes[1].ready == 2);
  // Draining is not a message anyone may send once a drain signal exists.
  CHECK(ledger_balances(st));
}

TEST_CASE_METHOD(actor_fixture,
                 "a task the model does not know is refused naming the known ones",
                 "[supervisor][tasks]") {
  auto c = fake_config(1);
  c.tasks = {"passage", "query"};
  start(c);
  auto unknown = submit(lane::embed, {"text"}, "document");
  auto known = submit(lane::embed, {"text"}, "query");
  auto none = submit(lane::batch, {"a", "b"});
  sched.run();
  CHECK(unknown->count == 1);
  CHECK(unknown->code() == pool_errc::invalid_input);
  CHECK_THAT(error_message(unknown->err),
             Catch::Contains("document") && Catch::Contains("passage, query"));
  // Only the known task and the empty one reached the worker.
  REQUIRE(probes.size() == 1);
  CHECK(probes[0]->jobs_received == 2);
  CHECK(probes[0]->held[0].first.task == "query");
  release(probes[0]);
  sched.run();
  CHECK(known->ok());
  CHECK(none->ok());
  auto st = status();
  CHECK(st.ledger.rejected == 1);
  CHECK(ledger_balances(st));
}

TEST_CASE_METHOD(actor_fixture,
                 "a worker's answer counts only from that worker and for a job it holds",
                 "[supervisor][security]") {
  start(fake_config(1));
  auto a = embed("the real one");
  sched.run();
  auto w = current_workers()[0];
  REQUIRE(w->held.size() == 1);
  auto id = w->held.front().first.id;
  CHECK(id > 1000);  // random, not a counter a forger could guess
  matrix forged;
  forged.rows = 1;
  forged.dim = 1;
  forged.values = {-1.0f};
  // Another actor with the right id, and the worker with a wrong one.
  auto forger =
      spawn_fn([](caf::event_based_actor*) -> caf::behavior { return {[](int) {}}; });
  caf::send_as(forger, supervisor, done_atom::value, id, forged);
  caf::send_as(w->handle, supervisor, done_atom::value, id + 1, forged);
  sched.run();
  CHECK(a->count == 0);
  release(w);
  REQUIRE(a->ok());
  CHECK(a->value->values.at(0) == static_cast<float>(id));
  CHECK(ledger_balances(status()));
  caf::anon_send_exit(forger, caf::exit_reason::kill);
}

TEST_CASE_METHOD(actor_fixture,
                 "a worker's input refusal is answered at once, never retried",
                 "[supervisor][truncate]") {
  auto c = fake_config(2);
  c.pool.max_attempts = 3;
  start(c);
  auto a = embed("a text over the model's limit");
  sched.run();
  size_t holder = probes[0]->held.empty() ? 1 : 0;
  REQUIRE(probes[holder]->held.size() == 1);
  caf::anon_send(probes[holder]->handle, refuse_atom::value);
  sched.run();
  CHECK(a->count == 1);
  CHECK(a->code() == pool_errc::too_large);
  CHECK_THAT(error_message(a->err), Catch::Contains("9 tokens"));
  size_t jobs = 0;
  for (auto& p : probes)
    jobs += p->jobs_received;
  CHECK(jobs == 1);
  auto st = status();
  CHECK(st.ledger.failed == 1);
  for (const auto& w : st.workers)
    CHECK(w.failed == 0);  // not the worker's fault
  CHECK(ledger_balances(st));
}
