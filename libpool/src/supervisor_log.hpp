// The log lines of a model's supervisor, one function per event, made from
// the core's decisions and state: every event name and field the supervisor
// writes is spelled here (the status and the stats line are in status.hpp).
// The supervisor chooses the level and adds `model=NAME` on a node with
// several models.
#pragma once

#include <cstdint>
#include <string>

#include <caf/error.hpp>
#include <caf/timespan.hpp>

#include "core/ledger.hpp"
#include "core/scaling.hpp"
#include "core/slots.hpp"
#include "core/time.hpp"
#include "logging.hpp"
#include "pool/config.hpp"
#include "pool/protocol.hpp"
#include "request_log.hpp"

namespace pool::detail::supervisor_log {

// -- lines about one request (at most request_lines_per_second) ----------------

/// `request_expired` (a deadline) or `request_failed`, with the error, the
/// attempts and the age at `now`.
void answered_error(request_log_limiter& limiter, spdlog::logger& log,
                    const std::string& model, const core::answer& a,
                    core::time_point now);
/// `request_retried`: the request goes back to the queue.
void retried(request_log_limiter& limiter, spdlog::logger& log, const std::string& model,
             const core::retry& r);
/// `request_rejected`: refused, never accepted.
void rejected(request_log_limiter& limiter, spdlog::logger& log, const std::string& model,
              const request_origin& origin, const caf::error& err);

// -- the ledger ---------------------------------------------------------------------

log_event ledger_mismatch(const std::string& model, const ledger_counters& l);
log_event overload_began(overload_policy policy, const core::ledger& l);
/// `shed`: requests shed during an overload episode, at most once a second.
log_event shed(const core::overload_report& r);
log_event drain_started(const core::ledger& l, caf::timespan timeout);
/// The ledger at the end of a drain; `gate_shed` counts as rejected.
log_event drained(const ledger_counters& l, uint64_t gate_shed);

// -- workers -----------------------------------------------------------------------

log_event worker_died(const core::slot& s, const std::string& why);
log_event worker_stuck(const core::slot& s, caf::timespan silent);
log_event heartbeat_missed(const core::slot& s, caf::timespan silent);
log_event restart_scheduled(const core::slot& s, const core::restart& r);
log_event requests_redispatched(const core::slot& s, size_t count);
log_event slot_freed(const core::slot_freed& f);

// -- scaling -----------------------------------------------------------------------

/// `scale_up_refused` for the memory budget, at start or at a scale-up.
log_event refused_for_budget(const core::budget_refusal& b, const char* phase);
log_event scale_up(const core::scale_add& add, caf::timespan window, uint32_t max);
log_event scale_refused(const core::scale_refused& no, uint32_t max);
log_event scale_down(const core::scale_evict& e, caf::timespan cooldown, uint32_t min);

}  // namespace pool::detail::supervisor_log
