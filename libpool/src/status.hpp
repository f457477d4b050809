// A model's status (the reply to `(status_atom)`) and its periodic stats
// line, made from the model's core state (internal to libpool).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/ledger.hpp"
#include "core/slots.hpp"
#include "core/time.hpp"
#include "logging.hpp"
#include "pool/config.hpp"
#include "pool/protocol.hpp"

namespace pool::detail {

/// What a model's status is made of.
struct status_source {
  const std::string& model;
  uint32_t dim;
  const pool_section& pool;
  bool draining;
  const core::slot_table& slots;
  const core::ledger& ledger;
  /// Requests its gateway shed at the admission gate (counted as rejected).
  uint64_t gate_shed;
  worker_limits limits;
  /// Every model of the node, default first.
  const std::vector<std::string>& models;
};

/// The status at `now` (`last_pong_ms` is measured from it).
pool_status make_status(const status_source& src, core::time_point now);

/// The `stats` line of a status (log.stats-interval): the ledger, the
/// pending count, restarts and each worker's state, depth and credits.
log_event stats_event(const pool_status& status);

}  // namespace pool::detail
