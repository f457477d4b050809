// Deterministic actor tests: an actor system on CAF's test coordinator
// (scheduler.policy = testing), fake workers whose every move the test
// controls, and probes that record the answers a peer would get.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <caf/all.hpp>
#include <caf/scheduler/test_coordinator.hpp>

#include "actors.hpp"
#include "pool/protocol.hpp"

namespace pool::test {

using release_atom = caf::atom_constant<caf::atom("release")>;
using crash_atom = caf::atom_constant<caf::atom("crash")>;
using refuse_atom = caf::atom_constant<caf::atom("refuse")>;

/// What a fake worker saw and holds. Owned by the test; the actor writes it
/// from the (single) test coordinator thread.
struct fake_worker_probe {
  uint32_t slot = 0;
  bool answer_pings = true;
  /// Crash (quit with an error) on receiving this job number (1-based); 0 = never.
  size_t crash_on_job = 0;
  std::vector<std::pair<job, caf::actor>> held;  // jobs not yet answered
  size_t max_held = 0;
  size_t jobs_received = 0;
  size_t pings = 0;
  size_t max_pings_unanswered = 0;
  size_t pings_unanswered = 0;
  caf::actor handle;
};

inline caf::behavior fake_worker(caf::event_based_actor* self,
                                 std::shared_ptr<fake_worker_probe> probe) {
  return {
      [=](work_atom, job& j) {
        ++probe->jobs_received;
        if (probe->crash_on_job != 0 && probe->jobs_received == probe->crash_on_job) {
          self->quit(make_error(pool_errc::worker_failed, "fake worker crash"));
          return;
        }
        probe->held.emplace_back(std::move(j),
                                 caf::actor_cast<caf::actor>(self->current_sender()));
        probe->max_held = std::max(probe->max_held, probe->held.size());
      },
      [=](ping_atom, uint64_t seq) {
        ++probe->pings;
        if (!probe->answer_pings) {
          ++probe->pings_unanswered;
          probe->max_pings_unanswered =
              std::max(probe->max_pings_unanswered, probe->pings_unanswered);
          return;
        }
        worker_report report{probe->held.size(), 0, 0};
        self->send(caf::actor_cast<caf::actor>(self->current_sender()), pong_atom::value,
                   seq, report);
      },
      // Answers up to `n` held jobs (oldest first) with a 1-dim result per text.
      [=](release_atom, uint64_t n) {
        for (uint64_t i = 0; i < n && !probe->held.empty(); ++i) {
          auto [j, to] = std::move(probe->held.front());
          probe->held.erase(probe->held.begin());
          matrix m;
          m.rows = static_cast<uint32_t>(j.texts.size());
          m.dim = 1;
          m.values.assign(j.texts.size(), static_cast<float>(j.id));
          self->send(to, done_atom::value, j.id, std::move(m));
        }
      },
      // Answers the oldest held job with an input error, as a worker does for
      // a text over the model's limit with model.truncate = false.
      [=](refuse_atom) {
        if (probe->held.empty())
          return;
        auto [j, to] = std::move(probe->held.front());
        probe->held.erase(probe->held.begin());
        self->send(to, fail_atom::value, j.id,
                   make_error(pool_errc::too_large, "text 0 has 9 tokens, over 8"));
      },
      [=](crash_atom) { self->quit(make_error(pool_errc::worker_failed, "fake crash")); },
  };
}

/// The answers one request got.
struct answer {
  int count = 0;
  std::optional<matrix> value;
  caf::error err;

  bool ok() const { return count == 1 && value.has_value(); }
  /// The pool error code, or pool_errc{0} for success or a foreign error.
  pool_errc code() const {
    auto c = pool_code(err);
    return c ? *c : pool_errc{0};
  }
};

struct test_config : caf::actor_system_config {
  test_config() {
    pool::add_message_types(*this);
    set("scheduler.policy", caf::atom("testing"));
    // One message per resume: high-priority messages overtake queued work
    // exactly as on a busy production scheduler.
    set("scheduler.max-throughput", size_t{1});
  }
};

struct actor_fixture {
  test_config cfg;
  caf::actor_system sys{cfg};
  caf::scheduler::test_coordinator& sched =
      dynamic_cast<caf::scheduler::test_coordinator&>(sys.scheduler());
  std::vector<std::shared_ptr<fake_worker_probe>> probes;  // every fake ever made
  /// Template for new fake workers.
  fake_worker_probe next_probe;
  /// The node root (unpublished) and the one model's supervisor it spawned.
  detail::root_interface root;
  caf::actor supervisor;
  std::vector<caf::actor> observers;

  ~actor_fixture() {
    for (auto& o : observers)
      caf::anon_send_exit(o, caf::exit_reason::kill);
    if (root)
      caf::anon_send_exit(root, caf::exit_reason::kill);
    if (supervisor)
      caf::anon_send_exit(supervisor, caf::exit_reason::kill);
    for (auto& p : probes)
      if (p->handle)
        caf::anon_send_exit(p->handle, caf::exit_reason::kill);
    sched.run();
  }

  /// Spawns `f(self)` on the test coordinator. CAF 0.17 spawns a function
  /// that takes no arguments through a null `std::shared_ptr<std::tuple<>>`,
  /// which UBSan reports, so `f` gets a dummy argument.
  template <class F>
  caf::actor spawn_fn(F f) {
    return sys.spawn([f](caf::event_based_actor* self, int) { return f(self); }, 0);
  }

