#include "supervisor_log.hpp"

#include "pool/error.hpp"

namespace pool::detail::supervisor_log {

using core::to_ms;

void answered_error(request_log_limiter& limiter, spdlog::logger& log,
                    const std::string& model, const core::answer& a,
                    core::time_point now) {
  const bool expired = pool_code(a.error) == pool_errc::deadline_exceeded;
  log_request(limiter, log, spdlog::level::warn,
              expired ? "request_expired" : "request_failed", a.req.origin, model,
              [&](log_event& ev) {
                add_answer_error(ev, a.error)
                    .add("attempts", a.req.attempts)
                    .add("age_ms", to_ms(now - a.req.accepted_at));
              });
}

void retried(request_log_limiter& limiter, spdlog::logger& log, const std::string& model,
             const core::retry& r) {
  log_request(
      limiter, log, spdlog::level::info, "request_retried", r.origin, model,
      [&](log_event& ev) {
        ev.add("worker", r.worker).add("attempts", r.attempts).add("reason", r.reason);
      });
}

void rejected(request_log_limiter& limiter, spdlog::logger& log, const std::string& model,
              const request_origin& origin, const caf::error& err) {
  log_request(limiter, log, spdlog::level::info, "request_rejected", origin, model,
              [&](log_event& ev) { add_answer_error(ev, err); });
}

log_event ledger_mismatch(const std::string& model, const ledger_counters& l) {
  log_event ev{"ledger_mismatch"};
  ev.add("model", model)
      .add("accepted", l.accepted)
      .add("completed", l.completed)
      .add("failed", l.failed)
      .add("expired", l.expired)
      .add("in_flight", l.in_flight);
  return ev;
}

log_event overload_began(overload_policy policy, const core::ledger& l) {
  log_event ev{"overload_began"};
  ev.add("policy", policy == overload_policy::wait ? "wait" : "reject")
      .add("pending", static_cast<uint64_t>(l.pending()))
      .add("in_flight", static_cast<uint64_t>(l.in_flight()));
  return ev;
}

log_event shed(const core::overload_report& r) {
  log_event ev{"shed"};
  ev.add("count", *r.shed).add("window_ms", to_ms(r.window));
  return ev;
}

log_event drain_started(const core::ledger& l, caf::timespan timeout) {
  log_event ev{"drain_started"};
  ev.add("in_flight", static_cast<uint64_t>(l.in_flight()))
      .add("timeout_ms", to_ms(timeout));
  return ev;
}

log_event drained(const ledger_counters& l, uint64_t gate_shed) {
  log_event ev{"drained"};
  ev.add("accepted", l.accepted)
      .add("completed", l.completed)
      .add("failed", l.failed)
      .add("rejected", l.rejected + gate_shed)
      .add("expired", l.expired);
  return ev;
}

log_event worker_died(const core::slot& s, const std::string& why) {
  log_event ev{"worker_died"};
  ev.add("worker", s.id)
      .add("reason", why)
      .add("jobs", static_cast<uint64_t>(s.jobs.size()));
  return ev;
}

log_event worker_stuck(const core::slot& s, caf::timespan silent) {
  log_event ev{"worker_stuck"};
  ev.add("worker", s.id)
      .add("silent_ms", to_ms(silent))
      .add("jobs", static_cast<uint64_t>(s.jobs.size()));
  return ev;
}

log_event heartbeat_missed(const core::slot& s, caf::timespan silent) {
  log_event ev{"heartbeat_missed"};
  ev.add("worker", s.id).add("silent_ms", to_ms(silent));
  return ev;
}

log_event restart_scheduled(const core::slot& s, const core::restart& r) {
  log_event ev{"worker_restart_scheduled"};
  ev.add("worker", s.id)
      .add("backoff_ms", to_ms(r.backoff))
      .add("recent_restarts", r.recent_restarts);
  return ev;
}

log_event requests_redispatched(const core::slot& s, size_t count) {
  log_event ev{"requests_redispatched"};
  ev.add("worker", s.id).add("count", static_cast<uint64_t>(count));
  return ev;
}

log_event slot_freed(const core::slot_freed& f) {
  log_event ev{"worker_slot_freed"};
  ev.add("node", f.node).add("worker", f.slot).add("lost_ms", to_ms(f.lost_for));
  return ev;
}

log_event refused_for_budget(const core::budget_refusal& b, const char* phase) {
  log_event ev{"scale_up_refused"};
  ev.add("reason", "memory_budget")
      .add("phase", phase)
      .add("needed_bytes", b.needed_bytes)
      .add("used_bytes", b.used_bytes)
      .add("budget_bytes", b.budget_bytes)
      .add("workers", b.workers);
  return ev;
}

log_event scale_up(const core::scale_add& add, caf::timespan window, uint32_t max) {
  log_event ev{"scale_up"};
  ev.add("reason", "queue_depth")
      .add("worker", add.slot)
      .add("depth", add.depth)
      .add("threshold", add.threshold)
      .add("window_ms", to_ms(window))
      .add("workers", add.workers)
      .add("max", max);
  return ev;
}

log_event scale_refused(const core::scale_refused& no, uint32_t max) {
  if (no.reason == core::scale_refused::why::memory_budget)
    return refused_for_budget(no.budget, "scale_up").add("depth", no.depth);
  log_event ev{"scale_up_refused"};
  ev.add("reason", "max_workers")
      .add("depth", no.depth)
      .add("threshold", no.threshold)
      .add("workers", no.workers)
      .add("max", max);
  return ev;
}

log_event scale_down(const core::scale_evict& e, caf::timespan cooldown, uint32_t min) {
  log_event ev{"scale_down"};
  ev.add("reason", "idle")
      .add("worker", e.slot)
      .add("idle_ms", to_ms(e.idle))
      .add("cooldown_ms", to_ms(cooldown))
      .add("workers", e.workers)
      .add("min", min);
  return ev;
}

}  // namespace pool::detail::supervisor_log
