// An actor that other nodes can address (the gateway; a worker node's lender
// and lent workers) and that must not obey them.
//
// CAF 0.17 ends any scheduled actor that receives an `exit_msg` with reason
// `kill`, and by default one that receives a bare `caf::error`, whoever sent
// it; an exit handler cannot stop that. So the refusal happens in `enqueue`,
// before anything reaches the mailbox, on the thread that delivers the
// message (a BASP worker for remote ones): it reads only the message and
// members fixed at construction.
#pragma once

#include <functional>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>

#include <caf/actor_addr.hpp>
#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/behavior.hpp>
#include <caf/downstream_msg.hpp>
#include <caf/exit_reason.hpp>
#include <caf/mailbox_element.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/system_messages.hpp>
#include <caf/upstream_msg.hpp>

#include "actors.hpp"
#include "logging.hpp"
#include "peer_backlog.hpp"
#include "peer_guard.hpp"
#include "pool/error.hpp"

namespace pool::detail {

/// A rate-limited note about refused messages that the actor itself logs
/// (so that it can resolve the peer's address). Local only: it has no type
/// name, so no peer can send one.
struct refused_note {
  std::string what;
  caf::node_id node;
  uint64_t count = 0;
};

}  // namespace pool::detail

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(pool::detail::refused_note)

namespace pool::detail {

/// Why `x` may not enter the mailbox of an actor that only `owner` may stop
/// (a null owner: nobody), or null if it may. Refused: exit messages from
/// anyone but `owner`; bare errors that are not responses; responses from
/// other nodes or from no sender, unless `remote_responses` (an actor that
/// asks other nodes itself); stream handshakes from other nodes; down messages from
/// them about anything but the sender itself; messages from other nodes that
/// carry a forwarding chain.
inline const char* refusal(const caf::mailbox_element& x, const caf::node_id& home,
                           const caf::actor_addr& owner, bool remote_responses) {
  bool local = x.sender && x.sender->node() == home;
  if (x.mid.is_response())
    return local || remote_responses ? nullptr : "response";
  if (!local && !x.stages.empty())
    return "forwarding chain";
  const auto& content = x.content();
  if (content.size() != 1)
    return nullptr;
  if (content.match_element<caf::exit_msg>(0)) {
    const auto& msg = content.get_as<caf::exit_msg>(0);
    return owner && msg.source == owner ? nullptr : "exit";
  }
  if (content.match_element<caf::error>(0))
    return "error";
  if (local)
    return nullptr;
  // A remote actor's down message comes from its proxy, as itself.
  if (content.match_element<caf::down_msg>(0))
    return x.sender && content.get_as<caf::down_msg>(0).source ==
                           caf::actor_cast<caf::actor_addr>(x.sender)
               ? nullptr
               : "down";
  if (content.match_element<caf::open_stream_msg>(0) ||
      content.match_element<caf::upstream_msg>(0) ||
      content.match_element<caf::downstream_msg>(0))
    return "stream";
  return nullptr;
}

/// A stateful actor whose `enqueue` drops what `refusal` names (counted in
/// `foreign_messages`); a refused request gets `invalid_input` at once, so no
/// peer waits for it. Requests from a peer whose connection holds more unread
/// replies than `max_unread_bytes` (peer_backlog.hpp) get `overloaded` at
/// once. With `options::bounded_inbox`, messages from other nodes beyond
/// `max_inbox_bytes` waiting in its mailbox, or beyond a quarter of it from
/// one peer, are shed the same way (requests get `overloaded`), before any
/// work is done for them. `Base` is `caf::stateful_actor<State>` or a class
/// derived from it; its `enqueue` sees only the messages let through.
template <class State, class Base = caf::stateful_actor<State>>
class guarded_actor : public Base {
 public:
  using super = Base;
  using init_fn = std::function<caf::behavior(guarded_actor*)>;

