#include "peer_guard.hpp"

#include <caf/all.hpp>

#include "logging.hpp"

namespace pool::detail {

namespace {

constexpr auto foreign_log_interval = std::chrono::seconds(1);

/// What kind of message `content` is, for log lines (its first element's
/// type; never the payload itself).
std::string kind_of(const caf::type_erased_tuple& content) {
  if (content.empty())
    return "()";
  if (content.match_element<caf::atom_value>(0))
    return "(" + caf::to_string(content.get_as<caf::atom_value>(0)) + ", ...)";
  auto name = content.stringify(0);
  return bounded(name, 32);
}

void drop_foreign(caf::scheduled_actor* self, const char* actor,
                  const std::string& what) {
  if (auto n = foreign_messages::instance().note(); n > 0) {
    auto& sender = self->current_sender();
    log_foreign(actor, what, sender ? sender->node() : caf::node_id{}, "", n);
  }
}

}  // namespace

bool from_other_node(caf::local_actor* self) {
  auto& sender = self->current_sender();
  return sender && sender->node() != self->home_system().node();
}

foreign_messages& foreign_messages::instance() {
  static foreign_messages counter;
  return counter;
}

uint64_t foreign_messages::note() {
  total_.fetch_add(1, std::memory_order_relaxed);
  auto now = std::chrono::steady_clock::now();
  std::lock_guard<std::mutex> guard{mtx_};
  ++unlogged_;
  if (now - last_line_ < foreign_log_interval)
    return 0;
  last_line_ = now;
  return std::exchange(unlogged_, 0);
}

void log_foreign(const char* actor, const std::string& what, const caf::node_id& node,
                 const std::string& address, uint64_t count) {
  log_event ev("foreign_message_dropped");
  ev.add("actor", actor)
      .add("message", what)
      .add("peer_node", node ? caf::to_string(node) : std::string{"none"})
      .add("peer_address", address.empty() ? std::string{"unknown"} : address)
      .add("count", count)
      .add("total", foreign_messages::instance().total());
  ev.write(*get_logger("gateway"), spdlog::level::warn);
}

void guard_internal_actor(caf::scheduled_actor* self, const char* actor) {
  self->set_default_handler(
      [self, actor](caf::scheduled_actor*,
                    caf::message_view& view) -> caf::result<caf::message> {
        auto what = kind_of(view.content());
        if (from_other_node(self)) {
          drop_foreign(self, actor, what);
          return caf::message{};
        }
        // A local message nobody handles is a bug of ours: say so, bounded.
        if (foreign_messages::instance().note() > 0)
          log_event("unexpected_message")
              .add("actor", actor)
              .add("message", what)
              .write(*get_logger("node"), spdlog::level::warn);
        return caf::message{};
      });
  self->set_error_handler([self, actor](caf::error& err) {
    if (from_other_node(self)) {
      drop_foreign(self, actor, "error");
      return;
    }
    log_event("unexpected_error")
        .add("actor", actor)
        .add("error", caf::to_string(err))
        .write(*get_logger("node"), spdlog::level::warn);
  });
  self->set_exit_handler([self, actor](caf::exit_msg& msg) {
    if (from_other_node(self)) {
      drop_foreign(self, actor, "exit");
      return;
    }
    if (msg.reason)
      self->quit(std::move(msg.reason));
  });
}

}  // namespace pool::detail
