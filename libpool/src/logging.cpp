#include "logging.hpp"

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <vector>

#include <spdlog/sinks/basic_file_sink.h>
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
      sinks.push_back(std::make_shared<spdlog::sinks::basic_file_sink_mt>(cfg.file));
    } catch (const std::exception& ex) {
      return "log.file: cannot open " + cfg.file + ": " + ex.what();
    }
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

void shutdown_logging() {
  std::lock_guard<std::mutex> guard{setup_mutex};
  spdlog::apply_all([](const std::shared_ptr<spdlog::logger>& lg) { lg->flush(); });
  spdlog::drop_all();
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