  /// Options of a guarded actor.
  struct options {
    /// The only actor whose exit message it obeys; null = none.
    caf::actor_addr owner;
    /// Gets a `refused_note` when a log line is due (and must handle it),
    /// instead of a line written here without the peer's address.
    bool self_logs = false;
    /// Takes responses from other nodes (it sends requests to them).
    bool remote_responses = false;
    /// Sheds messages from other nodes past `max_inbox_bytes` queued.
    bool bounded_inbox = false;
    /// With a bounded inbox: the node's budget of request bytes. A request
    /// enters the inbox only while what the budget holds plus the inbox stays
    /// within its limit, so the two together hold at most the limit. Null =
    /// none.
    std::shared_ptr<const byte_budget> request_budget;
    /// Called (on the delivering thread) for each request shed at the inbox,
    /// e.g. to count it in the ledger; null = nothing.
    std::function<void()> count_shed_request;
    /// Messages the inbox bound does not apply to (e.g. answers of a joined
    /// worker node's workers, which must not be lost); null = none.
    std::function<bool(const caf::type_erased_tuple&)> outside_inbox_bound;
  };

  guarded_actor(caf::actor_config& cfg, options opts, init_fn init)
      : super(cfg), opts_(std::move(opts)), init_(std::move(init)) {}

  caf::behavior make_behavior() override { return init_(this); }

  void enqueue(caf::mailbox_element_ptr what, caf::execution_unit* host) override {
    auto why =
        refusal(*what, this->home_system().node(), opts_.owner, opts_.remote_responses);
    if (why != nullptr) {
      refuse(std::move(what), why, host);
      return;
    }
    if (!what->sender || what->sender->node() == this->home_system().node() ||
        what->mid.is_response()) {
      super::enqueue(std::move(what), host);
      return;
    }
    if (what->mid.is_request() && peer_over_unread_bound(what->sender->node())) {
      count_unread_refusal();
      answer_now(*what,
                 make_error(pool_errc::overloaded,
                            "this connection holds node.max-unread-bytes-per-peer of "
                            "replies the peer has not read; read them, then retry"),
                 host);
      return;
    }
    if (opts_.bounded_inbox &&
        !(opts_.outside_inbox_bound && opts_.outside_inbox_bound(what->content()))) {
      uint64_t charge = 0;
      if (auto full = admit_to_inbox(*what, charge); full != nullptr) {
        shed(std::move(what), full, charge, host);
        return;
      }
    }
    super::enqueue(std::move(what), host);
  }

  caf::invoke_message_result consume(caf::mailbox_element& x) override {
    leave_inbox(x);
    return super::consume(x);
  }

  /// While a message is handled: what it was charged when it entered the
  /// inbox (its approximate size), or 0 if it was not charged. Handlers
  /// cannot measure it themselves: CAF may have moved its content out by
  /// then. Only on the actor's own thread.
  uint64_t current_inbox_charge() const { return current_charge_; }

 private:
  /// Bytes charged for a message beside its content (element, allocations).
  static constexpr uint64_t per_message_bytes = 128;

  /// Answers request `x` with `err` on the calling thread.
  void answer_now(const caf::mailbox_element& x, caf::error err,
                  caf::execution_unit* host) {
    if (!x.mid.is_request() || !x.sender)
      return;
    x.sender->enqueue(
        caf::make_mailbox_element(this->ctrl(), x.mid.response_id(), {}, std::move(err)),
        host);
  }

  void refuse(caf::mailbox_element_ptr what, const char* why, caf::execution_unit* host) {
    auto node = what->sender ? what->sender->node() : caf::node_id{};
    if (node && node != this->home_system().node())
      note_dropped_from(node, approximate_bytes(what->content()) + per_message_bytes);
    answer_now(*what,
               make_error(pool_errc::invalid_input,
                          std::string{"refused: "} + why + " messages are not accepted"),
               host);
    auto n = foreign_messages::instance().note();
    if (n == 0)
      return;
    if (opts_.self_logs)
      super::enqueue(caf::make_mailbox_element(nullptr, caf::make_message_id(), {},
                                               refused_note{why, node, n}),
                     host);
    else
      log_foreign(this->name(), why, node, "", n);
  }

