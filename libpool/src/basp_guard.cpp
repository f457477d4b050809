// Replaces caf::io::basp::valid and caf::message::load (see basp_guard.hpp).
// Both are exported by libcaf_io / libcaf_core and called through the PLT, so
// the executable's definitions below win; each calls CAF's own through
// dlsym(RTLD_NEXT) after its check.
#include "basp_guard.hpp"

#include <atomic>
#include <chrono>
#include <mutex>

#include <caf/deserializer.hpp>
#include <caf/error.hpp>
#include <caf/io/basp/header.hpp>
#include <caf/message.hpp>
#include <caf/sec.hpp>

#include "interpose.hpp"
#include "logging.hpp"

namespace pool::detail {

namespace {

std::atomic<uint32_t> frame_limit{UINT32_MAX};
std::atomic<uint32_t> depth_limit{default_max_message_depth};
std::atomic<uint64_t> oversized{0};
std::atomic<uint64_t> too_deep{0};

constexpr const char* valid_symbol = "_ZN3caf2io4basp5validERKNS1_6headerE";
constexpr const char* load_symbol = "_ZN3caf7message4loadERNS_12deserializerE";

/// At most one log line per second per kind, with the count since the last.
class rate_limited_log {
 public:
  explicit rate_limited_log(const char* reason) : reason_(reason) {}

  void note(uint64_t total, const char* key, uint64_t value, uint64_t limit) {
    uint64_t count = 0;
    {
      std::lock_guard<std::mutex> guard{mtx_};
      auto now = std::chrono::steady_clock::now();
      ++unlogged_;
      if (logged_once_ && now - last_ < std::chrono::seconds(1))
        return;
      logged_once_ = true;
      last_ = now;
      count = unlogged_;
      unlogged_ = 0;
    }
    log_event("basp_frame_refused")
        .add("reason", reason_)
        .add(key, value)
        .add("limit", limit)
        .add("count", count)
        .add("total", total)
        .write(*get_logger("node"), spdlog::level::warn);
  }

 private:
  const char* reason_;
  std::mutex mtx_;
  std::chrono::steady_clock::time_point last_{};
  bool logged_once_ = false;
  uint64_t unlogged_ = 0;
};

rate_limited_log& oversized_log() {
  static rate_limited_log instance{"payload_too_large"};
  return instance;
}

rate_limited_log& too_deep_log() {
  static rate_limited_log instance{"message_nested_too_deep"};
  return instance;
}

thread_local uint32_t load_depth = 0;

}  // namespace

void set_max_frame_bytes(uint32_t bytes) {
  frame_limit = bytes;
}

uint32_t max_frame_bytes() {
  return frame_limit.load();
}

void set_max_message_depth(uint32_t depth) {
  depth_limit = depth;
}

bool basp_guard_bound() {
  // Bound when the first definition the process resolves is not CAF's (the
  // next one after this executable).
  return bound_to_us(valid_symbol) && bound_to_us(load_symbol);
}

uint64_t oversized_frames() {
  return oversized.load();
}

uint64_t too_deep_messages() {
  return too_deep.load();
}

}  // namespace pool::detail

namespace caf::io::basp {

bool valid(const header& hdr) {
  using fn = bool (*)(const header&);
  static const auto next = pool::detail::next_definition<fn>(pool::detail::valid_symbol);
  auto limit = pool::detail::frame_limit.load(std::memory_order_relaxed);
  if (hdr.payload_len > limit) {
    auto total = ++pool::detail::oversized;
    pool::detail::oversized_log().note(total, "payload_len", hdr.payload_len, limit);
    return false;
  }
  return next(hdr);
}

}  // namespace caf::io::basp

namespace caf {

error message::load(deserializer& source) {
  // Itanium C++ ABI: a member function is a function taking `this` first; a
  // non-trivial return value comes back through a hidden pointer either way.
  using fn = error (*)(message*, deserializer&);
  static const auto next = pool::detail::next_definition<fn>(pool::detail::load_symbol);
  auto& depth = pool::detail::load_depth;
  auto limit = pool::detail::depth_limit.load(std::memory_order_relaxed);
  if (depth >= limit) {
    auto total = ++pool::detail::too_deep;
    pool::detail::too_deep_log().note(total, "depth", depth + 1, limit);
    return make_error(sec::invalid_argument, "message nested too deep");
  }
  struct nesting {
    uint32_t& depth;
    explicit nesting(uint32_t& d) : depth(d) { ++depth; }
    ~nesting() { --depth; }
  } guard{depth};
  return next(this, source);
}

}  // namespace caf
