#include <chrono>
#include <functional>
#include <optional>
#include <unordered_map>
#include <unordered_set>

#include <utf8proc.h>

#include <caf/all.hpp>
#include <caf/io/middleman.hpp>
#include <caf/io/middleman_actor.hpp>

#include "actors.hpp"
#include "core/ledger.hpp"
#include "defaults.hpp"
#include "guarded_actor.hpp"
#include "logging.hpp"
#include "metrics.hpp"
#include "peer_backlog.hpp"
#include "peer_guard.hpp"
#include "request_log.hpp"

namespace pool::detail {

namespace {

/// Gets a model's status (or why not).
using status_waiter = std::function<void(caf::expected<pool_status>)>;

/// A model's latest status and who waits for the next one.
struct status_snapshot {
  std::optional<pool_status> value;
  caf::actor_clock::time_point at;
  std::vector<status_waiter> waiting;
};

/// A request the gateway has passed to a supervisor and will answer itself.
struct pending_answer {
  caf::response_promise rp;
  size_t route = 0;
  uint64_t charged = 0;  // its bytes of the node's byte_budget
  /// A list of embeds: the verdict on each text (set for the ones refused
  /// before submission); the supervisor's matrix holds the rows of the rest.
  /// Null for a single embed or a batch.
  std::shared_ptr<std::vector<caf::error>> item_errors;
  uint64_t weight = 1;  // core::request_weight: the replies it counts as
};

struct gateway_state {
  static inline const char* name = "embedpool.gateway";
  std::vector<model_route> routes;  // default model first; never empty
  /// Routes whose supervisor is down (drained or died), by index.
  std::vector<bool> route_down;
  /// Reply counters of each route's model, by index into `routes`.
  std::vector<std::shared_ptr<model_metrics>> metrics;
  pool_section limits;
  std::shared_ptr<metrics_registry> registry;
  /// Requests passed to a supervisor, by ticket; each is answered exactly
  /// once: by the supervisor's answer, or `unavailable` if it dies.
  std::unordered_map<uint64_t, pending_answer> pending;
  uint64_t next_ticket = 1;
  /// Worker nodes whose join succeeded: only their workers' answers are
  /// passed on (a set of the few nodes that ever joined).
  std::unordered_set<caf::node_id> lenders;
  /// Status of each route's model, served while at most status_max_age old.
  std::vector<status_snapshot> snapshots;
  caf::timespan status_max_age = std::chrono::milliseconds(100);
  std::shared_ptr<spdlog::logger> log = get_logger("gateway");
  /// Bounds the gateway's lines about single requests (request_log.hpp).
  request_log_limiter request_lines;
};

using gateway_actor = caf::stateful_actor<gateway_state>;

/// Counts an error the gateway answers itself (validation, admission) as
/// `weight` replies and passes it on; the supervisors count the answers they
/// give.
caf::error counted(gateway_actor* self, size_t route, caf::error err,
                   uint64_t weight = 1) {
  if (err)
    self->state.metrics[route]->count_reply(reply_code(err), weight);
  return err;
}

/// Counts and logs a request the gateway refuses itself (validation,
/// admission) and passes the error on. `model` names an unknown model
/// asked for; by default the route's.
caf::error refused(gateway_actor* self, size_t route, const request_origin& origin,
                   caf::error err, const std::string& model = {}, uint64_t weight = 1) {
  auto& st = self->state;
  log_request(st.request_lines, *st.log, spdlog::level::info, "request_rejected", origin,
              model.empty() ? st.routes[route].name : bounded(model, 64),
              [&](log_event& ev) { add_answer_error(ev, err); });
  return counted(self, route, std::move(err), weight);
}

/// The index of `model`'s route ("" = the default model), or an
/// `invalid_input` error naming the model and the ones served (the caller
/// counts it as the default model's reply).
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
  return make_error(pool_errc::invalid_input, "unknown model \"" + bounded(model, 64) +
                                                  "\"; this node serves: " + served);
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

/// The route whose supervisor sent the current message, or none: answers are
/// taken from the gateway's own supervisors only.
std::optional<size_t> sending_route(gateway_actor* self) {
  auto& sender = self->current_sender();
  if (!sender)
    return std::nullopt;
  auto& routes = self->state.routes;
  for (size_t i = 0; i < routes.size(); ++i)
    if (routes[i].supervisor &&
        sender == caf::actor_cast<caf::strong_actor_ptr>(routes[i].supervisor))
      return i;
  return std::nullopt;
}

/// Passes validated work to the supervisor of `route` under a fresh ticket,
/// or returns why not (counted and logged). The gateway answers the peer
/// itself when the supervisor's answer comes back: no internal actor ever
/// sends to a peer. No CAF timeout per request (CAF 0.17 keeps every request
/// timeout in the actor clock until it fires); the supervisor answers every
/// ticket by its deadline, and if it dies the gateway answers its tickets
/// `unavailable`. `item_errors`: see `pending_answer`.
caf::error submit(gateway_actor* self, size_t route, lane ln,
                  std::vector<std::string> texts, std::string task,
                  request_origin& origin,
                  std::shared_ptr<std::vector<caf::error>> item_errors = nullptr) {
  auto& st = self->state;
  auto& target = st.routes[route];
  const auto weight = core::request_weight(ln, texts.size());
  if (st.route_down[route])
    return refused(self, route, origin,
                   make_error(pool_errc::unavailable,
                              "the supervisor of model \"" + target.name + "\" stopped"),
                   {}, weight);
  auto& gate = *target.gate;
  if (gate.queued.load(std::memory_order_relaxed) >= gate.limit) {
    gate.shed.fetch_add(weight, std::memory_order_relaxed);
    return refused(self, route, origin,
                   make_error(pool_errc::overloaded,
                              "the supervisor is behind (" + std::to_string(gate.limit) +
                                  " requests queued for it); retry after " +
                                  std::to_string(overload_retry_after_ms) + "ms"),
                   {}, weight);
  }
  submission sub;
  if (target.bytes) {
    auto cost = byte_budget::cost(texts);
    if (!target.bytes->try_take(cost)) {
      gate.shed.fetch_add(weight, std::memory_order_relaxed);
      return refused(self, route, origin,
                     make_error(pool_errc::overloaded,
                                "the node holds pool.max-queued-bytes (" +
                                    std::to_string(target.bytes->limit >> 20) +
                                    " MiB) of request text; retry after " +
                                    std::to_string(overload_retry_after_ms) + "ms"),
                     {}, weight);
    }
    sub.charged = cost;
  }
  sub.origin = std::move(origin);
  gate.queued.fetch_add(1, std::memory_order_relaxed);
  sub.ticket = st.next_ticket++;
  sub.ln = ln;
  sub.texts = std::move(texts);
  sub.task = std::move(task);
  st.pending.emplace(sub.ticket,
                     pending_answer{self->make_response_promise(), route, sub.charged,
                                    std::move(item_errors), weight});
  self->send(target.supervisor, submit_atom::value, std::move(sub));
  return caf::none;
}

/// Delivers a supervisor's answer to the peer that holds `ticket`.
template <class T>
void deliver(gateway_actor* self, uint64_t ticket, T&& result) {
  auto route = sending_route(self);
  if (!route)
    return;
  auto& pending = self->state.pending;
  auto i = pending.find(ticket);
  if (i == pending.end() || i->second.route != *route)
    return;
  auto rp = std::move(i->second.rp);
  auto item_errors = std::move(i->second.item_errors);
  pending.erase(i);
  if constexpr (std::is_same_v<std::decay_t<T>, matrix>) {
    if (item_errors) {
      rp.deliver(embed_answers{std::forward<T>(result), std::move(*item_errors)});
      return;
    }
  }
  // An error answers every text of a list of embeds alike.
  rp.deliver(std::forward<T>(result));
}

/// Answers every ticket of `route` with `unavailable`: its supervisor died.
void fail_route(gateway_actor* self, size_t route, const caf::error& reason) {
  auto& st = self->state;
  for (auto i = st.pending.begin(); i != st.pending.end();) {
    if (i->second.route != route) {
      ++i;
      continue;
    }
    auto err = make_error(pool_errc::unavailable, "the supervisor of model \"" +
                                                      st.routes[route].name +
                                                      "\" stopped: " + to_string(reason));
    st.metrics[route]->count_reply(reply_code(err), i->second.weight);
    i->second.rp.deliver(std::move(err));
    // Its supervisor is gone and gives nothing back any more.
    if (auto& bytes = st.routes[route].bytes)
      bytes->give_back(i->second.charged);
    i = st.pending.erase(i);
  }
}

/// The origin of the request being handled: the id the peer sent (checked)
/// or a fresh number, and the sending node. `client_address` (an HTTP
/// client's, named by the HTTP front) is taken from local senders only.
caf::expected<request_origin> origin_of(gateway_actor* self, std::string request_id,
                                        std::string* client_address = nullptr) {
  request_origin origin;
  if (!request_id.empty() && !valid_request_id(request_id))
    return make_error(pool_errc::invalid_input,
                      "request_id: 1 to " + std::to_string(max_request_id_bytes) +
                          " bytes of letters, digits and ._:- expected");
  if (request_id.empty())
    origin.seq = next_request_seq();
  else
    origin.id = std::move(request_id);
  if (from_other_node(self)) {
    origin.node = self->current_sender()->node();
  } else if (client_address != nullptr) {
    origin.http = true;
    origin.address = std::move(*client_address);
  }
  return origin;
}

caf::result<matrix> handle_embed(gateway_actor* self, std::string& text,
                                 std::string& task, const std::string& model = {},
                                 std::string request_id = {},
                                 std::string* client_address = nullptr) {
  auto origin = origin_of(self, std::move(request_id), client_address);
  if (!origin)
    return counted(self, 0, std::move(origin.error()));
  auto route = find_route(self, model);
  if (!route)
    return refused(self, 0, *origin, std::move(route.error()), model);
  if (auto err = validate_text(text, self->state.limits.max_text_bytes, "text"))
    return refused(self, *route, *origin, std::move(err));
  std::vector<std::string> texts;
  texts.emplace_back(std::move(text));
  if (auto err =
          submit(self, *route, lane::embed, std::move(texts), std::move(task), *origin))
    return err;
  return caf::delegated<matrix>{};
}

/// A list of independent embeds in one message (protocol.hpp): each text is
/// validated on its own and refused alone; the valid ones go to the
/// supervisor as one embed-lane request.
caf::result<embed_answers> handle_embed_list(gateway_actor* self,
                                             std::vector<std::string>& texts,
                                             std::string& task,
                                             const std::string& model) {
  auto origin = origin_of(self, {});
  if (!origin)
    return counted(self, 0, std::move(origin.error()));
  const auto& limits = self->state.limits;
  // A list counts as its texts in the reply metrics; one longer than
  // pool.max-batch-items is a malformed message and counts once, so that a
  // peer cannot add millions of replies to the metrics with one message.
  const bool too_long = texts.size() > limits.max_batch_items;
  auto route = find_route(self, model);
  if (!route)
    return refused(self, 0, *origin, std::move(route.error()), model,
                   too_long ? 1 : core::request_weight(lane::embed, texts.size()));
  if (texts.empty())
    return refused(self, *route, *origin,
                   make_error(pool_errc::invalid_input, "embed list is empty"));
  if (too_long)
    return refused(self, *route, *origin,
                   make_error(pool_errc::too_large,
                              "embed list has " + std::to_string(texts.size()) +
                                  " texts; pool.max-batch-items is " +
                                  std::to_string(limits.max_batch_items)));
  auto item_errors = std::make_shared<std::vector<caf::error>>(texts.size());
  std::vector<std::string> valid;
  valid.reserve(texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    if (auto err = validate_text(texts[i], limits.max_text_bytes,
                                 "texts[" + std::to_string(i) + "]"))
      (*item_errors)[i] = refused(self, *route, *origin, std::move(err));
    else
      valid.emplace_back(std::move(texts[i]));
  }
  if (valid.empty())
    return embed_answers{matrix{}, std::move(*item_errors)};
  if (auto err = submit(self, *route, lane::embed, std::move(valid), std::move(task),
                        *origin, item_errors))
    return err;
  return caf::delegated<embed_answers>{};
}

caf::result<matrix> handle_batch(gateway_actor* self, std::vector<std::string>& texts,
                                 std::string& task, const std::string& model = {},
                                 std::string request_id = {},
                                 std::string* client_address = nullptr) {
  auto origin = origin_of(self, std::move(request_id), client_address);
  if (!origin)
    return counted(self, 0, std::move(origin.error()));
  auto route = find_route(self, model);
  if (!route)
    return refused(self, 0, *origin, std::move(route.error()), model);
  if (auto err = validate_batch(texts, self->state.limits))
    return refused(self, *route, *origin, std::move(err));
  if (auto err =
          submit(self, *route, lane::batch, std::move(texts), std::move(task), *origin))
    return err;
  return caf::delegated<matrix>{};
}

/// Asks `target` (a local actor) and answers the peer itself.
template <class Reply, class Handle, class Timeout, class... Ts>
caf::result<Reply> ask_and_answer(gateway_actor* self, const Handle& target,
                                  Timeout timeout, Ts&&... xs) {
  auto rp = self->make_response_promise<Reply>();
  self->request(target, timeout, std::forward<Ts>(xs)...)
      .then([rp](Reply& reply) mutable { rp.deliver(std::move(reply)); },
            [rp](caf::error& err) mutable { rp.deliver(std::move(err)); });
  return rp;
}

/// Calls `k` with the status of `route`'s model: the snapshot if it is at
/// most `status_max_age` old, else a fresh one. At most one question per
/// model is on its way to the supervisor; callers in the meantime wait for
/// its answer, at most `max_status_waiters` of them (others get
/// `overloaded`). So a flood of status or metrics requests costs the
/// supervisor one question per max-age.
void fetch_status(gateway_actor* self, size_t route, status_waiter k) {
  auto& st = self->state;
  auto& snap = st.snapshots[route];
  auto now = self->clock().now();
  if (snap.value && now - snap.at <= st.status_max_age) {
    k(*snap.value);
    return;
  }
  if (snap.waiting.size() >= max_status_waiters) {
    k(make_error(pool_errc::overloaded, "too many status requests at once; retry after " +
                                            std::to_string(overload_retry_after_ms) +
                                            "ms"));
    return;
  }
  snap.waiting.push_back(std::move(k));
  if (snap.waiting.size() > 1)
    return;  // a question is on its way
  self->request(st.routes[route].supervisor, status_timeout, status_atom::value)
      .then(
          [self, route](pool_status& fresh) {
            auto& s = self->state.snapshots[route];
            s.value = std::move(fresh);
            s.at = self->clock().now();
            for (auto& w : std::exchange(s.waiting, {}))
              w(*s.value);
          },
          [self, route](caf::error& err) {
            for (auto& w : std::exchange(self->state.snapshots[route].waiting, {}))
              w(err);
          });
}

caf::result<pool_status> handle_status(gateway_actor* self, const std::string& model) {
  auto route = find_route(self, model);
  if (!route)
    return counted(self, 0, std::move(route.error()));
  auto rp = self->make_response_promise<pool_status>();
  fetch_status(self, *route, [rp](caf::expected<pool_status> st) mutable {
    if (st)
      rp.deliver(std::move(*st));
    else
      rp.deliver(std::move(st.error()));
  });
  return rp;
}

/// Collects the status of every model, then renders the exposition.
caf::result<std::string> handle_metrics(gateway_actor* self) {
  auto rp = self->make_response_promise<std::string>();
  auto routes = self->state.routes.size();
  auto statuses = std::make_shared<std::vector<pool_status>>(routes);
  auto outstanding = std::make_shared<size_t>(routes);
  for (size_t i = 0; i < routes; ++i)
    fetch_status(
        self, i,
        [self, rp, statuses, outstanding, i](caf::expected<pool_status> st) mutable {
          if (*outstanding == 0)
            return;  // answered with an error already
          if (!st) {
            *outstanding = 0;
            rp.deliver(std::move(st.error()));
            return;
          }
          (*statuses)[i] = std::move(*st);
          if (--*outstanding > 0)
            return;
          rp.deliver(
              render_prometheus(*self->state.registry, *statuses, read_node_gauges()));
        });
  return rp;
}

/// Logs a due line about refused or unsupported peer messages with the
/// peer's address, which the middleman knows.
void log_refused(gateway_actor* self, const std::string& what, const caf::node_id& node,
                 uint64_t count) {
  if (!node) {
    log_foreign("gateway", what, node, "", count);
    return;
  }
  auto mm = self->system().middleman().actor_handle();
  self->request(mm, resolve_timeout, caf::get_atom::value, node)
      .then(
          [=](caf::node_id&, std::string& host, uint16_t port) {
            log_foreign("gateway", what, node,
                        host.empty() ? "" : host + ":" + std::to_string(port), count);
          },
          [=](caf::error&) { log_foreign("gateway", what, node, "", count); });
}

/// Worker nodes' workers answer the gateway (the only actor that sends to
/// them); answers from a node that has joined go on to the default model's
/// supervisor with the worker as sender, which checks them against its
/// workers and jobs. Anything else is dropped and counted.
/// The size of the message being handled, as charged to the inbox (at least
/// the per-message overhead).
uint64_t inbox_charge(gateway_actor* self) {
  // Every gateway is spawned as a guarded_actor (spawn_gateway).
  auto charge = static_cast<guarded_actor<gateway_state>*>(self)->current_inbox_charge();
  return std::max<uint64_t>(charge, 128);
}

bool from_remote_worker(gateway_actor* self) {
  auto& sender = self->current_sender();
  if (from_other_node(self) && self->state.lenders.count(sender->node()) > 0)
    return true;
  if (from_other_node(self))
    note_dropped_from(sender->node(), inbox_charge(self));
  if (auto n = foreign_messages::instance().note(); n > 0)
    log_refused(self, "worker answer from a node that never joined",
                sender ? sender->node() : caf::node_id{}, n);
  return false;
}

caf::behavior gateway_behavior(gateway_actor* self, std::vector<model_route> routes,
                               pool_section limits,
                               std::shared_ptr<metrics_registry> registry,
                               caf::timespan status_max_age) {
  auto& st = self->state;
  st.routes = std::move(routes);
  st.snapshots.resize(st.routes.size());
  st.route_down.resize(st.routes.size());
  st.status_max_age = status_max_age;
  st.limits = limits;
  if (!registry)
    registry = std::make_shared<metrics_registry>();
  for (auto& r : st.routes)
    st.metrics.push_back(registry->model(r.name));
  st.registry = std::move(registry);
  // A supervisor that goes down fails its tickets, and later requests for
  // its model are answered `unavailable`; with no supervisor left the
  // gateway could never answer and goes down too.
  for (auto& r : st.routes)
    self->monitor(r.supervisor);
  self->set_down_handler([=](caf::down_msg& msg) {
    auto& s = self->state;
    for (size_t i = 0; i < s.routes.size(); ++i) {
      if (s.route_down[i] || msg.source != s.routes[i].supervisor.address())
        continue;
      fail_route(self, i, msg.reason);
      s.route_down[i] = true;
      if (std::all_of(s.route_down.begin(), s.route_down.end(), [](bool d) { return d; }))
        self->quit(msg.reason);
      return;
    }
  });
  self->set_error_handler([](caf::error&) {});  // refused in enqueue already
  self->set_default_handler([self](caf::scheduled_actor*,
                                   caf::message_view& view) -> caf::result<caf::message> {
    auto& sender = self->current_sender();
    if (sender && sender->node() != self->home_system().node())
      note_dropped_from(sender->node(), inbox_charge(self));
    if (auto n = foreign_messages::instance().note(); n > 0)
      log_refused(self, "unsupported " + message_kind(view.content()),
                  sender ? sender->node() : caf::node_id{}, n);
    return make_error(pool_errc::invalid_input,
                      "unsupported message; expected (embed, text [, task [, model [, "
                      "request_id]]]), (batch, texts [, task [, model [, request_id]]]), "
                      "(embed, texts, task, model), (status [, model]) or (metrics)");
  });
  auto default_supervisor = [self] { return self->state.routes.front().supervisor; };
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
      [=](embed_atom, std::vector<std::string>& texts, std::string& task,
          std::string& model) { return handle_embed_list(self, texts, task, model); },
      [=](embed_atom, std::string& text, std::string& task, std::string& model,
          std::string& request_id) {
        return handle_embed(self, text, task, model, std::move(request_id));
      },
      [=](batch_atom, std::vector<std::string>& texts, std::string& task,
          std::string& model, std::string& request_id) {
        return handle_batch(self, texts, task, model, std::move(request_id));
      },
      // From the node's HTTP front: the client's address for the log lines.
      [=](embed_atom, std::string& text, std::string& task, std::string& model,
          std::string& request_id, std::string& client_address) {
        return handle_embed(self, text, task, model, std::move(request_id),
                            &client_address);
      },
      [=](batch_atom, std::vector<std::string>& texts, std::string& task,
          std::string& model, std::string& request_id, std::string& client_address) {
        return handle_batch(self, texts, task, model, std::move(request_id),
                            &client_address);
      },
      [=](status_atom) { return handle_status(self, {}); },
      [=](status_atom, std::string& model) { return handle_status(self, model); },
      [=](metrics_atom) { return handle_metrics(self); },
      // Worker nodes lend and take back their workers through the gateway,
      // which names the node that asked: only that node may take them back.
      [=](join_atom a, std::string& name,
          std::vector<caf::actor>& workers) -> caf::result<uint32_t> {
        if (!from_other_node(self))
          return make_error(pool_errc::invalid_input,
                            "join: only a worker node may join");
        auto node = self->current_sender()->node();
        auto rp = self->make_response_promise<uint32_t>();
        self->request(default_supervisor(), status_timeout, a, node, std::move(name),
                      std::move(workers))
            .then(
                [=](uint32_t added) mutable {
                  self->state.lenders.insert(node);
                  rp.deliver(added);
                },
                [=](caf::error& err) mutable { rp.deliver(std::move(err)); });
        return rp;
      },
      [=](leave_atom a, std::string& name) -> caf::result<uint32_t> {
        if (!from_other_node(self))
          return make_error(pool_errc::invalid_input,
                            "leave: only a worker node may leave");
        auto node = self->current_sender()->node();
        return ask_and_answer<uint32_t>(self, default_supervisor(), caf::infinite, a,
                                        node, std::move(name));
      },
      [=](answer_atom, uint64_t ticket, matrix& result) {
        deliver(self, ticket, std::move(result));
      },
      [=](answer_atom, uint64_t ticket, caf::error& err) {
        deliver(self, ticket, std::move(err));
      },
      [=](done_atom a, uint64_t id, matrix& result) {
        if (from_remote_worker(self))
          self->delegate(default_supervisor(), a, id, std::move(result));
      },
      [=](fail_atom a, uint64_t id, caf::error& err) {
        if (from_remote_worker(self))
          self->delegate(default_supervisor(), a, id, std::move(err));
      },
      [=](pong_atom a, uint64_t seq, worker_report report) {
        if (from_remote_worker(self))
          self->delegate<caf::message_priority::high>(default_supervisor(), a, seq,
                                                      report);
      },
      [=](refused_note& note) { log_refused(self, note.what, note.node, note.count); },
      // The handshake a peer sends first (pool/version.hpp): another protocol
      // version gets `protocol_mismatch` naming both instead of garbled replies.
      [=](hello_atom,
          uint32_t protocol) -> caf::result<hello_atom, uint32_t, std::string> {
        if (auto err = check_peer_protocol(protocol)) {
          // A peer can send any number of these: one line a second at most.
          if (foreign_messages::instance().note() > 0)
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
  auto* p = reinterpret_cast<const utf8proc_uint8_t*>(text.data());
  auto left = static_cast<utf8proc_ssize_t>(text.size());
  while (left > 0) {
    if (*p < 0x80) {  // ASCII: one byte, always valid
      ++p;
      --left;
      continue;
    }
    utf8proc_int32_t cp = 0;
    auto len = utf8proc_iterate(p, left, &cp);
    if (len <= 0)
      return false;
    p += len;
    left -= len;
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
                         std::shared_ptr<metrics_registry> registry,
                         caf::timespan status_max_age) {
  using impl = guarded_actor<gateway_state>;
  auto budget = routes.empty() ? nullptr : routes.front().bytes;
  auto gate = routes.empty() ? nullptr : routes.front().gate;
  impl::init_fn init = [routes = std::move(routes), limits,
                        registry = std::move(registry),
                        status_max_age](impl* self) mutable {
    return gateway_behavior(self, std::move(routes), limits, std::move(registry),
                            status_max_age);
  };
  // Only its parent (the node root) may stop it with an exit message.
  impl::options opts;
  opts.owner = parent->address();
  opts.self_logs = true;
  opts.bounded_inbox = true;
  opts.request_budget = budget;
  // Requests shed at the door count as rejected in the default model's
  // ledger (the door does not read which model they name).
  if (gate)
    opts.count_shed_request = [gate] {
      gate->shed.fetch_add(1, std::memory_order_relaxed);
    };
  // Answers of lent workers are bounded by the credits that sent their jobs;
  // a forged one is dropped by its handler (and counts against its peer).
  opts.outside_inbox_bound = [](const caf::type_erased_tuple& content) {
    return content.size() > 0 &&
           (content.match_element<done_atom>(0) || content.match_element<fail_atom>(0) ||
            content.match_element<pong_atom>(0));
  };
  return parent->spawn<impl>(std::move(opts), std::move(init));
}

caf::actor spawn_gateway(caf::local_actor* parent, supervisor_interface supervisor,
                         const pool_section& limits, std::shared_ptr<admission_gate> gate,
                         std::shared_ptr<metrics_registry> registry,
                         const std::string& model_name) {
  std::vector<model_route> routes;
  routes.push_back(
      model_route{model_name, std::move(supervisor), std::move(gate), nullptr});
  return spawn_gateway(parent, std::move(routes), limits, std::move(registry));
}

}  // namespace pool::detail