  /// Charges `x` to the inbox unless that would pass `max_inbox_bytes`, or
  /// its sender's share: a quarter of it, past its first message (so one
  /// flooding peer cannot take the inbox from the others).
  /// Returns null if admitted, else the bound it would pass; sets `charge`
  /// to what `x` costs (0 without a bound).
  const char* admit_to_inbox(const caf::mailbox_element& x, uint64_t& charge) {
    auto limit = max_inbox_bytes();
    if (limit == 0)
      return nullptr;
    charge = approximate_bytes(x.content()) + per_message_bytes;
    const auto& peer = x.sender->node();
    std::lock_guard<std::mutex> guard{inbox_mtx_};
    auto& held = inbox_by_peer_[peer];
    const auto* budget = opts_.request_budget.get();
    bool over_budget =
        budget != nullptr && budget->limit > 0 && x.mid.is_request() &&
        budget->used.load(std::memory_order_relaxed) + inbox_bytes_ + charge >
            budget->limit;
    if (over_budget || inbox_bytes_ + charge > limit ||
        (held > 0 && held + charge > limit / 4)) {
      if (held == 0)
        inbox_by_peer_.erase(peer);
      return over_budget ? "pool.max-queued-bytes" : "node.max-inbox-bytes";
    }
    inbox_bytes_ += charge;
    held += charge;
    charges_.emplace(&x, inbox_charge{peer, charge});
    return nullptr;
  }

  /// Gives back what `x` was charged when it entered the inbox (if anything).
  void leave_inbox(const caf::mailbox_element& x) {
    current_charge_ = 0;
    if (!opts_.bounded_inbox)
      return;
    std::lock_guard<std::mutex> guard{inbox_mtx_};
    auto i = charges_.find(&x);
    if (i == charges_.end())
      return;
    current_charge_ = i->second.bytes;
    inbox_bytes_ -= i->second.bytes;
    auto j = inbox_by_peer_.find(i->second.peer);
    if (j != inbox_by_peer_.end() && (j->second -= i->second.bytes) == 0)
      inbox_by_peer_.erase(j);
    charges_.erase(i);
  }

  /// Sheds `what`, which costs `charge`, at the door: `bound` names the
  /// setting it would pass.
  void shed(caf::mailbox_element_ptr what, const char* bound, uint64_t charge,
            caf::execution_unit* host) {
    // No client sends a message that needs no answer: a peer that keeps
    // sending them past a full inbox is disconnected (peer_backlog.hpp).
    if (!what->mid.is_request())
      note_dropped_from(what->sender->node(), charge);
    else if (opts_.count_shed_request)
      opts_.count_shed_request();
    answer_now(*what,
               make_error(pool_errc::overloaded,
                          std::string{"the node holds "} + bound +
                              " of peers' requests; retry after " +
                              std::to_string(overload_retry_after_ms) + "ms"),
               host);
    if (auto n = inbox_sheds().note(); n > 0)
      log_event("inbox_full_shed")
          .add("actor", this->name())
          .add("peer_node", caf::to_string(what->sender->node()))
          .add("limit", max_inbox_bytes())
          .add("count", n)
          .add("total", inbox_sheds().total())
          .write(*get_logger("gateway"), spdlog::level::warn);
  }

  const options opts_;
  init_fn init_;
  /// What a message from another node was charged, and to whom.
  struct inbox_charge {
    caf::node_id peer;
    uint64_t bytes = 0;
  };
  /// Bytes of messages from other nodes in the mailbox, in all and by peer,
  /// and each one's charge (by element: it stays put from enqueue to
  /// consume). Guarded by `inbox_mtx_`: enqueue runs on any thread.
  std::mutex inbox_mtx_;
  uint64_t inbox_bytes_ = 0;
  std::unordered_map<caf::node_id, uint64_t> inbox_by_peer_;
  std::unordered_map<const caf::mailbox_element*, inbox_charge> charges_;
  uint64_t current_charge_ = 0;  // of the message being handled
};

}  // namespace pool::detail
