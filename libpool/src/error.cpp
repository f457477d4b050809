#include "pool/error.hpp"

#include <caf/actor_system_config.hpp>
#include <caf/message.hpp>
#include <caf/sec.hpp>

namespace pool {

namespace {

constexpr const char* errc_names[] = {
    "none",          "overloaded",        "invalid_input",
    "too_large",     "deadline_exceeded", "worker_failed",
    "shutting_down", "unavailable",       "protocol_mismatch",
};

constexpr size_t errc_count = sizeof(errc_names) / sizeof(errc_names[0]);

}  // namespace

const char* to_string(pool_errc code) {
  auto index = static_cast<size_t>(code);
  return index < errc_count ? errc_names[index] : "unknown";
}

caf::optional<pool_errc> parse_pool_errc(const std::string& name) {
  for (size_t i = 1; i < errc_count; ++i)
    if (name == errc_names[i])
      return static_cast<pool_errc>(i);
  return caf::none;
}

caf::error make_error(pool_errc code, std::string message) {
  return caf::error{static_cast<uint8_t>(code), pool_category,
                    caf::make_message(std::move(message))};
}

caf::optional<pool_errc> pool_code(const caf::error& err) {
  if (!err || err.category() != pool_category)
    return caf::none;
  return static_cast<pool_errc>(err.code());
}

std::string error_message(const caf::error& err) {
  const auto& ctx = err.context();
  if (ctx.size() >= 1 && ctx.match_element<std::string>(0))
    return ctx.get_as<std::string>(0);
  return {};
}

std::string describe(const caf::error& err) {
  if (auto code = pool_code(err)) {
    auto msg = error_message(err);
    std::string result = to_string(*code);
    if (!msg.empty()) {
      result += ": ";
      result += msg;
    }
    return result;
  }
  return caf::actor_system_config::render(err);
}

}  // namespace pool
