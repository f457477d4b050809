// Time as the pool's rules see it: a steady clock's time point, always passed
// in as `now` (the supervisor's `self->clock().now()`: CAF 0.17's
// `actor_clock::time_point` is this type), never read from a clock here.
#pragma once

#include <chrono>
#include <cstdint>

#include <caf/timespan.hpp>

namespace pool::detail::core {

using time_point = std::chrono::steady_clock::time_point;

/// Whole milliseconds of `d` (rounded toward zero), as log lines show them.
inline int64_t to_ms(caf::timespan d) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
}

/// Microseconds from `from` to `to`; 0 if `to` is not later.
inline uint64_t micros_between(time_point from, time_point to) {
  return to > from ? static_cast<uint64_t>(
                         std::chrono::duration_cast<std::chrono::microseconds>(to - from)
                             .count())
                   : 0;
}

}  // namespace pool::detail::core
