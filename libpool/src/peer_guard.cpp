#include "peer_guard.hpp"

#include <caf/all.hpp>

#include "defaults.hpp"
#include "logging.hpp"

namespace pool::detail {

namespace {

/// Counts a dropped message from another node and logs it when a line is
/// due: `content`'s kind, or `what` for a message without one.
void drop_foreign(caf::scheduled_actor* self, const char* actor, const char* what,
                  const caf::type_erased_tuple* content = nullptr) {
  if (auto n = foreign_messages::instance().note(); n > 0) {
    auto& sender = self->current_sender();
    log_foreign(actor, content ? message_kind(*content) : std::string{what},
                sender ? sender->node() : caf::node_id{}, "", n);
  }
}

}  // namespace

std::string message_kind(const caf::type_erased_tuple& content) {
  if (content.empty())
    return "()";
  std::string first;
  if (content.match_element<caf::atom_value>(0))
    first = caf::to_string(content.get_as<caf::atom_value>(0));
  else if (content.match_element<std::string>(0))
    first = "\"" + bounded(content.get_as<std::string>(0), 24) + "\"";
  else
    first = "?";
  return "(" + first +
         (content.size() > 1 ? ", ... [" + std::to_string(content.size()) + " elements])"
                             : ")");
}

bool from_other_node(caf::local_actor* self) {
  auto& sender = self->current_sender();
  return sender && sender->node() != self->home_system().node();
}

bool drain_ordered(caf::local_actor* self,
                   const std::shared_ptr<const std::atomic<bool>>& drain_signal) {
  return !from_other_node(self) && (!drain_signal || drain_signal->load());
}

foreign_messages& foreign_messages::instance() {
  static foreign_messages counter;
  return counter;
}

rate_limited_counter& inbox_sheds() {
  static rate_limited_counter counter;
  return counter;
}

namespace {

std::atomic<uint64_t> inbox_bound{0};

/// A serializer that writes nothing and counts the bytes CAF's binary
/// serializer would write (sizes of sequences as 8 bytes, an upper bound).
class byte_counter final : public caf::serializer {
 public:
  uint64_t bytes = 0;

  caf::error begin_object(uint16_t& nr, std::string& name) override {
    bytes += sizeof(nr) + name.size();
    return caf::none;
  }
  caf::error end_object() override { return caf::none; }
  caf::error begin_sequence(size_t&) override {
    bytes += sizeof(uint64_t);
    return caf::none;
  }
  caf::error end_sequence() override { return caf::none; }
  caf::error apply_raw(size_t num_bytes, void*) override {
    bytes += num_bytes;
    return caf::none;
  }

 protected:
  caf::error apply_impl(int8_t&) override { return add(1); }
  caf::error apply_impl(uint8_t&) override { return add(1); }
  caf::error apply_impl(int16_t&) override { return add(2); }
  caf::error apply_impl(uint16_t&) override { return add(2); }
  caf::error apply_impl(int32_t&) override { return add(4); }
  caf::error apply_impl(uint32_t&) override { return add(4); }
  caf::error apply_impl(int64_t&) override { return add(8); }
  caf::error apply_impl(uint64_t&) override { return add(8); }
  caf::error apply_impl(float&) override { return add(4); }
  caf::error apply_impl(double&) override { return add(8); }
  caf::error apply_impl(long double&) override { return add(16); }
  caf::error apply_impl(std::string& x) override { return add(8 + x.size()); }
  caf::error apply_impl(std::u16string& x) override { return add(8 + 2 * x.size()); }
  caf::error apply_impl(std::u32string& x) override { return add(8 + 4 * x.size()); }

 private:
  caf::error add(uint64_t n) {
    bytes += n;
    return caf::none;
  }
};

}  // namespace

void set_max_inbox_bytes(uint64_t bytes) {
  inbox_bound = bytes;
}

uint64_t max_inbox_bytes() {
  return inbox_bound.load(std::memory_order_relaxed);
}

uint64_t approximate_bytes(const caf::type_erased_tuple& content) {
  byte_counter counter;
  // An element it cannot save (an actor handle without a context) ends the
  // count early: the bytes counted so far stand.
  static_cast<void>(content.save(counter));
  return counter.bytes;
}

uint64_t rate_limited_counter::note() {
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
        if (from_other_node(self)) {
          drop_foreign(self, actor, "message", &view.content());
          return caf::message{};
        }
        // A local message nobody handles is a bug of ours: say so, bounded.
        if (foreign_messages::instance().note() > 0)
          log_event("unexpected_message")
              .add("actor", actor)
              .add("message", message_kind(view.content()))
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
