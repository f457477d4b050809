// Structured logging over spdlog: one logger per component ("node",
// "supervisor", "gateway", "worker"), ISO timestamps, one event per line with
// `key=value` fields (or one JSON object per line with log.format = json).
//
// Thread-safety: all functions may be called from any thread after
// `setup_logging` (spdlog's _mt sinks serialise writes).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include <spdlog/spdlog.h>

#include "pool/config.hpp"

namespace pool::detail {

/// Creates the component loggers with the sinks `cfg` asks for (console on
/// stderr, file at cfg.file, creating its directory; rotated past
/// cfg.max_size_mib). Returns an error message, or "" on success. Without a
/// call, loggers write warnings and above to stderr.
std::string setup_logging(const log_section& cfg);

/// Closes the log file and opens cfg.file again (a new file if it was moved
/// away, e.g. by logrotate): what the node does on SIGHUP. Loggers already
/// handed out keep working and write to the new file. Returns an error
/// message ("" on success, or when no file is configured); on error the old
/// file stays in use.
std::string reopen_log_file();

/// Flushes and drops every logger (call before exiting).
void shutdown_logging();

/// The logger of a component; never null.
std::shared_ptr<spdlog::logger> get_logger(const char* component);

/// One log event: `event=NAME key=value ...` or its JSON form. Values are
/// escaped; strings longer than 256 bytes are cut with "...".
class log_event {
 public:
  explicit log_event(std::string_view name);

  log_event& add(std::string_view key, std::string_view value);
  log_event& add(std::string_view key, const char* value) {
    return add(key, std::string_view{value});
  }
  log_event& add(std::string_view key, const std::string& value) {
    return add(key, std::string_view{value});
  }
  log_event& add(std::string_view key, int64_t value);
  log_event& add(std::string_view key, uint64_t value);
  log_event& add(std::string_view key, int value) { return add(key, int64_t{value}); }
  log_event& add(std::string_view key, unsigned value) {
    return add(key, uint64_t{value});
  }
  log_event& add(std::string_view key, long long value) {
    return add(key, static_cast<int64_t>(value));
  }
  log_event& add(std::string_view key, unsigned long long value) {
    return add(key, static_cast<uint64_t>(value));
  }
  log_event& add(std::string_view key, double value);
  log_event& add(std::string_view key, bool value);
  /// Adds a value already formatted as JSON (object/array) or as text.
  log_event& add_raw(std::string_view key, std::string_view text, std::string_view json);

  /// Writes the event to `logger` at `level`.
  void write(spdlog::logger& logger, spdlog::level::level_enum level) const;

 private:
  std::string text_;
  std::string json_;
};

/// Cuts `text` to at most `max_bytes` bytes (at a UTF-8 boundary), adding "..."
/// when it was longer.
std::string bounded(std::string_view text, size_t max_bytes);

}  // namespace pool::detail
