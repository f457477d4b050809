// The actor side of a model's worker slots: which worker actor sits in which
// slot (core::slot_table knows everything else about the slot), found by its
// address, monitored while it sits there, and sent to — directly, or as the
// gateway when it lives on another node (internal to libpool).
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <unordered_map>
#include <utility>
#include <vector>

#include <caf/actor.hpp>
#include <caf/actor_addr.hpp>
#include <caf/expected.hpp>
#include <caf/local_actor.hpp>
#include <caf/message_priority.hpp>
#include <caf/send.hpp>

#include "pool/error.hpp"

namespace pool::detail {

class worker_handles {
 public:
  /// The worker in `slot`; null if none.
  const caf::actor& operator[](uint32_t slot) const {
    return slot < handles_.size() ? handles_[slot] : none_;
  }
  size_t size() const { return handles_.size(); }

  /// The slot of the worker at `addr`, if it sits in one.
  std::optional<uint32_t> slot_of(const caf::actor_addr& addr) const {
    auto i = by_addr_.find(addr);
    if (i == by_addr_.end())
      return std::nullopt;
    return i->second;
  }

  /// The workers a node lends that sit in no slot yet (each once), or
  /// `invalid_input` if one does not live on `node`.
  caf::expected<std::vector<caf::actor>> newcomers(const std::vector<caf::actor>& workers,
                                                   const caf::node_id& node) const {
    std::vector<caf::actor> fresh;
    for (auto& w : workers) {
      if (!w || w->node() != node)
        return make_error(pool_errc::invalid_input,
                          "join: every worker must live on the joining node");
      if (by_addr_.count(w.address()) == 0 &&
          std::find(fresh.begin(), fresh.end(), w) == fresh.end())
        fresh.push_back(w);
    }
    return fresh;
  }

  /// Puts `handle` into `slot` and monitors it.
  void attach(caf::local_actor* self, uint32_t slot, caf::actor handle) {
    if (handles_.size() <= slot)
      handles_.resize(slot + 1);
    handles_[slot] = std::move(handle);
    self->monitor(handles_[slot]);
    by_addr_[handles_[slot].address()] = slot;
  }

  /// Forgets the worker in `slot` (a down message already ended the monitor).
  /// False if there was none.
  bool detach(uint32_t slot) {
    if (slot >= handles_.size() || !handles_[slot])
      return false;
    by_addr_.erase(handles_[slot].address());
    handles_[slot] = nullptr;
    return true;
  }

  /// Stops watching the worker in `slot`, tells it to exit with `reason`
  /// unless `reason` is none, and forgets it.
  void drop(caf::local_actor* self, uint32_t slot,
            std::optional<caf::exit_reason> reason) {
    if (slot >= handles_.size() || !handles_[slot])
      return;
    self->demonitor(handles_[slot]);
    if (reason)
      self->send_exit(handles_[slot], *reason);
    detach(slot);
  }

  /// Sends to the worker in `slot`, as `self`. One on another node gets it
  /// from `gateway`, the only actor of this node that other nodes may know
  /// (and so address); without a gateway nothing is sent to it. Workers are
  /// dynamically typed and CAF 0.17 lets a typed `self` send() only to typed
  /// actors, hence unsafe_send_as (the worker checks what it gets).
  template <caf::message_priority P = caf::message_priority::normal, class Self,
            class... Ts>
  void send(Self* self, uint32_t slot, const caf::actor& gateway, Ts&&... xs) const {
    auto& handle = handles_[slot];
    if (handle->node() == self->node())
      caf::unsafe_send_as<P>(self, handle, std::forward<Ts>(xs)...);
    else if (gateway)
      caf::send_as<P>(gateway, handle, std::forward<Ts>(xs)...);
  }

 private:
  std::vector<caf::actor> handles_;
  std::unordered_map<caf::actor_addr, uint32_t> by_addr_;
  caf::actor none_;
};

}  // namespace pool::detail
