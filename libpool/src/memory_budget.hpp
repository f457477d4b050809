// The node-wide memory budget (pool.memory-budget): estimated bytes of model
// weights and worker buffers, shared by the supervisors of every model.
#pragma once

#include <atomic>
#include <cstdint>

namespace pool::detail {

/// Thread-safety: every member may be called from any thread at once (the
/// supervisors of several models run on different threads).
class memory_budget {
 public:
  /// `limit_bytes` 0 means no budget: every reservation succeeds.
  explicit memory_budget(uint64_t limit_bytes) : limit_(limit_bytes) {}

  /// Adds `bytes` to the used total unless that passes the limit; false (and
  /// nothing reserved) if it would.
  bool try_reserve(uint64_t bytes) {
    auto used = used_.load();
    do {
      if (limit_ != 0 && (bytes > limit_ || used > limit_ - bytes))
        return false;
    } while (!used_.compare_exchange_weak(used, used + bytes));
    return true;
  }

  /// Adds `bytes` even past the limit (what must run: a model's weights and
  /// its minimum workers, which the node checked against the budget at start).
  void reserve(uint64_t bytes) { used_ += bytes; }

  /// Gives back what a reservation took.
  void release(uint64_t bytes) { used_ -= bytes; }

  uint64_t used() const { return used_.load(); }
  uint64_t limit() const { return limit_; }

  /// used / limit; 0 without a budget.
  double pressure() const {
    return limit_ == 0 ? 0.0 : static_cast<double>(used()) / static_cast<double>(limit_);
  }

 private:
  const uint64_t limit_;
  std::atomic<uint64_t> used_{0};
};

}  // namespace pool::detail
