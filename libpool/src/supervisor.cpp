// One model's supervisor: message handlers -> the pool's rules (core/) ->
// sends and log lines. It holds what the rules must not: the workers' actors
// (worker_handles.hpp), each request's reply address, the response promises
// of leaving worker nodes, and the timers (tick, restarts).
#include <algorithm>
#include <optional>
#include <unordered_map>
#include <variant>

#include <caf/all.hpp>

#include "actors.hpp"
#include "core/ledger.hpp"
#include "core/scaling.hpp"
#include "core/slots.hpp"
#include "defaults.hpp"
#include "logging.hpp"
#include "metrics.hpp"
#include "peer_guard.hpp"
#include "status.hpp"
#include "supervisor_log.hpp"
#include "worker_handles.hpp"

namespace pool::detail {

namespace {

namespace log_line = supervisor_log;
using time_point = core::time_point;

struct supervisor_state {
  static inline const char* name = "embedpool.supervisor";

  supervisor_config cfg;
  worker_limits limits;
  std::optional<core::slot_table> slots;  // the rules, made once cfg is known
  std::optional<core::ledger> ledger;
  std::optional<core::scaler> scaling;
  worker_handles workers;
  /// Who gets each accepted request's answer (the gateway, or a test's
  /// probe), by request id.
  std::unordered_map<uint64_t, caf::actor> reply_to;
  /// Worker nodes leaving: answered once none of their workers holds a job.
  std::unordered_map<std::string, caf::response_promise> leaving_nodes;
  /// The node's gateway (from the root): lent workers are reached through it.
  caf::actor gateway;
  bool draining = false;
  time_point drain_deadline;
  caf::timespan tick{0};
  time_point last_stats;
  std::shared_ptr<model_metrics> metrics;  // never null once started
  std::shared_ptr<spdlog::logger> log = get_logger("supervisor");
  /// Bounds the lines about single requests (request_log.hpp).
  request_log_limiter request_lines;
  // Local workers monitor their supervisor and quit with it; the slot table
  // gives back the memory it reserved.
};

using supervisor_actor = supervisor_interface::stateful_pointer<supervisor_state>;

time_point now_of(supervisor_actor self) {
  return self->clock().now();
}

core::slot& slot_at(supervisor_actor self, uint32_t id) {
  return (*self->state.slots)[id];
}

/// Writes a supervisor event; on a node with several models it names the
/// model (`model=NAME` last).
void write_event(supervisor_actor self, log_event ev, spdlog::level::level_enum lvl) {
  auto& st = self->state;
  if (st.cfg.model_names.size() > 1)
    ev.add("model", st.cfg.model_name);
  ev.write(*st.log, lvl);
}

void info(supervisor_actor self, log_event ev) {
  write_event(self, std::move(ev), spdlog::level::info);
}

void warn(supervisor_actor self, log_event ev) {
  write_event(self, std::move(ev), spdlog::level::warn);
}

void check_ledger(const supervisor_state& st) {
  if (!st.ledger->balanced())
    log_line::ledger_mismatch(st.cfg.model_name, st.ledger->counters())
        .write(*st.log, spdlog::level::critical);
}

// -- sending and answering ----------------------------------------------------

void send_job(supervisor_actor self, core::dispatch& d) {
  if (d.first)
    self->state.metrics->queue_wait.observe(
        core::micros_between(d.accepted_at, now_of(self)));
  self->state.workers.send(self, d.slot, self->state.gateway, work_atom::value,
                           std::move(d.job));
}

/// Dispatches parked requests while workers have credit.
void pump(supervisor_actor self) {
  for (auto& d : self->state.ledger->pump(*self->state.slots, now_of(self)))
    send_job(self, d);
}

/// Sends `(answer_atom, ticket, result)` to the submitter (the gateway, or a
/// test's probe): dynamically typed, so not through a typed actor's send().
template <class Result>
void answer_to(supervisor_actor self, const caf::actor& to, uint64_t ticket, Result&& r) {
  caf::unsafe_send_as(self, to, answer_atom::value, ticket, std::forward<Result>(r));
}

/// Answers a request that left the ledger: with the worker's `result`, or
/// with its error (logged `request_expired` or `request_failed`).
void deliver(supervisor_actor self, core::answer& a, matrix* result = nullptr) {
  auto& st = self->state;
  auto now = now_of(self);
  if (!a.completed)
    log_line::answered_error(st.request_lines, *st.log, st.cfg.model_name, a, now);
  st.metrics->end_to_end.observe(core::micros_between(a.req.accepted_at, now));
  st.metrics->count_reply(a.completed ? 0 : reply_code(a.error), a.req.weight());
  auto to = st.reply_to.extract(a.req.id);
  if (to.empty())
    return;  // cannot happen: every accepted request has one
  if (a.completed)
    answer_to(self, to.mapped(), a.req.ticket, std::move(*result));
  else
    answer_to(self, to.mapped(), a.req.ticket, std::move(a.error));
}

void deliver_all(supervisor_actor self, std::vector<core::answer> answers) {
  for (auto& a : answers)
    deliver(self, a);
}

/// Takes every job away from a worker that died or got stuck: retried, or
/// answered `worker_failed` after pool.max-attempts.
void requeue(supervisor_actor self, core::slot& slot, const std::string& why) {
  auto& st = self->state;
  auto out = st.ledger->requeue(slot, why);
  deliver_all(self, std::move(out.answers));
  for (auto& r : out.retries)
    log_line::retried(st.request_lines, *st.log, st.cfg.model_name, r);
  if (!out.retries.empty())
    info(self, log_line::requests_redispatched(slot, out.retries.size()));
}

// -- workers ------------------------------------------------------------------

/// Spawns a local worker into `slot`: a first start, a scale-up, or (with
/// `again`) a restart or a stuck worker's replacement.
void spawn_into(supervisor_actor self, core::slot& slot, bool again) {
  auto& st = self->state;
  st.workers.attach(self, slot.id, st.cfg.make_worker(self, slot.id));
  if (again)
    st.slots->restarted(slot, now_of(self));
  else
    st.slots->started(slot, now_of(self));
}

/// Takes a worker out of its slot: `reason` is sent to a local one (none:
/// it is gone already; a lent one belongs to its worker node).
void drop_worker(supervisor_actor self, core::slot& slot,
                 std::optional<caf::exit_reason> reason) {
  self->state.workers.drop(self, slot.id, slot.remote ? std::nullopt : reason);
  self->state.slots->detached(slot);
}

/// Answers what is left `shutting_down`, stops the local workers (lent ones
/// belong to their worker node, which outlives us) and quits.
void finish_drain(supervisor_actor self) {
  auto& st = self->state;
  deliver_all(self, st.ledger->finish());
  for (auto& slot : st.slots->all())
    drop_worker(self, slot, caf::exit_reason::user_shutdown);
  st.slots->stop_all();
  info(self, log_line::drained(st.ledger->counters(), st.cfg.gate->shed.load()));
  st.log->flush();
  self->quit();
}

void maybe_finish_drain(supervisor_actor self) {
  if (self->state.draining && self->state.ledger->in_flight() == 0)
    finish_drain(self);
}

/// Answers every leaving node none of whose workers holds a job any more,
/// marking those workers left.
void check_leaving(supervisor_actor self) {
  auto& st = self->state;
  for (auto it = st.leaving_nodes.begin(); it != st.leaving_nodes.end();) {
    if (st.slots->leaving_busy(it->first)) {
      ++it;
      continue;
    }
    auto left = st.slots->mark_left(it->first);
    for (auto id : left)
      drop_worker(self, slot_at(self, id), std::nullopt);
    auto count = static_cast<uint32_t>(left.size());
    info(self, log_event("node_left").add("node", it->first).add("workers", count));
    it->second.deliver(count);
    it = st.leaving_nodes.erase(it);
  }
}

/// Logs a slot given up; without a live worker left, parked work fails.
void report_given_up(supervisor_actor self, uint32_t slot, const char* reason) {
  warn(self, log_event("worker_given_up").add("worker", slot).add("reason", reason));
  if (!self->state.slots->any_live())
    deliver_all(self, self->state.ledger->fail_pending(
                          pool_errc::unavailable, "no worker left: all were given up"));
}

void schedule_restart(supervisor_actor self, core::slot& slot) {
  auto decision = self->state.slots->schedule_restart(slot, now_of(self));
  if (auto* g = std::get_if<core::give_up>(&decision))
    return report_given_up(self, slot.id, g->reason);
  auto& r = std::get<core::restart>(decision);
  info(self, log_line::restart_scheduled(slot, r));
  self->delayed_send(self, r.backoff, restart_atom::value, slot.id, r.generation);
}

/// A worker that missed its heartbeat: stop routing to it, re-dispatch its
/// work, abandon its thread (C++ cannot preempt it) and start a replacement.
void replace_stuck(supervisor_actor self, core::slot& slot, caf::timespan silent) {
  auto& st = self->state;
  warn(self, log_line::worker_stuck(slot, silent));
  drop_worker(self, slot, caf::exit_reason::kill);
  auto fate = st.slots->stuck(slot, now_of(self), st.draining);
  requeue(self, slot,
          fate == core::stuck_fate::lost
              ? "remote worker silent (no pong within heartbeat.timeout)"
              : "worker stuck (no pong within heartbeat.timeout)");
  if (fate == core::stuck_fate::lost) {
    check_leaving(self);
  } else if (fate == core::stuck_fate::give_up) {
    report_given_up(self, slot.id, "pool.max-abandoned reached");
  } else if (fate == core::stuck_fate::replace) {
    spawn_into(self, slot, true);
    info(self, log_event("worker_replaced")
                   .add("worker", slot.id)
                   .add("abandoned", st.slots->abandoned()));
  }
  pump(self);
  maybe_finish_drain(self);
}

/// One ping outstanding per worker at most, at high priority; a silent
/// worker is reported missed, then replaced as stuck (core/slots.hpp).
void heartbeat(supervisor_actor self, time_point now) {
  auto& st = self->state;
  for (auto& slot : st.slots->all()) {
    auto verdict = st.slots->heartbeat(slot, now);
    if (auto* ping = std::get_if<core::send_ping>(&verdict))
      st.workers.send<caf::message_priority::high>(self, slot.id, st.gateway,
                                                   ping_atom::value, ping->seq);
    else if (auto* missed = std::get_if<core::heartbeat_missed>(&verdict))
      warn(self, log_line::heartbeat_missed(slot, missed->silent));
    else if (auto* stuck = std::get_if<core::worker_stuck>(&verdict))
      replace_stuck(self, slot, stuck->silent);
  }
}

void on_pong(supervisor_actor self, uint64_t seq, const worker_report& report) {
  auto& st = self->state;
  auto id = st.workers.slot_of(caf::actor_cast<caf::actor_addr>(self->current_sender()));
  if (id && st.slots->pong(slot_at(self, *id), seq, report, now_of(self)) ==
                core::pong_result::recovered)
    info(self, log_event("heartbeat_recovered").add("worker", *id));
}

void on_restart(supervisor_actor self, uint32_t id, uint32_t generation) {
  if (!self->state.slots->restart_due(id, generation, self->state.draining))
    return;
  auto& slot = slot_at(self, id);
  spawn_into(self, slot, true);
  info(self,
       log_event("worker_restarted").add("worker", id).add("restarts", slot.restarts));
  pump(self);
}

/// A worker died: its work is re-dispatched; a local one restarts (with
/// backoff), a lent one is lost (or has left, if its node was taking it).
void on_down(supervisor_actor self, caf::down_msg& msg) {
  auto& st = self->state;
  auto id = st.workers.slot_of(msg.source);
  if (!id)
    return;
  auto& slot = slot_at(self, *id);
  auto why = describe(msg.reason);
  warn(self, log_line::worker_died(slot, why));
  st.workers.detach(slot.id);
  st.slots->detached(slot);
  requeue(self, slot, "worker died: " + why);
  if (slot.remote) {
    st.slots->lose(slot, now_of(self));
    check_leaving(self);
  } else if (st.draining) {
    st.slots->stop(slot);
  } else {
    schedule_restart(self, slot);
  }
  pump(self);
  check_ledger(st);
  maybe_finish_drain(self);
}

// -- requests -----------------------------------------------------------------

/// A worker answered a job: its credit returns, the request is answered
/// (unless its deadline passed already) or retried, and the worker is
/// refilled from the pending queue.
void on_job_answer(supervisor_actor self, uint64_t did, matrix* result,
                   caf::error* failure) {
  auto& st = self->state;
  auto holder = st.ledger->holder(did);
  // Only from the worker holding it (not one declared stuck or dead since).
  if (holder && st.workers[*holder].address() ==
                    caf::actor_cast<caf::actor_addr>(self->current_sender())) {
    auto out = st.ledger->job_answered(did, result != nullptr,
                                       failure ? std::move(*failure) : caf::error{},
                                       *st.slots, now_of(self));
    if (out.done)
      deliver(self, *out.done, result);
    if (out.retried)
      log_line::retried(st.request_lines, *st.log, st.cfg.model_name, *out.retried);
    if (slot_at(self, out.slot).state == core::worker_state::leaving)
      check_leaving(self);
    pump(self);
    maybe_finish_drain(self);
  }
  check_ledger(st);
}

/// Answers a request that is not accepted to its submitter at once.
void reply_refused(supervisor_actor self, const request_origin& origin, uint64_t ticket,
                   caf::error err, uint64_t weight) {
  auto& st = self->state;
  log_line::rejected(st.request_lines, *st.log, st.cfg.model_name, origin, err);
  st.metrics->count_reply(reply_code(err), weight);
  answer_to(self, caf::actor_cast<caf::actor>(self->current_sender()), ticket,
            std::move(err));
}

void refuse(supervisor_actor self, const submission& sub, caf::error err) {
  auto weight = core::request_weight(sub.ln, sub.texts.size());
  self->state.ledger->refuse(sub.charged, weight);
  reply_refused(self, sub.origin, sub.ticket, std::move(err), weight);
}

/// Accepts a submission (dispatched or parked) or refuses it; either way it
/// is answered exactly once with `(answer_atom, ticket, matrix | error)`.
void submit(supervisor_actor self, submission& sub) {
  auto& st = self->state;
  if (st.draining)
    return refuse(
        self, sub,
        make_error(pool_errc::shutting_down, "node is draining; send to another node"));
  if (auto err = check_task(sub.task, st.cfg.tasks, st.cfg.model_name))
    return refuse(self, sub, std::move(err));
  core::request r(sub.ln, shared_texts{std::move(sub.texts)}, std::move(sub.task),
                  sub.ticket, sub.charged, std::move(sub.origin));
  auto admitted = st.ledger->admit(std::move(r), *st.slots, now_of(self));
  auto sender = caf::actor_cast<caf::actor>(self->current_sender());
  if (auto* d = std::get_if<core::dispatch>(&admitted)) {
    st.reply_to.emplace(d->request, std::move(sender));
    send_job(self, *d);
  } else if (auto* p = std::get_if<core::parked>(&admitted)) {
    st.reply_to.emplace(p->request, std::move(sender));
  } else {
    auto& no = std::get<core::refused>(admitted);
    if (no.overload_began)
      warn(self, log_line::overload_began(st.cfg.pool.policy, *st.ledger));
    // A refused request was not moved from.
    reply_refused(self, r.origin, r.ticket, std::move(no.error), r.weight());
  }
}

/// Takes a submission from the gateway, which answers the peer.
void on_submit(supervisor_actor self, submission& sub) {
  if (from_other_node(self))
    return;
  auto& gate = *self->state.cfg.gate;
  if (gate.queued.load(std::memory_order_relaxed) > 0)
    gate.queued.fetch_sub(1, std::memory_order_relaxed);
  submit(self, sub);
  check_ledger(self->state);
}

// -- lent workers -------------------------------------------------------------

/// Takes lent workers from the worker node `node` (as the gateway saw it):
/// all of them or, with an error, none. Each must live on that node; the
/// node may hold at most cluster.max-workers-per-node; a name that a live
/// node of another connection holds is refused.
caf::result<uint32_t> on_join(supervisor_actor self, const caf::node_id& node,
                              const std::string& name, std::vector<caf::actor>& workers) {
  auto& st = self->state;
  if (from_other_node(self))
    return make_error(pool_errc::invalid_input, "join: through the gateway only");
  if (st.draining)
    return make_error(pool_errc::shutting_down, "supervisor is draining");
  if (auto err = st.slots->check_join_name(node, name))
    return err;
  auto fresh = st.workers.newcomers(workers, node);
  if (!fresh)
    return std::move(fresh.error());
  auto ids =
      st.slots->plan_join(node, name, fresh->size(), st.cfg.cluster.max_workers_per_node);
  if (!ids)
    return std::move(ids.error());
  for (size_t k = 0; k < fresh->size(); ++k) {
    auto id = (*ids)[k];
    st.workers.attach(self, id, (*fresh)[k]);
    st.slots->attach(slot_at(self, id), now_of(self));
    info(self, log_event("worker_joined").add("node", name).add("worker", id));
  }
  pump(self);
  return static_cast<uint32_t>(fresh->size());
}

/// A worker node takes its workers back: answered once none holds a job. Only
/// the node that joined with them may (`node` as the gateway saw it), once.
caf::result<uint32_t> on_leave(supervisor_actor self, const caf::node_id& node,
                               const std::string& name) {
  auto& st = self->state;
  if (from_other_node(self))
    return make_error(pool_errc::invalid_input, "leave: through the gateway only");
  if (st.leaving_nodes.count(name) > 0)
    return make_error(pool_errc::invalid_input, "leave: the node is leaving already");
  if (!st.slots->leave(node, name))
    return make_error(pool_errc::invalid_input, "leave: no workers of node \"" +
                                                    bounded(name, 128) +
                                                    "\" joined through this connection");
  info(self, log_event("node_leaving").add("node", name));
  st.leaving_nodes[name] = self->make_response_promise();
  check_leaving(self);
  return caf::delegated<uint32_t>{};
}

// -- ticks and the drain ------------------------------------------------------

/// Adaptive workers, once per tick (core/scaling.hpp).
void autoscale(supervisor_actor self, time_point now) {
  auto& st = self->state;
  auto up = st.scaling->tick(now, *st.ledger, *st.slots, st.draining);
  if (auto* add = std::get_if<core::scale_add>(&up)) {
    spawn_into(self, slot_at(self, add->slot), false);
    info(self, log_line::scale_up(*add, st.cfg.pool.scale_up_window, st.limits.max));
    pump(self);
  } else if (auto* no = std::get_if<core::scale_refused>(&up)) {
    warn(self, log_line::scale_refused(*no, st.limits.max));
  }
  for (auto& e : st.scaling->evict_idle(now, *st.slots, st.draining)) {
    drop_worker(self, slot_at(self, e.slot), caf::exit_reason::user_shutdown);
    info(self, log_line::scale_down(e, st.cfg.pool.idle_cooldown, st.limits.min));
  }
}

pool_status status_of(supervisor_actor self) {
  auto& st = self->state;
  auto shed = st.cfg.gate->shed.load(std::memory_order_relaxed);
  return make_status(
      status_source{st.cfg.model_name, st.cfg.dim, st.cfg.pool, st.draining, *st.slots,
                    *st.ledger, shed, st.limits, st.cfg.model_names},
      now_of(self));
}

void on_tick(supervisor_actor self) {
  auto& st = self->state;
  auto t = now_of(self);
  deliver_all(self, st.ledger->expire(t));
  pump(self);  // a retry that expired no longer keeps a worker from new work
  // Lost lent workers' slots are freed for any node after a while.
  for (auto& f : st.slots->expire_lost(t, st.cfg.cluster.lost_node_expiry))
    info(self, log_line::slot_freed(f));
  heartbeat(self, t);
  auto overload = st.ledger->overload_tick(t);
  if (overload.shed)
    warn(self, log_line::shed(overload));
  if (overload.ended_total)
    info(self, log_event("overload_ended").add("shed_total", *overload.ended_total));
  autoscale(self, t);
  if (st.cfg.log.stats_interval.count() > 0 &&
      t - st.last_stats >= st.cfg.log.stats_interval) {
    st.last_stats = t;
    info(self, stats_event(status_of(self)));
  }
  check_ledger(st);
  if (st.draining && t >= st.drain_deadline)
    return finish_drain(self);
  maybe_finish_drain(self);
  self->delayed_send(self, st.tick, tick_atom::value);
}

void on_drain(supervisor_actor self) {
  auto& st = self->state;
  if (st.draining || !drain_ordered(self, st.cfg.drain_signal))
    return;
  st.draining = true;
  st.drain_deadline = now_of(self) + st.cfg.pool.drain_timeout;
  info(self, log_line::drain_started(*st.ledger, st.cfg.pool.drain_timeout));
  maybe_finish_drain(self);
}

// -- start --------------------------------------------------------------------

/// Starts pool.workers local workers: the first pool.min-workers whatever
/// the memory budget says, the others only within it.
void start_workers(supervisor_actor self) {
  auto& st = self->state;
  st.slots->all().reserve(st.limits.initial);
  for (uint32_t i = 0; i < st.limits.initial; ++i) {
    auto* slot = st.slots->add_local(i < st.limits.min);
    if (slot == nullptr) {
      warn(self, log_line::refused_for_budget(st.slots->refusal(), "start"));
      break;
    }
    spawn_into(self, *slot, false);
    info(self, log_event("worker_started").add("worker", i));
  }
}

/// Sets the state up from `cfg` and starts the workers; false (the actor
/// quit) if the worker limits are invalid.
bool init(supervisor_actor self, supervisor_config cfg) {
  auto& st = self->state;
  st.cfg = std::move(cfg);
  if (!st.cfg.metrics)
    st.cfg.metrics = std::make_shared<metrics_registry>();
  st.metrics = st.cfg.metrics->model(st.cfg.model_name);
  st.last_stats = now_of(self);
  st.slots.emplace(st.cfg.pool, st.cfg.heartbeat, st.cfg.budget, st.cfg.worker_bytes,
                   st.cfg.weights_bytes);
  auto limits = resolve_worker_limits(st.cfg.pool);
  if (!limits) {
    self->quit(limits.error());
    return false;
  }
  st.ledger.emplace(st.cfg.pool, st.cfg.bytes);
  st.limits = *limits;
  st.scaling.emplace(st.cfg.pool, st.limits);
  start_workers(self);
  if (st.cfg.model_names.empty())
    st.cfg.model_names.push_back(st.cfg.model_name);
  if (!st.cfg.gate)
    st.cfg.gate =
        std::make_shared<admission_gate>(admission_gate::limit_for(st.cfg.pool));
  st.tick = std::min(max_tick, st.cfg.heartbeat.interval);
  return true;
}

caf::result<pool_status> on_status(supervisor_actor self) {
  if (from_other_node(self))
    return make_error(pool_errc::invalid_input, "status: not from a peer");
  return status_of(self);
}

supervisor_interface::behavior_type supervisor_behavior(supervisor_actor self,
                                                        supervisor_config cfg) {
  if (!init(self, std::move(cfg)))
    return supervisor_interface::behavior_type::make_empty_behavior();
  guard_internal_actor(self, "supervisor");
  // A lent worker's down message comes from its proxy (another node); only
  // monitored actors count.
  self->set_down_handler([=](caf::down_msg& msg) { on_down(self, msg); });
  self->send(self, tick_atom::value);
  return {
      [=](submit_atom, submission& sub) { on_submit(self, sub); },
      [=](status_atom) { return on_status(self); },
      [=](gateway_atom, caf::actor& gateway) {
        // The root names the gateway through which lent workers are reached.
        if (!from_other_node(self))
          self->state.gateway = std::move(gateway);
      },
      [=](join_atom, caf::node_id& node, std::string& name,
          std::vector<caf::actor>& workers) {
        return on_join(self, node, name, workers);
      },
      [=](leave_atom, caf::node_id& node, std::string& name) {
        return on_leave(self, node, name);
      },
      [=](done_atom, uint64_t did, matrix& m) { on_job_answer(self, did, &m, nullptr); },
      [=](fail_atom, uint64_t did, caf::error& e) {
        on_job_answer(self, did, nullptr, &e);
      },
      [=](pong_atom, uint64_t seq, worker_report report) { on_pong(self, seq, report); },
      [=](restart_atom, uint32_t slot, uint32_t gen) { on_restart(self, slot, gen); },
      [=](tick_atom) { on_tick(self); },
      [=](drain_atom) { on_drain(self); },
  };
}

}  // namespace

supervisor_interface spawn_supervisor(caf::actor_system& sys, supervisor_config cfg) {
  return sys.spawn(supervisor_behavior, std::move(cfg));
}

}  // namespace pool::detail
