// The node's two budgets, shared by the supervisors of every model: memory
// (pool.memory-budget: estimated bytes of model weights and worker buffers)
// and request bytes (pool.max-queued-bytes). Plain data: no CAF header.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

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

/// Bounds the bytes of request text a node holds (pool.max-queued-bytes):
/// the gateway takes a request's cost at admission or answers `overloaded`;
/// its supervisor gives it back once the request is answered and no worker
/// holds its job. Shared by the gateway and every model's supervisor;
/// thread-safe.
struct byte_budget {
  explicit byte_budget(uint64_t limit_bytes) : limit(limit_bytes) {}
  const uint64_t limit;  // 0 = no bound
  std::atomic<uint64_t> used{0};

  /// What a request's texts cost: their bytes plus a fixed overhead per text.
  static uint64_t cost(const std::vector<std::string>& texts) {
    uint64_t n = 0;
    for (const auto& t : texts)
      n += t.size() + 32;
    return n;
  }

  /// Takes `n` bytes unless that would pass the limit.
  bool try_take(uint64_t n) {
    auto cur = used.load(std::memory_order_relaxed);
    do {
      if (limit != 0 && cur + n > limit)
        return false;
    } while (!used.compare_exchange_weak(cur, cur + n, std::memory_order_relaxed));
    return true;
  }

  void give_back(uint64_t n) { used.fetch_sub(n, std::memory_order_relaxed); }
};

}  // namespace pool::detail
