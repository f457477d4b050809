// Adaptive local workers, without an actor: once per tick, one worker more
// after the queue depth per ready worker stayed above
// pool.scale-up-queue-depth for pool.scale-up-window (unless the pool is at
// pool.max-workers or the worker would pass the memory budget: refused, and
// logged once per episode above the threshold), and idle workers out after
// pool.idle-cooldown, never below pool.min-workers. A fixed-size pool
// (min == max) and a draining one never scale.
#pragma once

#include <cstdint>
#include <variant>
#include <vector>

#include "core/ledger.hpp"
#include "core/slots.hpp"
#include "core/time.hpp"
#include "pool/config.hpp"

namespace pool::detail::core {

/// Start a worker in `slot` (its memory is reserved; spawn it, then
/// `slot_table::started`).
struct scale_add {
  uint32_t slot = 0;
  uint64_t depth = 0;
  uint64_t threshold = 0;
  uint32_t workers = 0;  // live local workers with the new one
};

/// A scale-up refused, to be logged (once per episode).
struct scale_refused {
  enum class why { max_workers, memory_budget } reason = why::max_workers;
  uint64_t depth = 0;
  uint64_t threshold = 0;
  uint32_t workers = 0;   // live local workers
  budget_refusal budget;  // for why::memory_budget
};

using scale_up = std::variant<std::monostate, scale_add, scale_refused>;

/// An idle worker was evicted from `slot` (already applied: stop it).
struct scale_evict {
  uint32_t slot = 0;
  caf::timespan idle;
  uint32_t workers = 0;  // live local workers after it
};

class scaler {
 public:
  scaler(const pool_section& pool, worker_limits limits);

  /// The scale-up half of a tick. With `scale_add` the new slot is in the
  /// table; the caller spawns its worker and dispatches parked work before
  /// `evict_idle`.
  scale_up tick(time_point now, const ledger& l, slot_table& slots, bool draining);
  /// The scale-down half: evicts ready local workers idle for
  /// pool.idle-cooldown while more than pool.min-workers live.
  std::vector<scale_evict> evict_idle(time_point now, slot_table& slots, bool draining);

  /// Requests queued on the pool: parked ones plus credits in use at ready
  /// workers (local and lent), both by weight (a list of embeds as its
  /// texts).
  static uint64_t queue_depth(const ledger& l, const slot_table& slots);

  const worker_limits& limits() const { return limits_; }

 private:
  scale_up add(uint64_t depth, uint64_t threshold, slot_table& slots);

  uint32_t depth_per_worker_;
  caf::timespan window_;
  caf::timespan idle_cooldown_;
  worker_limits limits_;
  /// Queue depth above the threshold since `above_since`.
  bool above_ = false;
  time_point above_since_;
  /// A refused scale-up is logged once per episode above the threshold.
  bool refusal_reported_ = false;
};

}  // namespace pool::detail::core
