#include "core/scaling.hpp"

#include <algorithm>
#include <utility>

namespace pool::detail::core {

scaler::scaler(const pool_section& pool, worker_limits limits)
    : depth_per_worker_(pool.scale_up_queue_depth),
      window_(pool.scale_up_window),
      idle_cooldown_(pool.idle_cooldown),
      limits_(limits) {}

uint64_t scaler::queue_depth(const ledger& l, const slot_table& slots) {
  return l.pending() + slots.credits_in_use();
}

scale_up scaler::tick(time_point now, const ledger& l, slot_table& slots, bool draining) {
  if (draining || limits_.min == limits_.max)
    return {};  // a fixed-size pool
  auto depth = queue_depth(l, slots);
  uint64_t threshold = uint64_t{depth_per_worker_} * std::max<uint32_t>(slots.ready(), 1);
  if (depth <= threshold) {
    above_ = false;
    refusal_reported_ = false;
    return {};
  }
  if (!above_) {
    above_ = true;
    above_since_ = now;
    return {};
  }
  if (now - above_since_ < window_)
    return {};
  above_since_ = now;  // the next worker needs a window of its own
  return add(depth, threshold, slots);
}

scale_up scaler::add(uint64_t depth, uint64_t threshold, slot_table& slots) {
  auto live = slots.live_local();
  if (live >= limits_.max) {
    if (std::exchange(refusal_reported_, true))
      return {};
    return scale_refused{scale_refused::why::max_workers, depth, threshold, live, {}};
  }
  // An evicted slot first, else a new one within the table's bound.
  slot* target = nullptr;
  for (auto& candidate : slots.all())
    if (!candidate.remote && candidate.state == worker_state::evicted) {
      target = &candidate;
      break;
    }
  if (target == nullptr && slots.size() >= max_slots)
    return {};
  bool reserved = false;
  if (target != nullptr) {
    reserved = slots.reserve(*target, false);
  } else {
    target = slots.add_local(false);
    reserved = target != nullptr;
  }
  if (!reserved) {
    if (std::exchange(refusal_reported_, true))
      return {};
    return scale_refused{scale_refused::why::memory_budget, depth, threshold, live,
                         slots.refusal()};
  }
  target->restart_times.clear();
  return scale_add{target->id, depth, threshold, live + 1};
}

std::vector<scale_evict> scaler::evict_idle(time_point now, slot_table& slots,
                                            bool draining) {
  std::vector<scale_evict> out;
  if (draining || limits_.min == limits_.max)
    return out;
  for (auto& s : slots.all()) {
    if (slots.live_local() <= limits_.min)
      break;
    if (s.remote || s.state != worker_state::ready || !s.jobs.empty())
      continue;
    auto idle = now - s.idle_since;
    if (idle < idle_cooldown_)
      continue;
    slots.evict(s);
    out.push_back(scale_evict{s.id, idle, slots.live_local()});
  }
  return out;
}

}  // namespace pool::detail::core