  /// A supervisor config for tests: fake workers, tiny limits.
  detail::supervisor_config fake_config(uint32_t workers) {
    detail::supervisor_config c;
    c.pool.workers = workers;
    c.pool.embed_queue_capacity = 3;
    c.pool.batch_queue_capacity = 2;
    c.pool.pending_capacity = 4;
    c.pool.request_timeout = std::chrono::seconds(5);
    c.heartbeat.interval = std::chrono::milliseconds(100);
    c.heartbeat.timeout = std::chrono::milliseconds(500);
    c.log.stats_interval = caf::timespan{0};
    c.model_name = "fake";
    c.dim = 1;
    c.make_worker = [this](caf::local_actor* self, uint32_t slot) {
      auto probe = std::make_shared<fake_worker_probe>(next_probe);
      probe->slot = slot;
      probe->handle = self->spawn(fake_worker, probe);
      probes.push_back(probe);
      return probe->handle;
    };
    return c;
  }

  /// Starts a node root (not published) serving `models` (default first)
  /// and returns their supervisors; `supervisor` is the default model's.
  std::vector<caf::actor> start_models(std::vector<detail::supervisor_config> models) {
    detail::root_config rc;
    rc.publish = false;
    rc.bytes = models.front().bytes;
    rc.metrics = models.front().metrics;
    auto count = models.size();
    rc.models = std::move(models);
    root = detail::spawn_root(sys, std::move(rc));
    sched.run();
    auto result = std::make_shared<std::vector<caf::actor>>();
    auto target = root;
    spawn_fn([=](caf::event_based_actor* self) {
      self->request(target, caf::infinite, models_atom::value)
          .then([=](std::vector<detail::supervisor_interface>& supervisors) {
            // As dynamic handles: tests also send what the interface lacks.
            for (auto& s : supervisors)
              result->push_back(caf::actor_cast<caf::actor>(s));
          });
    });
    sched.run();
    REQUIRE(result->size() == count);
    supervisor = result->front();
    return *result;
  }

  /// Starts a node root (not published) serving the model of `c`.
  void start(detail::supervisor_config c) {
    std::vector<detail::supervisor_config> models;
    models.push_back(std::move(c));
    start_models(std::move(models));
  }

  /// A flag that turns true once `whom` is down (its observer is kept in
  /// `observers`: an actor nobody holds is destroyed).
  template <class Handle>
  std::shared_ptr<bool> down_flag(Handle whom) {
    auto down = std::make_shared<bool>(false);
    observers.push_back(spawn_fn([=](caf::event_based_actor* self) -> caf::behavior {
      self->monitor(whom);
      self->set_down_handler([=](caf::down_msg&) {
        *down = true;
        self->quit();
      });
      return {[](int) {}};
    }));
    sched.run();
    return down;
  }

  /// Probes of the newest worker of each slot, ordered by slot.
  std::vector<std::shared_ptr<fake_worker_probe>> current_workers() {
    std::map<uint32_t, std::shared_ptr<fake_worker_probe>> newest;
    for (auto& p : probes)
      newest[p->slot] = p;
    std::vector<std::shared_ptr<fake_worker_probe>> result;
    for (auto& [slot, p] : newest)
      result.push_back(p);
    return result;
  }

  std::shared_ptr<answer> submit(lane ln, std::vector<std::string> texts,
                                 std::string task = {}) {
    auto a = std::make_shared<answer>();
    auto target = supervisor;
    // Plays the gateway: submits under a ticket and records every answer.
    spawn_fn([=](caf::event_based_actor* self) -> caf::behavior {
      constexpr uint64_t ticket = 7;
      detail::submission sub;
      sub.ticket = ticket;
      sub.ln = ln;
      sub.texts = texts;
      sub.task = task;
      self->send(target, submit_atom::value, std::move(sub));
      return {
          [=](answer_atom, uint64_t t, matrix& m) {
            if (t != ticket)
              return;
            ++a->count;
            a->value = std::move(m);
          },
          [=](answer_atom, uint64_t t, caf::error& e) {
            if (t != ticket)
              return;
            ++a->count;
            a->err = std::move(e);
          },
      };
    });
    return a;
  }

  std::shared_ptr<answer> embed(std::string text) {
    return submit(lane::embed, {std::move(text)});
  }

  pool_status status() {
    auto result = std::make_shared<std::optional<pool_status>>();
    auto target = supervisor;
    spawn_fn([=](caf::event_based_actor* self) {
      self->request(target, caf::infinite, status_atom::value).then([=](pool_status& st) {
        *result = std::move(st);
      });
    });
    sched.run();
    if (!result->has_value())
      throw std::runtime_error("supervisor did not answer status");
    return std::move(**result);
  }

  /// Advances simulated time in steps of `step`, running all work after each.
  void advance(caf::timespan total, caf::timespan step = std::chrono::milliseconds(50)) {
    for (caf::timespan t{0}; t < total; t += step) {
      sched.advance_time(step);
      sched.run();
    }
  }

  void release(const std::shared_ptr<fake_worker_probe>& p, uint64_t n = 1000) {
    caf::anon_send(p->handle, release_atom::value, n);
    sched.run();
  }
};

/// accepted == completed + failed + expired + in_flight
inline bool ledger_balances(const pool_status& st) {
  return balanced(st.ledger);
}

}  // namespace pool::test
