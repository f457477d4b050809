// The node root: spawns the supervisor of every served model and the gateway
// that routes to them, publishes the gateway (and republishes a replacement),
// and drains the models before the gateway that carries their last answers.
#include <algorithm>
#include <set>

#include <caf/all.hpp>
#include <caf/io/middleman.hpp>
#include <caf/io/middleman_actor.hpp>
#include <caf/openssl/manager.hpp>

#include "actors.hpp"
#include "defaults.hpp"
#include "logging.hpp"
#include "metrics.hpp"
#include "peer_guard.hpp"

namespace pool::detail {

namespace {

struct root_state {
  static inline const char* name = "embedpool.root";

  root_config cfg;
  /// Every model's route, default first; `supervisor` is null once it is down.
  std::vector<model_route> routes;
  /// The default model's limits, which the gateway validates requests by.
  pool_section gateway_limits;
  caf::timespan longest_drain{0};
  caf::actor gateway;
  uint16_t bound_port = 0;
  bool draining = false;
  std::shared_ptr<spdlog::logger> log = get_logger("supervisor");

  // Supervisors take their workers with them; the gateway quits once every
  // supervisor is down.
  ~root_state() {
    for (auto& r : routes)
      if (r.supervisor)
        caf::anon_send_exit(r.supervisor, caf::exit_reason::kill);
  }
};

using root_actor = root_interface::stateful_pointer<root_state>;

/// The middleman that publishes the gateway: plain BASP or TLS.
caf::io::middleman_actor publisher(root_actor self) {
  if (self->state.cfg.tls)
    return self->system().openssl_manager().actor_handle();
  return self->system().middleman().actor_handle();
}

/// Publishes the current gateway on `port`. A republish (after the old
/// gateway died) retries while the middleman is still closing the old socket.
void publish_gateway(root_actor self, uint16_t port, bool first, int attempt = 0) {
  auto& st = self->state;
  auto gw = caf::actor_cast<caf::strong_actor_ptr>(st.gateway);
  auto gw_addr = st.gateway.address();
  self->request(publisher(self), caf::infinite, caf::publish_atom::value, port,
                std::move(gw), std::set<std::string>{}, st.cfg.host, true)
      .then(
          [=](uint16_t actual) {
            auto& s = self->state;
            s.bound_port = actual;
            log_event(first ? "listening" : "gateway_republished")
                .add("host", s.cfg.host)
                .add("port", static_cast<unsigned>(actual))
                .write(*s.log, spdlog::level::info);
            if (first && s.cfg.on_listening)
              s.cfg.on_listening(actual);
          },
          [=](caf::error& err) {
            auto& s = self->state;
            if (!first && attempt < max_republish_attempts && s.gateway &&
                s.gateway.address() == gw_addr) {
              self->delayed_send(self, republish_delay, republish_atom::value, port,
                                 attempt + 1);
              return;
            }
            log_event("publish_failed")
                .add("host", s.cfg.host)
                .add("port", port)
                .add("error", describe(err))
                .write(*s.log, spdlog::level::err);
            self->quit(err);
          });
}

/// Spawns a gateway over every model's route and tells each supervisor.
void start_gateway(root_actor self) {
  auto& st = self->state;
  st.gateway = spawn_gateway(self, st.routes, st.gateway_limits, st.cfg.metrics,
                             st.cfg.status_max_age);
  self->monitor(st.gateway);
  for (auto& r : st.routes)
    if (r.supervisor)
      self->send(r.supervisor, gateway_atom::value, st.gateway);
}

/// Spawns the supervisor of every model with the node's shared state.
void start_models(root_actor self) {
  auto& st = self->state;
  std::vector<std::string> names;
  for (auto& m : st.cfg.models)
    names.push_back(m.model_name);
  for (auto& m : st.cfg.models) {
    m.model_names = names;
    m.bytes = st.cfg.bytes;
    m.metrics = st.cfg.metrics;
    m.drain_signal = st.cfg.drain_signal;
    if (!m.gate)
      m.gate = std::make_shared<admission_gate>(admission_gate::limit_for(m.pool));
    st.longest_drain = std::max(st.longest_drain, m.pool.drain_timeout);
    auto name = m.model_name;
    auto gate = m.gate;
    auto handle = spawn_supervisor(self->system(), std::move(m));
    self->monitor(handle);
    st.routes.push_back(
        model_route{std::move(name), std::move(handle), std::move(gate), st.cfg.bytes});
  }
  st.cfg.models.clear();
}

bool any_model_up(const root_state& st) {
  return std::any_of(st.routes.begin(), st.routes.end(), [](const model_route& r) {
    return static_cast<bool>(r.supervisor);
  });
}

/// The end of a drain: the gateway carried the models' last answers and
/// goes now, then the root. Supervisors still up past the grace are stopped.
void finish_drain(root_actor self) {
  auto& st = self->state;
  for (auto& r : st.routes)
    if (r.supervisor) {
      self->demonitor(r.supervisor.address());
      self->send_exit(r.supervisor, caf::exit_reason::user_shutdown);
      r.supervisor = nullptr;
    }
  if (st.gateway) {
    self->demonitor(st.gateway.address());
    self->send_exit(st.gateway, caf::exit_reason::user_shutdown);
    st.gateway = nullptr;
  }
  st.log->flush();
  self->quit();
}

/// A model's supervisor went down: drained, or (outside a drain) died, which
/// stops the node with its reason.
void on_model_down(root_actor self, model_route& route, const caf::error& reason) {
  auto& st = self->state;
  route.supervisor = nullptr;
  if (!st.draining) {
    log_event("model_supervisor_died")
        .add("model", route.name)
        .add("reason", describe(reason))
        .write(*st.log, spdlog::level::err);
    self->quit(reason);
    return;
  }
  log_event("model_drained").add("model", route.name).write(*st.log, spdlog::level::info);
  if (!any_model_up(st))
    finish_drain(self);
}

/// The gateway died outside a drain: a new one, republished on the same port.
void replace_gateway(root_actor self, const caf::error& reason) {
  auto& st = self->state;
  log_event("gateway_died")
      .add("reason", describe(reason))
      .write(*st.log, spdlog::level::warn);
  st.gateway = nullptr;
  if (st.draining)
    return;
  start_gateway(self);
  if (st.cfg.publish && st.bound_port != 0) {
    self->send(publisher(self), caf::close_atom::value, st.bound_port);
    publish_gateway(self, st.bound_port, false);
  }
}

void on_down(root_actor self, const caf::down_msg& msg) {
  auto& st = self->state;
  for (auto& r : st.routes)
    if (r.supervisor && msg.source == r.supervisor.address()) {
      on_model_down(self, r, msg.reason);
      return;
    }
  if (st.gateway && msg.source == st.gateway.address())
    replace_gateway(self, msg.reason);
}

/// Starts the drain (only once the node's signal handling set drain_signal):
/// every model drains within its pool.drain-timeout; the root waits for
/// them, bounded by the longest timeout plus a grace.
void start_drain(root_actor self) {
  auto& st = self->state;
  if (st.draining || !drain_ordered(self, st.cfg.drain_signal))
    return;
  st.draining = true;
  for (auto& r : st.routes)
    if (r.supervisor)
      self->send(r.supervisor, drain_atom::value);
  self->delayed_send(self, st.longest_drain + drain_grace, tick_atom::value);
}

root_interface::behavior_type root_behavior(root_actor self, root_config cfg) {
  auto& st = self->state;
  st.cfg = std::move(cfg);
  if (st.cfg.models.empty()) {
    self->quit(make_error(pool_errc::invalid_input, "a node serves at least one model"));
    return root_interface::behavior_type::make_empty_behavior();
  }
  if (!st.cfg.metrics)
    st.cfg.metrics = std::make_shared<metrics_registry>();
  st.gateway_limits = st.cfg.models.front().pool;
  if (!st.cfg.bytes)
    st.cfg.bytes =
        std::make_shared<byte_budget>(st.gateway_limits.max_queued_bytes_mib << 20);
  start_models(self);
  start_gateway(self);
  if (st.cfg.publish)
    publish_gateway(self, st.cfg.port, true);
  guard_internal_actor(self, "root");
  self->set_down_handler([=](caf::down_msg& msg) { on_down(self, msg); });
  return {
      [=](gateway_atom) -> caf::result<caf::actor> {
        if (from_other_node(self))
          return make_error(pool_errc::invalid_input, "gateway: not from a peer");
        return self->state.gateway;
      },
      [=](models_atom) -> caf::result<std::vector<supervisor_interface>> {
        if (from_other_node(self))
          return make_error(pool_errc::invalid_input, "models: not from a peer");
        std::vector<supervisor_interface> result;
        for (auto& r : self->state.routes)
          result.push_back(r.supervisor);
        return result;
      },
      [=](republish_atom, uint16_t port, int attempt) {
        if (self->state.gateway && !self->state.draining && !from_other_node(self))
          publish_gateway(self, port, false, attempt);
      },
      [=](drain_atom) { start_drain(self); },
      [=](tick_atom) {
        // The drain's bound: models that did not finish in time are stopped.
        if (self->state.draining && !from_other_node(self))
          finish_drain(self);
      },
  };
}

}  // namespace

root_interface spawn_root(caf::actor_system& sys, root_config cfg) {
  return sys.spawn(root_behavior, std::move(cfg));
}

}  // namespace pool::detail
