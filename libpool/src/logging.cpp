#include "logging.hpp"

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <vector>

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/rotating_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>

namespace pool::detail {

namespace {

constexpr const char* components[] = {"node",   "supervisor", "gateway",
                                      "worker", "http",       "client"};

constexpr const char* text_pattern = "%Y-%m-%dT%H:%M:%S.%e%z %l %n %v";
constexpr const char* json_pattern =
    R"({"ts":"%Y-%m-%dT%H:%M:%S.%e%z","level":"%l","logger":"%n",%v})";

std::atomic<bool> json_format{false};
std::mutex setup_mutex;

/// The file sink: a plain or rotating file sink behind a handle that can be
/// swapped for a fresh one at the same path (SIGHUP), so that loggers cached
/// by components keep writing to the current file.
class reopenable_file_sink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  explicit reopenable_file_sink(const log_section& cfg) : cfg_(cfg), inner_(open()) {}

  /// Replaces the file sink with a new one at the configured path. Throws
  /// spdlog_ex (and keeps the old one) if the file cannot be opened.
  void reopen() {
    auto fresh = open();
    std::lock_guard<std::mutex> guard{mutex_};
    inner_->flush();
    if (formatter_)
      fresh->set_formatter(formatter_->clone());
    inner_ = std::move(fresh);
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override { inner_->log(msg); }
  void flush_() override { inner_->flush(); }
  void set_pattern_(const std::string& pattern) override {
    set_formatter_(std::make_unique<spdlog::pattern_formatter>(pattern));
  }
  void set_formatter_(std::unique_ptr<spdlog::formatter> formatter) override {
    formatter_ = std::move(formatter);
    inner_->set_formatter(formatter_->clone());
  }

 private:
  /// A sink on cfg_.file: rotating when log.max-size is set.
  spdlog::sink_ptr open() const {
    if (cfg_.max_size_mib > 0)
      return std::make_shared<spdlog::sinks::rotating_file_sink_st>(
          cfg_.file, size_t{cfg_.max_size_mib} * 1024 * 1024, cfg_.max_files);
    return std::make_shared<spdlog::sinks::basic_file_sink_st>(cfg_.file);
  }

  log_section cfg_;
  spdlog::sink_ptr inner_;  // guarded by mutex_ (single-threaded sinks)
};

/// The file sink of the last setup_logging, if any (guarded by setup_mutex).
std::shared_ptr<reopenable_file_sink> file_sink;

void append_json_string(std::string& out, std::string_view s) {
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += '"';
}

bool needs_quotes(std::string_view s) {
  if (s.empty())
    return true;
  for (unsigned char c : s)
    if (c <= ' ' || c == '"' || c == '=' || c == '\\' || c >= 0x7f)
      return true;
  return false;
}

}  // namespace

std::string bounded(std::string_view text, size_t max_bytes) {
  if (text.size() <= max_bytes)
    return std::string{text};
  size_t cut = max_bytes;
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80)
    --cut;
  std::string result{text.substr(0, cut)};
  result += "...";
  return result;
}

std::string setup_logging(const log_section& cfg) {
  std::lock_guard<std::mutex> guard{setup_mutex};
  auto level = spdlog::level::from_str(cfg.level);
  std::vector<spdlog::sink_ptr> sinks;
  if (cfg.console)
    sinks.push_back(std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
  if (!cfg.file.empty()) {
    try {
      auto parent = std::filesystem::path{cfg.file}.parent_path();
      if (!parent.empty())
        std::filesystem::create_directories(parent);
      file_sink = std::make_shared<reopenable_file_sink>(cfg);
      sinks.push_back(file_sink);
    } catch (const std::exception& ex) {
      return "log.file: cannot open " + cfg.file + ": " + ex.what();
    }
  } else {
    file_sink.reset();
  }
  json_format = cfg.format == "json";
  for (auto name : components) {
    spdlog::drop(name);
    auto lg = std::make_shared<spdlog::logger>(name, sinks.begin(), sinks.end());
    lg->set_pattern(json_format ? json_pattern : text_pattern);
    lg->set_level(level);
    lg->flush_on(spdlog::level::info);
    spdlog::register_logger(lg);
  }
  return {};
}

std::string reopen_log_file() {
  std::lock_guard<std::mutex> guard{setup_mutex};
  if (!file_sink)
    return {};
  try {
    file_sink->reopen();
  } catch (const std::exception& ex) {
    return ex.what();
  }
  return {};
}

void shutdown_logging() {
  std::lock_guard<std::mutex> guard{setup_mutex};
  spdlog::apply_all([](const std::shared_ptr<spdlog::logger>& lg) { lg->flush(); });
  spdlog::drop_all();
  file_sink.reset();
}

std::shared_ptr<spdlog::logger> get_logger(const char* component) {
  if (auto lg = spdlog::get(component))
    return lg;
  std::lock_guard<std::mutex> guard{setup_mutex};
  if (auto lg = spdlog::get(component))
    return lg;
  auto lg = std::make_shared<spdlog::logger>(
      component, std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
  lg->set_pattern(text_pattern);
  lg->set_level(spdlog::level::warn);
  spdlog::register_logger(lg);
  return lg;
}

log_event::log_event(std::string_view name) {
  text_ = "event=";
  text_ += name;
  json_ = "\"event\":";
  append_json_string(json_, name);
}

log_event& log_event::add(std::string_view key, std::string_view value) {
  auto v = bounded(value, 256);
  text_ += ' ';
  text_ += key;
  text_ += '=';
  if (needs_quotes(v)) {
    append_json_string(text_, v);
  } else {
    text_ += v;
  }
  json_ += ',';
  append_json_string(json_, key);
  json_ += ':';
  append_json_string(json_, v);
  return *this;
}

log_event& log_event::add_raw(std::string_view key, std::string_view text,
                              std::string_view json) {
  text_ += ' ';
  text_ += key;
  text_ += '=';
  text_ += text;
  json_ += ',';
  append_json_string(json_, key);
  json_ += ':';
  json_ += json;
  return *this;
}

log_event& log_event::add(std::string_view key, int64_t value) {
  auto s = std::to_string(value);
  return add_raw(key, s, s);
}

log_event& log_event::add(std::string_view key, uint64_t value) {
  auto s = std::to_string(value);
  return add_raw(key, s, s);
}

log_event& log_event::add(std::string_view key, double value) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.6g", value);
  return add_raw(key, buf, buf);
}

log_event& log_event::add(std::string_view key, bool value) {
  auto s = value ? "true" : "false";
  return add_raw(key, s, s);
}

void log_event::write(spdlog::logger& logger, spdlog::level::level_enum level) const {
  if (!logger.should_log(level))
    return;
  logger.log(level, json_format ? std::string_view{json_} : std::string_view{text_});
}

}  // namespace pool::detail
