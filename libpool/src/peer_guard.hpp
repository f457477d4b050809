// The trust boundary of a node: which actor may obey which sender.
//
// Only the gateway is ever addressable from another node (it is the only
// actor that sends to one). Every other actor of a node is internal: it drops
// what comes from a node it does not expect, and a gateway drops exit, error,
// down and response messages that no local owner sent (see gateway.cpp).
// Dropped messages are counted process-wide and logged at most once per
// second, with the peer's node id (and its address where the gateway can
// resolve it).
//
// Thread-safety: every function may be called from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include <caf/fwd.hpp>
#include <caf/node_id.hpp>

namespace pool::detail {

/// What kind of message `content` is, for log lines, in constant time: its
/// first element if that is an atom or (cut) a string, and its size; never
/// the rest of the payload.
std::string message_kind(const caf::type_erased_tuple& content);

/// True if the message being handled by `self` comes from an actor of
/// another node. A message without a sender counts as local: internal actors
/// are never in CAF's registry, so no peer can address them at all.
bool from_other_node(caf::local_actor* self);

/// True if the `(drain_atom)` `self` is handling may start a drain: it comes
/// from this node, and the node's signal handling has set `drain_signal`
/// (null = always, for tests). A drain comes from SIGINT/SIGTERM only.
bool drain_ordered(caf::local_actor* self,
                   const std::shared_ptr<const std::atomic<bool>>& drain_signal);

/// A process-wide count of dropped messages, with a rate limit for the log
/// lines about them.
class rate_limited_counter {
 public:
  /// Counts one dropped message. Returns the number dropped since the last
  /// log line when a line is due now (at most one per second), else 0.
  uint64_t note();

  /// Messages dropped since the process started.
  uint64_t total() const { return total_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> total_{0};
  std::mutex mtx_;
  uint64_t unlogged_ = 0;
  std::chrono::steady_clock::time_point last_line_{};
};

/// Messages dropped because a peer may not send them.
class foreign_messages : public rate_limited_counter {
 public:
  /// The counter of this process.
  static foreign_messages& instance();
};

/// Messages from other nodes shed because the inbox of the actor they were
/// sent to held `max_inbox_bytes` (guarded_actor.hpp).
rate_limited_counter& inbox_sheds();

/// Sets the bound on the bytes of messages from other nodes waiting in the
/// mailbox of a gateway; 0 = none (the default). Thread-safe.
void set_max_inbox_bytes(uint64_t bytes);
uint64_t max_inbox_bytes();

/// About how many bytes `content` takes: its size as CAF would serialize it
/// (strings and sequences by their length, nested messages included). Reads
/// each element once, copies nothing.
uint64_t approximate_bytes(const caf::type_erased_tuple& content);

/// Writes the rate-limited line about dropped messages: `count` of them since
/// the last line, the latest of kind `what` at `actor` from `node` (none for
/// a message without a sender) at `address` ("" = unknown).
void log_foreign(const char* actor, const std::string& what, const caf::node_id& node,
                 const std::string& address, uint64_t count);

/// Makes `self`, an internal actor, drop and count every message from another
/// node that its behavior does not take (default handler), and every error or
/// exit message from another node. Local unexpected messages are dropped with
/// a rate-limited warning. `actor` names it in log lines.
void guard_internal_actor(caf::scheduled_actor* self, const char* actor);

}  // namespace pool::detail
