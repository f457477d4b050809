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
#include <string>
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
/// peer waits for it.
template <class State>
class guarded_actor : public caf::stateful_actor<State> {
 public:
  using super = caf::stateful_actor<State>;
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
  };

  guarded_actor(caf::actor_config& cfg, options opts, init_fn init)
      : super(cfg), opts_(std::move(opts)), init_(std::move(init)) {}

  caf::behavior make_behavior() override { return init_(this); }

  void enqueue(caf::mailbox_element_ptr what, caf::execution_unit* host) override {
    auto why =
        refusal(*what, this->home_system().node(), opts_.owner, opts_.remote_responses);
    if (why == nullptr) {
      super::enqueue(std::move(what), host);
      return;
    }
    auto node = what->sender ? what->sender->node() : caf::node_id{};
    if (what->mid.is_request() && what->sender) {
      what->sender->enqueue(
          caf::make_mailbox_element(
              this->ctrl(), what->mid.response_id(), {},
              make_error(pool_errc::invalid_input,
                         std::string{"refused: "} + why + " messages are not accepted")),
          host);
    }
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

 private:
  const options opts_;
  init_fn init_;
};

}  // namespace pool::detail
