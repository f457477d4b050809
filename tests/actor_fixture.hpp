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
  caf::actor supervisor;

  ~actor_fixture() {
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

  /// A supervisor config for tests: fake workers, no publishing, tiny limits.
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
    c.publish = false;
    c.make_worker = [this](caf::local_actor* self, uint32_t slot) {
      auto probe = std::make_shared<fake_worker_probe>(next_probe);
      probe->slot = slot;
      probe->handle = self->spawn(fake_worker, probe);
      probes.push_back(probe);
      return probe->handle;
    };
    return c;
  }

  void start(detail::supervisor_config c) {
    supervisor = detail::spawn_supervisor(sys, std::move(c));
    sched.run();
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
      self->send(target, submit_atom::value, ticket, static_cast<uint8_t>(ln), texts,
                 task);
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
  auto& l = st.ledger;
  return l.accepted == l.completed + l.failed + l.expired + l.in_flight;
}

}  // namespace pool::test
