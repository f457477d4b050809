#include <chrono>

#include <caf/all.hpp>

#include "actors.hpp"
#include "logging.hpp"
#include "metrics.hpp"

namespace pool::detail {

namespace {

/// Longest description of an unexpected message that goes into the log.
constexpr size_t max_logged_message = 200;

/// Bound on a status query to the supervisor.
constexpr caf::timespan status_timeout = std::chrono::seconds(10);

struct gateway_state {
  static inline const char* name = "embedpool.gateway";
  caf::actor supervisor;            // the default model's
  std::vector<model_route> routes;  // default model first; never empty
  /// Reply counters of each route's model, by index into `routes`.
  std::vector<std::shared_ptr<model_metrics>> metrics;
  pool_section limits;
  uint64_t unexpected = 0;
  std::shared_ptr<metrics_registry> registry;
  std::shared_ptr<spdlog::logger> log = get_logger("gateway");
};

using gateway_actor = caf::stateful_actor<gateway_state>;

std::string describe_message(const caf::type_erased_tuple& xs) {
  std::string result = "(";
  for (size_t i = 0; i < xs.size() && result.size() < max_logged_message; ++i) {
    if (i > 0)
      result += ", ";
    result += bounded(xs.stringify(i), 48);
  }
  result += ")";
  return bounded(result, max_logged_message);
}

/// Counts an error the gateway answers itself (validation, admission) as a
/// reply and passes it on; the supervisor counts the replies it sends.
caf::error counted(gateway_actor* self, size_t route, caf::error err) {
  if (err)
    self->state.metrics[route]->count_reply(reply_code(err));
  return err;
}

/// The index of `model`'s route ("" = the default model), or an
/// `invalid_input` error naming the model and the ones served (counted as
/// the default model's reply).
caf::expected<size_t> find_route(gateway_actor* self, const std::string& model) {
  auto& routes = self->state.routes;
  if (model.empty())
    return size_t{0};
  for (size_t i = 0; i < routes.size(); ++i)
    if (routes[i].name == model)
      return i;
  std::string served;
  for (auto& r : routes)
    served += (served.empty() ? "" : ", ") + r.name;
  return counted(
      self, 0,
      make_error(pool_errc::invalid_input, "unknown model \"" + bounded(model, 64) +
                                               "\"; this node serves: " + served));
}

caf::error validate_batch(const std::vector<std::string>& texts,
                          const pool_section& limits) {
  if (texts.empty())
    return make_error(pool_errc::invalid_input, "batch is empty");
  if (texts.size() > limits.max_batch_items)
    return make_error(pool_errc::too_large, "batch has " + std::to_string(texts.size()) +
                                                " texts; pool.max-batch-items is " +
                                                std::to_string(limits.max_batch_items));
  for (size_t i = 0; i < texts.size(); ++i)
    if (auto err = validate_text(texts[i], limits.max_text_bytes,
                                 "texts[" + std::to_string(i) + "]"))
      return err;
  return caf::none;
}

/// Hands validated work to the supervisor, which answers the peer directly
/// (delegation: no second response handler or promise per request here).
/// No CAF timeout per request: CAF 0.17 keeps every request timeout in the
/// actor clock until it fires, which would hold memory proportional to the
/// offered rate for pool.request-timeout. The supervisor answers every request
/// by its deadline; if it is gone, CAF bounces the request to the peer.
caf::result<matrix> submit(gateway_actor* self, size_t route, lane ln,
                           std::vector<std::string> texts, std::string task) {
  auto& target = self->state.routes[route];
  auto& gate = *target.gate;
  if (gate.queued.load(std::memory_order_relaxed) >= gate.limit) {
    gate.shed.fetch_add(1, std::memory_order_relaxed);
    return counted(self, route,
                   make_error(pool_errc::overloaded,
                              "the supervisor is behind (" + std::to_string(gate.limit) +
                                  " requests queued for it); retry after " +
                                  std::to_string(overload_retry_after_ms) + "ms"));
  }
  gate.queued.fetch_add(1, std::memory_order_relaxed);
  auto rp = self->make_response_promise();
  rp.delegate(target.supervisor, submit_atom::value, static_cast<uint8_t>(ln),
              std::move(texts), std::move(task));
  return rp;
}

caf::result<matrix> handle_embed(gateway_actor* self, std::string& text,
                                 std::string& task, const std::string& model = {}) {
  auto route = find_route(self, model);
  if (!route)
    return route.error();
  if (auto err = validate_text(text, self->state.limits.max_text_bytes, "text"))
    return counted(self, *route, std::move(err));
  std::vector<std::string> texts;
  texts.emplace_back(std::move(text));
  return submit(self, *route, lane::embed, std::move(texts), std::move(task));
}

caf::result<matrix> handle_batch(gateway_actor* self, std::vector<std::string>& texts,
                                 std::string& task, const std::string& model = {}) {
  auto route = find_route(self, model);
  if (!route)
    return route.error();
  if (auto err = validate_batch(texts, self->state.limits))
    return counted(self, *route, std::move(err));
  return submit(self, *route, lane::batch, std::move(texts), std::move(task));
}

caf::result<pool_status> handle_status(gateway_actor* self, const std::string& model) {
  auto route = find_route(self, model);
  if (!route)
    return route.error();
  auto rp = self->make_response_promise<pool_status>();
  self->request(self->state.routes[*route].supervisor, status_timeout, status_atom::value)
      .then([rp](pool_status& st) mutable { rp.deliver(std::move(st)); },
            [rp](caf::error& err) mutable { rp.deliver(std::move(err)); });
  return rp;
}

/// The supervisor of the model named `name`. Names come from the statuses'
/// `models`, which are the routes' names; the default model's otherwise.
caf::actor route_supervisor(gateway_actor* self, const std::string& name) {
  for (auto& r : self->state.routes)
    if (r.name == name)
      return r.supervisor;
  return self->state.supervisor;
}

/// Every model a status reply says the node serves, default first.
std::vector<std::string> served_models(const pool_status& st) {
  if (st.models.empty())
    return {st.model};
  return st.models;
}

/// Collects the status of every model the supervisor serves (the plain
/// `(status_atom)` reply is the default model's; further models are asked by
/// name), then renders the exposition.
caf::result<std::string> handle_metrics(gateway_actor* self) {
  auto rp = self->make_response_promise<std::string>();
  self->request(self->state.supervisor, status_timeout, status_atom::value)
      .then(
          [self, rp](pool_status& first) mutable {
            auto names = served_models(first);
            auto others = names.size() > 1 ? names.size() - 1 : 0;
            auto statuses = std::make_shared<std::vector<pool_status>>();
            statuses->reserve(others + 1);
            statuses->push_back(std::move(first));
            auto finish = [self, rp, statuses]() mutable {
              node_gauges node;
              node.resident_bytes = resident_memory_bytes();
              rp.deliver(render_prometheus(*self->state.registry, *statuses, node));
            };
            if (others == 0) {
              finish();
              return;
            }
            auto outstanding = std::make_shared<size_t>(others);
            for (size_t i = 1; i < names.size(); ++i)
              self->request(route_supervisor(self, names[i]), status_timeout,
                            status_atom::value)
                  .then(
                      [statuses, outstanding, finish](pool_status& st) mutable {
                        statuses->push_back(std::move(st));
                        if (--*outstanding == 0)
                          finish();
                      },
                      [rp, outstanding](caf::error& err) mutable {
                        if (*outstanding != 0) {
                          *outstanding = 0;
                          rp.deliver(std::move(err));
                        }
                      });
          },
          [rp](caf::error& err) mutable { rp.deliver(std::move(err)); });
  return rp;
}

caf::behavior gateway_behavior(gateway_actor* self, std::vector<model_route> routes,
                               pool_section limits,
                               std::shared_ptr<metrics_registry> registry) {
  self->state.routes = std::move(routes);
  self->state.supervisor = self->state.routes.front().supervisor;
  self->state.limits = limits;
  if (!registry)
    registry = std::make_shared<metrics_registry>();
  for (auto& r : self->state.routes)
    self->state.metrics.push_back(registry->model(r.name));
  self->state.registry = std::move(registry);
  // Without its supervisor the gateway could never answer: go down with it.
  self->monitor(self->state.supervisor);
  self->set_down_handler([=](caf::down_msg& msg) {
    if (msg.source == self->state.supervisor.address())
      self->quit(msg.reason);
  });
  self->set_default_handler([self](caf::scheduled_actor*,
                                   caf::message_view& view) -> caf::result<caf::message> {
    auto& st = self->state;
    ++st.unexpected;
    auto& content = view.content();
    auto what = describe_message(content);
    log_event("unexpected_message")
        .add("content", what)
        .add("total", st.unexpected)
        .write(*st.log, spdlog::level::warn);
    return make_error(pool_errc::invalid_input,
                      "unsupported message " + what +
                          "; expected (embed, text [, task [, model]]), (batch, texts "
                          "[, task [, model]]), (status [, model]) or (metrics)");
  });
  return {
      [=](embed_atom, std::string& text) {
        std::string no_task;
        return handle_embed(self, text, no_task);
      },
      [=](embed_atom, std::string& text, std::string& task) {
        return handle_embed(self, text, task);
      },
      [=](batch_atom, std::vector<std::string>& texts) {
        std::string no_task;
        return handle_batch(self, texts, no_task);
      },
      [=](batch_atom, std::vector<std::string>& texts, std::string& task) {
        return handle_batch(self, texts, task);
      },
      [=](embed_atom, std::string& text, std::string& task, std::string& model) {
        return handle_embed(self, text, task, model);
      },
      [=](batch_atom, std::vector<std::string>& texts, std::string& task,
          std::string& model) { return handle_batch(self, texts, task, model); },
      // Worker nodes lend and take back their workers through the gateway; the
      // supervisor itself is never reachable from peers.
      [=](join_atom a, std::string& node, std::vector<caf::actor>& workers) {
        return self->delegate(self->state.supervisor, a, std::move(node),
                              std::move(workers));
      },
      [=](leave_atom a, std::string& node) {
        return self->delegate(self->state.supervisor, a, std::move(node));
      },
      [=](status_atom) { return handle_status(self, {}); },
      [=](status_atom, std::string& model) { return handle_status(self, model); },
      [=](metrics_atom) { return handle_metrics(self); },
      // The handshake a peer sends first (pool/version.hpp): another protocol
      // version gets `protocol_mismatch` naming both instead of garbled replies.
      [=](hello_atom,
          uint32_t protocol) -> caf::result<hello_atom, uint32_t, std::string> {
        if (auto err = check_peer_protocol(protocol)) {
          log_event("protocol_mismatch")
              .add("peer_protocol", protocol)
              .add("protocol", protocol_version)
              .write(*self->state.log, spdlog::level::warn);
          return err;
        }
        return {hello_atom::value, protocol_version, version_string()};
      },
  };
}

}  // namespace

bool is_valid_utf8(std::string_view text) {
  auto* p = reinterpret_cast<const unsigned char*>(text.data());
  auto* end = p + text.size();
  while (p < end) {
    unsigned char c = *p;
    if (c < 0x80) {
      ++p;
      continue;
    }
    size_t len;
    uint32_t cp;
    if ((c & 0xE0) == 0xC0) {
      len = 2;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (static_cast<size_t>(end - p) < len)
      return false;
    for (size_t i = 1; i < len; ++i) {
      if ((p[i] & 0xC0) != 0x80)
        return false;
      cp = (cp << 6) | (p[i] & 0x3F);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) ||
        (len == 4 && cp < 0x10000) || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
      return false;
    p += len;
  }
  return true;
}

caf::error validate_text(const std::string& text, uint32_t max_text_bytes,
                         const std::string& what) {
  if (text.empty())
    return make_error(pool_errc::invalid_input, what + " is empty");
  if (text.size() > max_text_bytes)
    return make_error(pool_errc::too_large, what + " has " + std::to_string(text.size()) +
                                                " bytes; pool.max-text-bytes is " +
                                                std::to_string(max_text_bytes));
  if (!is_valid_utf8(text))
    return make_error(pool_errc::invalid_input, what + " is not valid UTF-8");
  return caf::none;
}

caf::actor spawn_gateway(caf::local_actor* parent, std::vector<model_route> routes,
                         const pool_section& limits,
                         std::shared_ptr<metrics_registry> registry) {
  return parent->spawn(gateway_behavior, std::move(routes), limits, std::move(registry));
}

caf::actor spawn_gateway(caf::local_actor* parent, caf::actor supervisor,
                         const pool_section& limits, std::shared_ptr<admission_gate> gate,
                         std::shared_ptr<metrics_registry> registry,
                         const std::string& model_name) {
  std::vector<model_route> routes;
  routes.push_back(model_route{model_name, std::move(supervisor), std::move(gate)});
  return spawn_gateway(parent, std::move(routes), limits, std::move(registry));
}

}  // namespace pool::detail
