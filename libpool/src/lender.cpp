#include <caf/all.hpp>
#include <caf/io/middleman.hpp>
#include <caf/io/middleman_actor.hpp>
#include <caf/openssl/manager.hpp>

#include <mutex>

#include "actors.hpp"
#include "defaults.hpp"
#include "guarded_actor.hpp"
#include "logging.hpp"
#include "peer_guard.hpp"
#include "pool/version.hpp"

namespace pool::detail {

namespace {

/// The node the workers are lent to: the only one whose work and pings they
/// take. Shared by a lender and its workers; thread-safe.
struct lent_to {
  std::mutex mtx;
  caf::node_id node;  // none while not joined

  void set(caf::node_id x) {
    std::lock_guard<std::mutex> guard{mtx};
    node = std::move(x);
  }
  bool is(const caf::node_id& x) {
    std::lock_guard<std::mutex> guard{mtx};
    return node && node == x;
  }
};

struct lender_state {
  static inline const char* name = "embedpool.lender";
  lender_config cfg;
  std::vector<caf::actor> workers;
  caf::actor gateway;
  size_t endpoint = 0;
  uint32_t failures = 0;
  bool connecting = false;
  bool leaving = false;
  std::shared_ptr<spdlog::logger> log = get_logger("node");
  std::shared_ptr<lent_to> target = std::make_shared<lent_to>();
  /// Set when the lender goes: its workers obey no exit message (they are
  /// addressable from the node they joined), so they quit on this instead.
  std::shared_ptr<std::atomic<bool>> retired = std::make_shared<std::atomic<bool>>(false);

  ~lender_state() {
    retired->store(true);
    for (auto& w : workers)
      if (w)
        caf::anon_send(w, run_atom::value);
  }
};

using lender_actor = caf::stateful_actor<lender_state>;

void info(lender_actor* self, const log_event& ev) {
  ev.write(*self->state.log, spdlog::level::info);
}

void warn(lender_actor* self, const log_event& ev) {
  ev.write(*self->state.log, spdlog::level::warn);
}

std::string endpoint_name(const lender_config& cfg, size_t i) {
  return cfg.supervisors[i].first + ":" + std::to_string(cfg.supervisors[i].second);
}

void schedule_connect(lender_actor* self) {
  auto& st = self->state;
  if (st.leaving)
    return;
  auto exponent = std::min<uint32_t>(st.failures, 16);
  auto delay = std::min(st.cfg.retry_min * (int64_t{1} << exponent), st.cfg.retry_max);
  ++st.failures;
  // Try the next supervisor in the list on every failure.
  st.endpoint = (st.endpoint + 1) % st.cfg.supervisors.size();
  self->delayed_send(self, delay, reconnect_atom::value);
}

/// The supervisor at `gw` refused the hello or the join: log it, forget it
/// (its node may no longer hand the workers work) and try again later.
void on_join_refused(lender_actor* self, const caf::actor& gw, const caf::error& err) {
  auto& s = self->state;
  warn(self, log_event("join_refused")
                 .add("supervisor", endpoint_name(s.cfg, s.endpoint))
                 .add("error", describe(err)));
  if (s.gateway != gw)
    return;
  self->demonitor(gw);
  s.gateway = nullptr;
  s.target->set(caf::node_id{});
  schedule_connect(self);
}

void join(lender_actor* self, std::vector<caf::actor> workers) {
  auto& st = self->state;
  auto gw = st.gateway;
  self->request(gw, join_timeout, join_atom::value, st.cfg.node_name, std::move(workers))
      .then(
          [=](uint32_t added) {
            auto& s = self->state;
            s.failures = 0;
            info(self, log_event("joined")
                           .add("supervisor", endpoint_name(s.cfg, s.endpoint))
                           .add("node", s.cfg.node_name)
                           .add("workers", added));
          },
          [=](caf::error& err) { on_join_refused(self, gw, err); });
}

/// Says hello first: a supervisor of another protocol version is refused
/// with an error naming both (logged as join_refused), never lent workers.
void hello_then_join(lender_actor* self) {
  auto gw = self->state.gateway;
  self->request(gw, join_timeout, hello_atom::value, protocol_version)
      .then([=](hello_atom, uint32_t, std::string&) { join(self, self->state.workers); },
            [=](caf::error& err) { on_join_refused(self, gw, err); });
}

void connect(lender_actor* self) {
  auto& st = self->state;
  if (st.leaving || st.gateway || st.connecting)
    return;
  st.connecting = true;
  auto [host, port] = st.cfg.supervisors[st.endpoint];
  auto mm = st.cfg.tls ? self->system().openssl_manager().actor_handle()
                       : self->system().middleman().actor_handle();
  self->request(mm, connect_timeout, caf::connect_atom::value, host, port)
      .then(
          [=](caf::node_id&, caf::strong_actor_ptr& ptr, std::set<std::string>&) {
            auto& s = self->state;
            s.connecting = false;
            if (!ptr || s.leaving) {
              schedule_connect(self);
              return;
            }
            s.gateway = caf::actor_cast<caf::actor>(ptr);
            s.target->set(s.gateway->node());
            self->monitor(s.gateway);
            hello_then_join(self);
          },
          [=](caf::error& err) {
            auto& s = self->state;
            s.connecting = false;
            warn(self, log_event("supervisor_unreachable")
                           .add("supervisor", endpoint_name(s.cfg, s.endpoint))
                           .add("error", describe(err))
                           .add("attempt", s.failures + 1));
            schedule_connect(self);
          });
}

caf::actor spawn_local_worker(lender_actor* self, uint32_t slot) {
  auto c = self->state.cfg.worker;
  c.slot = slot;
  c.owner = caf::actor_addr{};
  c.retired = self->state.retired;
  auto target = self->state.target;
  c.accepts = [target](const caf::strong_actor_ptr& sender) {
    return sender && target->is(sender->node());
  };
  auto w =
      spawn_worker(self->system(), std::move(c), self->state.cfg.worker_compute_threads);
  self->monitor(w);
  return w;
}

caf::behavior lender_behavior(lender_actor* self, lender_config cfg) {
  auto& st = self->state;
  st.cfg = std::move(cfg);
  guard_internal_actor(self, "lender");
  for (uint32_t i = 0; i < st.cfg.workers; ++i)
    st.workers.push_back(spawn_local_worker(self, i));
  self->set_down_handler([=](caf::down_msg& msg) {
    auto& s = self->state;
    if (s.gateway && msg.source == s.gateway.address()) {
      s.target->set(caf::node_id{});
      warn(self, log_event("supervisor_lost")
                     .add("supervisor", endpoint_name(s.cfg, s.endpoint))
                     .add("reason", describe(msg.reason)));
      s.gateway = nullptr;
      if (s.leaving) {
        self->quit();
        return;
      }
      s.failures = 0;
      s.endpoint = s.cfg.supervisors.size() - 1;  // schedule_connect advances to 0
      schedule_connect(self);
      return;
    }
    for (uint32_t i = 0; i < s.workers.size(); ++i) {
      if (s.workers[i].address() != msg.source)
        continue;
      if (s.leaving)
        return;
      warn(self, log_event("local_worker_died")
                     .add("worker", i)
                     .add("reason", describe(msg.reason)));
      s.workers[i] = spawn_local_worker(self, i);
      if (s.gateway)
        join(self, {s.workers[i]});
      return;
    }
  });
  self->send(self, reconnect_atom::value);
  return {
      [=](reconnect_atom) {
        if (!from_other_node(self))
          connect(self);
      },
      [=](drain_atom) {
        auto& s = self->state;
        if (s.leaving || !drain_ordered(self, s.cfg.drain_signal))
          return;
        s.leaving = true;
        if (!s.gateway) {
          info(self,
               log_event("left").add("node", s.cfg.node_name).add("supervisor", "none"));
          self->quit();
          return;
        }
        info(self, log_event("leaving").add("node", s.cfg.node_name));
        self->request(s.gateway, s.cfg.leave_timeout, leave_atom::value, s.cfg.node_name)
            .then(
                [=](uint32_t released) {
                  info(self, log_event("left")
                                 .add("node", self->state.cfg.node_name)
                                 .add("workers", released));
                  self->quit();
                },
                [=](caf::error& err) {
                  warn(self, log_event("leave_failed").add("error", describe(err)));
                  self->quit();
                });
      },
  };
}

}  // namespace

caf::actor spawn_lender(caf::actor_system& sys, lender_config cfg) {
  // Addressable from the node it joins; no exit message stops it.
  using impl = guarded_actor<lender_state>;
  impl::init_fn init = [cfg = std::move(cfg)](impl* self) mutable {
    return lender_behavior(self, std::move(cfg));
  };
  impl::options opts;
  opts.remote_responses = true;  // it asks the gateway it joins
  return sys.spawn<impl>(std::move(opts), std::move(init));
}

}  // namespace pool::detail
