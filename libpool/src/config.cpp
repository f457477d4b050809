// Node configuration loader: our own INI reader and command-line parser, driven
// by one schema table (`schema()`) that also produces `node_usage()`.
//
// Contract summary (details in config.hpp and conf/embedpool.ini):
// - The file is read first, then `--section.key=value` arguments override it.
// - A key set twice in the file is an error; on the command line the last
//   occurrence wins.
// - Sections of CAF itself are not interpreted: they are forwarded to
//   `node_config::caf_args` for `caf::actor_system_config::parse`, which
//   validates them. From the file, a boolean `true` becomes a bare flag (CAF's
//   command line takes no `=true`) and `false`, CAF's default for all its
//   flags, is left out. Command-line CAF arguments are forwarded verbatim.
#include "pool/config.hpp"

#include <algorithm>
#include <cctype>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>

#include <caf/actor_system_config.hpp>
#include <caf/config_option_set.hpp>
#include <caf/io/middleman.hpp>
#include <caf/openssl/manager.hpp>

#include "pool/caf_defaults.hpp"
#include "pool/error.hpp"

namespace pool {

namespace {

// -- errors -------------------------------------------------------------------

/// Internal failure carrying the final, user-facing message; converted to a
/// `pool_errc::invalid_input` error at the `parse_node_args` boundary.
struct config_failure {
  std::string message;
};

[[noreturn]] void fail(std::string message) {
  throw config_failure{std::move(message)};
}

/// Quotes a value for an error message, bounded so a huge input cannot make a
/// huge message.
std::string quote(const std::string& text) {
  constexpr size_t max_len = 80;
  std::string out = "\"";
  out += text.size() <= max_len ? text : text.substr(0, max_len) + "...";
  out += '"';
  return out;
}

// -- durations ----------------------------------------------------------------

struct duration_unit {
  const char* suffix;
  int64_t nanos;
};

// Longest suffix first so that "min" wins over "m..." prefixes and "ms" over "s".
constexpr duration_unit duration_units[] = {
    {"min", 60'000'000'000LL},
    {"ns", 1LL},
    {"us", 1'000LL},
    {"ms", 1'000'000LL},
    {"h", 3'600'000'000'000LL},
    {"s", 1'000'000'000LL},
};

/// Renders a duration in the largest unit that represents it exactly.
std::string format_duration(caf::timespan value) {
  auto ns = value.count();
  if (ns == 0)
    return "0s";
  constexpr duration_unit by_size[] = {
      {"h", 3'600'000'000'000LL}, {"min", 60'000'000'000LL}, {"s", 1'000'000'000LL},
      {"ms", 1'000'000LL},        {"us", 1'000LL},           {"ns", 1LL},
  };
  for (const auto& unit : by_size)
    if (ns % unit.nanos == 0)
      return std::to_string(ns / unit.nanos) + unit.suffix;
  return std::to_string(ns) + "ns";  // unreachable: 1ns divides everything
}

// -- values -------------------------------------------------------------------

enum class value_kind { string, atom, bare, integer, real, boolean, duration, list };

/// One parsed value of the INI grammar (CAF's syntax plus bare words).
struct value {
  value_kind kind = value_kind::bare;
  std::string text;  // as written (lists: normalised to one line)
  std::string str;   // content of string, atom and bare values
  int64_t integer = 0;
  bool boolean = false;
  caf::timespan duration{0};
  std::vector<value> items;
};

/// Parses optional sign and decimal digits; false on anything else or overflow.
bool parse_int64(const std::string& text, int64_t& out) {
  size_t i = 0;
  bool negative = false;
  if (i < text.size() && (text[i] == '+' || text[i] == '-'))
    negative = text[i++] == '-';
  if (i == text.size())
    return false;
  int64_t result = 0;
  for (; i < text.size(); ++i) {
    if (!std::isdigit(static_cast<unsigned char>(text[i])))
      return false;
    int digit = text[i] - '0';
    if (result > (std::numeric_limits<int64_t>::max() - digit) / 10)
      return false;
    result = result * 10 + digit;
  }
  out = negative ? -result : result;
  return true;
}

bool is_real(const std::string& text) {
  size_t i = 0;
  if (i < text.size() && (text[i] == '+' || text[i] == '-'))
    ++i;
  size_t digits = 0;
  bool dot = false;
  for (; i < text.size(); ++i) {
    char ch = text[i];
    if (std::isdigit(static_cast<unsigned char>(ch))) {
      ++digits;
    } else if (ch == '.' && !dot) {
      dot = true;
    } else {
      break;
    }
  }
  if (digits == 0)
    return false;
  bool exponent = false;
  if (i < text.size() && (text[i] == 'e' || text[i] == 'E')) {
    exponent = true;
    ++i;
    if (i < text.size() && (text[i] == '+' || text[i] == '-'))
      ++i;
    size_t exp_digits = 0;
    for (; i < text.size() && std::isdigit(static_cast<unsigned char>(text[i])); ++i)
      ++exp_digits;
    if (exp_digits == 0)
      return false;
  }
  return i == text.size() && (dot || exponent);
}

/// Classifies an unquoted token: boolean, integer, duration, real, else a bare
/// word (a string).
value classify(std::string token) {
  value result;
  result.text = token;
  if (token == "true" || token == "false") {
    result.kind = value_kind::boolean;
    result.boolean = token == "true";
    return result;
  }
  if (parse_int64(token, result.integer)) {
    result.kind = value_kind::integer;
    return result;
  }
  for (const auto& unit : duration_units) {
    std::string suffix = unit.suffix;
    if (token.size() <= suffix.size() ||
        token.compare(token.size() - suffix.size(), suffix.size(), suffix) != 0)
      continue;
    int64_t count = 0;
    if (!parse_int64(token.substr(0, token.size() - suffix.size()), count))
      break;
    if (count > std::numeric_limits<int64_t>::max() / unit.nanos ||
        count < std::numeric_limits<int64_t>::min() / unit.nanos)
      break;  // overflow: falls through to a bare word, refused by duration keys
    result.kind = value_kind::duration;
    result.duration = caf::timespan{count * unit.nanos};
    return result;
  }
  if (is_real(token)) {
    result.kind = value_kind::real;
    return result;
  }
  result.kind = value_kind::bare;
  result.str = std::move(token);
  return result;
}

// -- scanner ------------------------------------------------------------------

/// Reads values (and, for files, whole INI documents) from a text. `source`
/// names the origin in messages: a file path, or "command line".
class scanner {
 public:
  scanner(const std::string& text, std::string source, bool is_file)
      : text_(text), source_(std::move(source)), is_file_(is_file) {}

  /// Where we are, for messages: "conf/x.ini line 7" or "command line".
  std::string where() const {
    return is_file_ ? source_ + " line " + std::to_string(line_) : source_;
  }

  int line() const { return line_; }

  [[noreturn]] void fail_at(const std::string& key, const std::string& what) const {
    if (key.empty())
      fail(where() + ": " + what);
    fail(key + ": " + what + " (" + where() + ")");
  }

  bool at_end() const { return pos_ >= text_.size(); }
  void advance() { ++pos_; }
  char peek() const { return at_end() ? '\0' : text_[pos_]; }

  void skip_blanks() {
    while (!at_end() && (peek() == ' ' || peek() == '\t' || peek() == '\r'))
      ++pos_;
  }

  /// Skips a comment starting at the current `;` or `#`, up to the newline.
  void skip_comment() {
    while (!at_end() && peek() != '\n')
      ++pos_;
  }

  bool at_comment() const { return peek() == ';' || peek() == '#'; }

  void consume_newline() {
    if (peek() == '\n') {
      ++pos_;
      ++line_;
    }
  }

  /// After a value or header: blanks, an optional comment (files only), then
  /// the end of the line.
  void expect_end_of_line(const std::string& key) {
    skip_blanks();
    if (is_file_ && at_comment())
      skip_comment();
    if (!at_end() && peek() != '\n') {
      auto end = text_.find('\n', pos_);
      auto rest = text_.substr(pos_, end == std::string::npos ? end : end - pos_);
      fail_at(key, "unexpected text " + quote(rest));
    }
    consume_newline();
  }

  /// Skips blanks, newlines and comments (inside lists and between lines).
  void skip_space_and_comments() {
    for (;;) {
      skip_blanks();
      if (at_comment()) {
        skip_comment();
      } else if (peek() == '\n') {
        consume_newline();
      } else {
        return;
      }
    }
  }

  /// Reads a name made of letters, digits, '-' and '_' (plus '.' if allowed).
  std::string read_name(bool allow_dots) {
    std::string name;
    while (!at_end()) {
      char ch = peek();
      if (std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '_' ||
          (allow_dots && ch == '.')) {
        name += ch;
        ++pos_;
      } else {
        break;
      }
    }
    return name;
  }

  /// Reads one value at the current position. On the command line `whole`
  /// makes an unquoted value extend to the end of the text (spaces included).
  value read_value(const std::string& key, bool whole = false) {
    skip_blanks();
    char ch = peek();
    if (ch == '"')
      return read_string(key);
    if (ch == '\'')
      return read_atom(key);
    if (ch == '[')
      return read_list(key);
    if (ch == '{')
      fail_at(key, "maps ({...}) are not supported");
    if (whole) {
      auto token = text_.substr(pos_);
      pos_ = text_.size();
      return classify(std::move(token));
    }
    std::string token;
    while (!at_end()) {
      ch = peek();
      if (ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n' || ch == ';' || ch == '#' ||
          ch == ',' || ch == ']' || ch == '[' || ch == '"')
        break;
      token += ch;
      ++pos_;
    }
    return classify(std::move(token));
  }

 private:
  value read_string(const std::string& key) {
    value result;
    result.kind = value_kind::string;
    auto start = pos_++;
    for (;;) {
      if (at_end() || peek() == '\n')
        fail_at(key, "unterminated string");
      char ch = text_[pos_++];
      if (ch == '"')
        break;
      if (ch != '\\') {
        result.str += ch;
        continue;
      }
      if (at_end())
        fail_at(key, "unterminated string");
      char esc = text_[pos_++];
      switch (esc) {
        case '"':
        case '\\':
          result.str += esc;
          break;
        case 'n':
          result.str += '\n';
          break;
        case 't':
          result.str += '\t';
          break;
        case 'r':
          result.str += '\r';
          break;
        default:
          fail_at(key, std::string{"unknown escape sequence \\"} + esc + " in string");
      }
    }
    result.text = text_.substr(start, pos_ - start);
    return result;
  }

  value read_atom(const std::string& key) {
    value result;
    result.kind = value_kind::atom;
    auto start = pos_++;
    for (;;) {
      if (at_end() || peek() == '\n')
        fail_at(key, "unterminated atom");
      char ch = text_[pos_++];
      if (ch == '\'')
        break;
      result.str += ch;
    }
    result.text = text_.substr(start, pos_ - start);
    return result;
  }

  value read_list(const std::string& key) {
    constexpr int max_depth = 16;
    if (++depth_ > max_depth)
      fail_at(key, "lists nested too deeply");
    value result;
    result.kind = value_kind::list;
    ++pos_;  // '['
    for (;;) {
      skip_space_and_comments();
      if (at_end())
        fail_at(key, "unterminated list, expected ']'");
      if (peek() == ']') {
        ++pos_;
        break;
      }
      auto item = read_value(key);
      if (item.kind != value_kind::list && item.kind != value_kind::string &&
          item.kind != value_kind::atom && item.text.empty())
        fail_at(key, "expected a list element");
      result.items.push_back(std::move(item));
      skip_space_and_comments();
      if (at_end())
        fail_at(key, "unterminated list, expected ']'");
      if (peek() == ',') {
        ++pos_;
      } else if (peek() != ']') {
        fail_at(key, "expected ',' or ']' in list");
      }
    }
    --depth_;
    result.text = "[";
    for (size_t i = 0; i < result.items.size(); ++i) {
      if (i > 0)
        result.text += ", ";
      result.text += result.items[i].text;
    }
    result.text += "]";
    return result;
  }

  const std::string& text_;
  std::string source_;
  bool is_file_;
  size_t pos_ = 0;
  int line_ = 1;
  int depth_ = 0;
};

// -- schema -------------------------------------------------------------------

enum class key_type { integer, duration, boolean, string, choice, string_list };

/// Lower bound of a duration key.
enum class duration_bound { non_negative, positive };

/// One key of ours: its type, range, doc, and how to read and write it.
struct key_spec {
  std::string name;  // "section.key"
  key_type type = key_type::string;
  std::string doc;
  int64_t min = 0;  // integer keys
  int64_t max = 0;
  duration_bound bound = duration_bound::non_negative;  // duration keys
  std::vector<std::string> choices;                     // choice keys
  bool non_empty = false;                               // string keys
  std::function<void(node_config&, int64_t)> set_integer;
  std::function<void(node_config&, caf::timespan)> set_duration;
  std::function<void(node_config&, bool)> set_boolean;
  std::function<void(node_config&, const std::string&)> set_string;
  std::function<void(node_config&, std::vector<std::string>)> set_list;
  std::function<std::string(const node_config&)> render;  // current value
  std::string list_items = "HOST:PORT entries";           // list keys: what an item is
};

key_spec make_spec(std::string name, key_type type, std::string doc) {
  key_spec spec;
  spec.name = std::move(name);
  spec.type = type;
  spec.doc = std::move(doc);
  return spec;
}

template <class Section, class T>
key_spec integer_key(std::string name, Section node_config::*section, T Section::*member,
                     int64_t min, int64_t max, std::string doc) {
  auto spec = make_spec(std::move(name), key_type::integer, std::move(doc));
  spec.min = min;
  spec.max = max;
  spec.set_integer = [=](node_config& cfg, int64_t v) {
    (cfg.*section).*member = static_cast<T>(v);
  };
  spec.render = [=](const node_config& cfg) {
    return std::to_string((cfg.*section).*member);
  };
  return spec;
}

template <class Section>
key_spec duration_key(std::string name, Section node_config::*section,
                      caf::timespan Section::*member, duration_bound bound,
                      std::string doc) {
  auto spec = make_spec(std::move(name), key_type::duration, std::move(doc));
  spec.bound = bound;
  spec.set_duration = [=](node_config& cfg, caf::timespan v) {
    (cfg.*section).*member = v;
  };
  spec.render = [=](const node_config& cfg) {
    return format_duration((cfg.*section).*member);
  };
  return spec;
}

template <class Section>
key_spec string_key(std::string name, Section node_config::*section,
                    std::string Section::*member, bool non_empty, std::string doc) {
  auto spec = make_spec(std::move(name), key_type::string, std::move(doc));
  spec.non_empty = non_empty;
  spec.set_string = [=](node_config& cfg, const std::string& v) {
    (cfg.*section).*member = v;
  };
  spec.render = [=](const node_config& cfg) { return (cfg.*section).*member; };
  return spec;
}

template <class Section>
key_spec choice_key(std::string name, Section node_config::*section,
                    std::string Section::*member, std::vector<std::string> choices,
                    std::string doc) {
  auto spec = string_key(std::move(name), section, member, true, std::move(doc));
  spec.type = key_type::choice;
  spec.choices = std::move(choices);
  return spec;
}

template <class Section>
key_spec boolean_key(std::string name, Section node_config::*section,
                     bool Section::*member, std::string doc) {
  auto spec = make_spec(std::move(name), key_type::boolean, std::move(doc));
  spec.set_boolean = [=](node_config& cfg, bool v) { (cfg.*section).*member = v; };
  spec.render = [=](const node_config& cfg) {
    return (cfg.*section).*member ? std::string{"true"} : std::string{"false"};
  };
  return spec;
}

/// A list of strings: `["a", "b"]`, or one string whose commas separate items.
template <class Section>
key_spec list_key(std::string name, Section node_config::*section,
                  std::vector<std::string> Section::*member, std::string doc) {
  auto spec = make_spec(std::move(name), key_type::string_list, std::move(doc));
  spec.set_list = [=](node_config& cfg, std::vector<std::string> v) {
    (cfg.*section).*member = std::move(v);
  };
  spec.render = [=](const node_config& cfg) {
    std::string out;
    for (const auto& item : (cfg.*section).*member) {
      if (!out.empty())
        out += ',';
      out += item;
    }
    return out;
  };
  return spec;
}

key_spec overload_policy_key() {
  auto spec =
      make_spec("pool.overload-policy", key_type::choice,
                "without worker credit: wait parks the request in the pending queue, "
                "reject answers overloaded at once");
  spec.choices = {"wait", "reject"};
  spec.set_string = [](node_config& cfg, const std::string& v) {
    cfg.pool.policy = v == "reject" ? overload_policy::reject : overload_policy::wait;
  };
  spec.render = [](const node_config& cfg) {
    return cfg.pool.policy == overload_policy::reject ? std::string{"reject"}
                                                      : std::string{"wait"};
  };
  return spec;
}

/// `models.names`: kept in `node_config::models` (names only until the
/// loader resolves each model's section).
key_spec model_names_key() {
  auto spec = make_spec("models.names", key_type::string_list,
                        "more models this node serves, each set up in [models.NAME]");
  spec.list_items = "model names";
  spec.set_list = [](node_config& cfg, std::vector<std::string> names) {
    cfg.models.clear();
    for (auto& name : names)
      cfg.models.push_back(named_model{std::move(name), {}, {}});
  };
  spec.render = [](const node_config& cfg) {
    std::string out;
    for (const auto& m : cfg.models)
      out += (out.empty() ? "" : ",") + m.name;
    return out;
  };
  return spec;
}

constexpr int64_t mib = 1024 * 1024;
constexpr auto non_negative = duration_bound::non_negative;
constexpr auto positive = duration_bound::positive;

/// Every key of ours, in the order of conf/embedpool.ini.
const std::vector<key_spec>& schema() {
  using nc = node_config;
  static const std::vector<key_spec> specs = {
      string_key("node.host", &nc::node, &node_section::host, true,
                 "address the gateway binds; keep it on loopback unless TLS is set up"),
      integer_key("node.port", &nc::node, &node_section::port, 0, 65535,
                  "TCP port of the gateway; 0 picks a free port"),
      choice_key("node.role", &nc::node, &node_section::role, {"standalone", "worker"},
                 "standalone serves requests; worker lends its workers to node.join"),
      list_key("node.join", &nc::node, &node_section::join,
               "supervisors (HOST:PORT, comma-separated or a list) a worker node joins, "
               "tried in turn"),
      string_key("node.name", &nc::node, &node_section::name, false,
                 "name of a worker node in the supervisor's status; \"\" = host name "
                 "plus a random suffix"),
      boolean_key("node.allow-insecure", &nc::node, &node_section::allow_insecure,
                  "allow a non-loopback node.host without TLS (logs a warning)"),
      integer_key("node.max-unread-bytes-per-peer", &nc::node,
                  &node_section::max_unread_mib, 0, 1 << 20,
                  "MiB of replies a peer may leave unread; past it: overloaded, then "
                  "the connection is closed; 0 = no bound"),
      integer_key("node.max-inbox-bytes", &nc::node, &node_section::max_inbox_mib, 0,
                  1 << 20,
                  "MiB of peers' messages waiting for the gateway; past it they are "
                  "shed (overloaded); 0 = no bound"),
      integer_key("pool.workers", &nc::pool, &pool_section::workers, 1, 256,
                  "worker actors (threads) per node"),
      integer_key("pool.embed-queue-capacity", &nc::pool,
                  &pool_section::embed_queue_capacity, 1, 100000,
                  "embed credits per worker: the bound of its embed queue"),
      integer_key("pool.batch-queue-capacity", &nc::pool,
                  &pool_section::batch_queue_capacity, 1, 100000,
                  "batch credits per worker: the bound of its batch queue"),
      integer_key("pool.pending-capacity", &nc::pool, &pool_section::pending_capacity, 0,
                  1000000, "requests parked while no worker has credit (policy wait)"),
      overload_policy_key(),
      duration_key("pool.request-timeout", &nc::pool, &pool_section::request_timeout,
                   positive, "deadline of a request, queueing included"),
      integer_key("pool.max-attempts", &nc::pool, &pool_section::max_attempts, 1, 100,
                  "dispatches per request before answering worker_failed"),
      integer_key("pool.max-text-bytes", &nc::pool, &pool_section::max_text_bytes, 1,
                  16 * mib, "largest accepted text in bytes"),
      integer_key("pool.max-batch-items", &nc::pool, &pool_section::max_batch_items, 1,
                  100000, "most texts in one batch request"),
      integer_key("pool.micro-batch-texts", &nc::pool, &pool_section::micro_batch_texts,
                  1, 4096, "texts per BLAS call inside a worker"),
      duration_key("pool.inline-compute", &nc::pool, &pool_section::inline_compute,
                   non_negative,
                   "chunks estimated to take at most this long are embedded on the "
                   "scheduler thread, longer ones on the worker's compute thread"),
      duration_key("pool.restart-backoff", &nc::pool, &pool_section::restart_backoff,
                   non_negative, "first delay before restarting a dead worker; doubles"),
      duration_key("pool.restart-backoff-max", &nc::pool,
                   &pool_section::restart_backoff_max, non_negative,
                   "cap of the restart delay; at least pool.restart-backoff"),
      integer_key("pool.max-restarts", &nc::pool, &pool_section::max_restarts, 0, 1000,
                  "restarts per worker slot within pool.restart-window before giving up"),
      duration_key("pool.restart-window", &nc::pool, &pool_section::restart_window,
                   positive, "window of the restart intensity limit"),
      integer_key(
          "pool.max-abandoned", &nc::pool, &pool_section::max_abandoned, 0, 1000,
          "stuck worker threads left behind before the node stops replacing them"),
      duration_key("pool.drain-timeout", &nc::pool, &pool_section::drain_timeout,
                   non_negative, "time in-flight work gets to finish on shutdown"),
      integer_key("pool.min-workers", &nc::pool, &pool_section::min_workers, 0, 256,
                  "local workers never evicted; 0 = min(pool.workers, pool.max-workers)"),
      integer_key("pool.max-workers", &nc::pool, &pool_section::max_workers, 0, 256,
                  "most local workers after scaling up; 0 = max(pool.workers, "
                  "pool.min-workers)"),
      integer_key("pool.scale-up-queue-depth", &nc::pool,
                  &pool_section::scale_up_queue_depth, 1, 1000000,
                  "queued requests per ready worker above which the pool grows"),
      duration_key("pool.scale-up-window", &nc::pool, &pool_section::scale_up_window,
                   positive,
                   "how long the depth stays above the threshold before "
                   "one worker is added"),
      duration_key("pool.idle-cooldown", &nc::pool, &pool_section::idle_cooldown,
                   positive, "a worker idle this long is evicted, down to the minimum"),
      integer_key("pool.max-queued-bytes", &nc::pool, &pool_section::max_queued_bytes_mib,
                  0, int64_t{1} << 20,
                  "MiB of request text the node holds at once; past it: overloaded; "
                  "0 = no bound"),
      integer_key("pool.memory-budget", &nc::pool, &pool_section::memory_budget_mib, 0,
                  int64_t{1} << 24,
                  "MiB for model weights and worker buffers of all models; 0 = none"),
      duration_key("heartbeat.interval", &nc::heartbeat, &heartbeat_section::interval,
                   positive, "period of the health ping to each worker"),
      duration_key(
          "heartbeat.timeout", &nc::heartbeat, &heartbeat_section::timeout, positive,
          "no pong for this long marks a worker stuck; above heartbeat.interval"),
      integer_key("cluster.max-workers-per-node", &nc::cluster,
                  &cluster_section::max_workers_per_node, 1, 4096,
                  "most workers one worker node may lend; a larger join is refused"),
      duration_key("cluster.lost-node-expiry", &nc::cluster,
                   &cluster_section::lost_node_expiry, positive,
                   "slots of a lost worker node are freed after this long"),
      duration_key("status.max-age", &nc::status, &status_section::max_age, non_negative,
                   "status and metrics are answered from a snapshot at most this old"),
      string_key("model.name", &nc::model, &model_config::name, false,
                 "what requests call the default model; \"\" = the embedder's name"),
      choice_key("model.kind", &nc::model, &model_config::kind, {"hash", "bert"},
                 "embedder: hash (built in, no weights) or bert (local model)"),
      string_key("model.path", &nc::model, &model_config::path, false,
                 "sentence-transformers directory; required when model.kind = bert"),
      integer_key("model.dim", &nc::model, &model_config::dim, 1, 4096,
                  "output dimension of the hash embedder"),
      integer_key("model.hash-buckets", &nc::model, &model_config::hash_buckets, 16,
                  1048576, "feature-hashing buckets of the hash embedder"),
      integer_key("model.blas-threads", &nc::model, &model_config::blas_threads, 1, 64,
                  "OpenBLAS threads per worker"),
      boolean_key("model.truncate", &nc::model, &model_config::truncate,
                  "cut texts longer than the model's input limit (true) or refuse "
                  "them with too_large (false)"),
      boolean_key("model.matryoshka", &nc::model, &model_config::matryoshka,
                  "leading dimensions are an embedding (Matryoshka): OpenAI "
                  "dimensions may ask for fewer"),
      model_names_key(),
      choice_key(
          "log.level", &nc::log, &log_section::level,
          {"trace", "debug", "info", "warning", "warn", "error", "critical", "off"},
          "least severe level logged (warn = warning)"),
      string_key("log.file", &nc::log, &log_section::file, false,
                 "log file; \"\" disables the file sink; SIGHUP reopens it"),
      integer_key("log.max-size", &nc::log, &log_section::max_size_mib, 0, 1 << 20,
                  "MiB after which log.file is rotated to FILE.1 .. FILE.N; 0 = never"),
      integer_key("log.max-files", &nc::log, &log_section::max_files, 0, 1000,
                  "rotated log files kept (log.max-size); 0 = none"),
      choice_key("log.format", &nc::log, &log_section::format, {"text", "json"},
                 "line format: text (key=value) or json (one object per line)"),
      boolean_key("log.console", &nc::log, &log_section::console, "also log to stderr"),
      duration_key("log.stats-interval", &nc::log, &log_section::stats_interval,
                   non_negative, "period of the stats line; 0s = off"),
      duration_key("fault.compute-delay", &nc::fault, &fault_section::compute_delay,
                   non_negative, "drill: delay added per embedded text"),
      integer_key("fault.crash-every", &nc::fault, &fault_section::crash_every, 0,
                  std::numeric_limits<uint32_t>::max(),
                  "drill: a worker crashes on every Nth job; 0 = off"),
      string_key("fault.hang-marker", &nc::fault, &fault_section::hang_marker, false,
                 "drill: a text containing it hangs its worker; \"\" = off"),
      string_key("tls.certificate", &nc::tls, &tls_section::certificate, false,
                 "PEM certificate of this process; setting it turns mutual TLS on"),
      string_key("tls.key", &nc::tls, &tls_section::key, false,
                 "PEM private key of tls.certificate"),
      string_key("tls.ca-file", &nc::tls, &tls_section::ca_file, false,
                 "PEM CA certificate; only peers it signed are accepted"),
      string_key("tls.passphrase", &nc::tls, &tls_section::passphrase, false,
                 "passphrase of tls.key, if it is encrypted"),
      string_key("http.host", &nc::http, &http_section::host, true,
                 "address the HTTP front binds; keep it on loopback (no TLS)"),
      integer_key("http.port", &nc::http, &http_section::port, -1, 65535,
                  "TCP port of the HTTP front; -1 = off, 0 picks a free port"),
      integer_key("http.threads", &nc::http, &http_section::threads, 1, 256,
                  "HTTP requests read and handled at once"),
      integer_key("http.max-connections", &nc::http, &http_section::max_connections, 1,
                  100000, "HTTP connections open at once; more are answered 503"),
      integer_key("http.max-body-bytes", &nc::http, &http_section::max_body_bytes, 1024,
                  1024 * mib, "largest HTTP request body; larger ones get 413"),
      boolean_key("http.access-log", &nc::http, &http_section::access_log,
                  "log one line per HTTP request (method, path, status, bytes, "
                  "duration, X-Request-Id)"),
      duration_key("http.read-timeout", &nc::http, &http_section::read_timeout, positive,
                   "total time to read an HTTP request from its first byte; then 408"),
  };
  return specs;
}

const key_spec* find_key(const std::string& name) {
  for (const auto& spec : schema())
    if (spec.name == name)
      return &spec;
  return nullptr;
}

/// True for an option CAF itself knows (its core, middleman and openssl
/// sections): a typo in one of CAF's sections is refused like one in ours,
/// before the node starts, instead of by CAF's parser afterwards.
bool is_caf_option(const std::string& key) {
  struct catalog : caf::actor_system_config {
    catalog() {
      load<caf::io::middleman>();
      load<caf::openssl::manager>();
    }
    const caf::config_option_set& options() const { return custom_options_; }
  };
  static const catalog known;
  return known.options().qualified_name_lookup(key) != nullptr;
}

/// Sections of CAF itself, forwarded to `caf_args`.
bool is_caf_section(const std::string& section) {
  static const char* names[] = {"scheduler",     "middleman", "stream",
                                "work-stealing", "openssl",   "logger"};
  return std::any_of(std::begin(names), std::end(names),
                     [&](const char* name) { return section == name; });
}

bool is_our_section(const std::string& section) {
  return std::any_of(schema().begin(), schema().end(), [&](const key_spec& spec) {
    return spec.name.compare(0, section.size() + 1, section + ".") == 0;
  });
}

std::string choices_text(const key_spec& spec) {
  std::string out;
  for (const auto& choice : spec.choices) {
    if (!out.empty())
      out += '|';
    out += choice;
  }
  return out;
}

/// What a key accepts, e.g. "an integer in [1, 256]".
std::string expectation(const key_spec& spec) {
  switch (spec.type) {
    case key_type::integer:
      return "an integer in [" + std::to_string(spec.min) + ", " +
             std::to_string(spec.max) + "]";
    case key_type::duration:
      return spec.bound == positive ? "a duration > 0" : "a duration >= 0";
    case key_type::boolean:
      return "true or false";
    case key_type::string:
      return spec.non_empty ? "a non-empty string" : "a string";
    case key_type::choice:
      return "one of " + choices_text(spec);
    case key_type::string_list:
      return spec.list_items + ", comma-separated or a list of strings";
  }
  return "a value";
}

bool is_stringish(const value& v) {
  return v.kind == value_kind::string || v.kind == value_kind::atom ||
         v.kind == value_kind::bare;
}

/// Checks `v` against `spec` and stores it; errors name key and `where`.
void apply(const key_spec& spec, const value& v, node_config& cfg,
           const std::string& where) {
  auto refuse = [&](const std::string& expected) {
    fail(spec.name + ": expected " + expected + ", got " + quote(v.text) + " (" + where +
         ")");
  };
  switch (spec.type) {
    case key_type::integer:
      if (v.kind != value_kind::integer || v.integer < spec.min || v.integer > spec.max)
        refuse(expectation(spec));
      spec.set_integer(cfg, v.integer);
      return;
    case key_type::duration:
      if (v.kind != value_kind::duration)
        refuse("a duration such as 10ms (units ns, us, ms, s, min, h)");
      if (v.duration.count() < 0 || (spec.bound == positive && v.duration.count() == 0))
        refuse(expectation(spec));
      spec.set_duration(cfg, v.duration);
      return;
    case key_type::boolean:
      if (v.kind != value_kind::boolean)
        refuse(expectation(spec));
      spec.set_boolean(cfg, v.boolean);
      return;
    case key_type::string: {
      if (v.kind == value_kind::list)
        refuse(expectation(spec));
      // Bare words are strings: `host=127.0.0.1`, `path=models/x`, `marker=42`.
      const auto& text = is_stringish(v) ? v.str : v.text;
      if (spec.non_empty && text.empty())
        refuse(expectation(spec));
      spec.set_string(cfg, text);
      return;
    }
    case key_type::choice:
      if (!is_stringish(v) || std::find(spec.choices.begin(), spec.choices.end(),
                                        v.str) == spec.choices.end())
        refuse(expectation(spec));
      spec.set_string(cfg, v.str);
      return;
    case key_type::string_list: {
      std::vector<std::string> items;
      auto add_split = [&](const std::string& text) {
        size_t start = 0;
        while (start <= text.size()) {
          auto comma = text.find(',', start);
          auto item = text.substr(
              start, comma == std::string::npos ? std::string::npos : comma - start);
          auto b = item.find_first_not_of(" \t");
          auto e = item.find_last_not_of(" \t");
          if (b != std::string::npos)
            items.push_back(item.substr(b, e - b + 1));
          if (comma == std::string::npos)
            break;
          start = comma + 1;
        }
      };
      if (v.kind == value_kind::list) {
        for (const auto& item : v.items) {
          if (!is_stringish(item))
            refuse(expectation(spec));
          add_split(item.str);
        }
      } else if (is_stringish(v)) {
        add_split(v.str);
      } else {
        refuse(expectation(spec));
      }
      spec.set_list(cfg, std::move(items));
      return;
    }
  }
}

// -- named models ---------------------------------------------------------------

/// Keys of a `[models.NAME]` section, each mirroring a `[model]` or `[pool]`
/// key (same type, range and default).
const std::map<std::string, std::string>& model_section_keys() {
  static const std::map<std::string, std::string> keys = {
      {"kind", "model.kind"},
      {"path", "model.path"},
      {"dim", "model.dim"},
      {"hash-buckets", "model.hash-buckets"},
      {"truncate", "model.truncate"},
      {"matryoshka", "model.matryoshka"},
      {"workers", "pool.workers"},
      {"min-workers", "pool.min-workers"},
      {"max-workers", "pool.max-workers"},
      {"embed-queue-capacity", "pool.embed-queue-capacity"},
      {"batch-queue-capacity", "pool.batch-queue-capacity"},
      {"pending-capacity", "pool.pending-capacity"},
  };
  return keys;
}

/// A model name: 1..64 letters, digits, '-' or '_'.
bool is_model_name(const std::string& name) {
  return !name.empty() && name.size() <= 64 &&
         std::all_of(name.begin(), name.end(), [](char ch) {
           return std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '_';
         });
}

/// One `models.NAME.key` setting, applied once every source is read (a
/// model inherits `[pool]` values set anywhere, the command line included).
struct model_setting {
  std::string model;
  std::string key;  // the key inside the section, e.g. "kind"
  value v;
  std::string where;
};

// -- loading ------------------------------------------------------------------

/// Accumulates settings from file and command line.
struct loader {
  node_config cfg;
  std::map<std::string, std::string> source_of;  // our key -> where it was set
  std::map<std::string, std::string> caf_seen;   // CAF key -> where it was set
  std::vector<model_setting> model_settings;     // in the order read

  /// Splits "models.NAME.key" into NAME and key; false for anything else.
  static bool split_model_key(const std::string& full, std::string& model,
                              std::string& key) {
    const std::string prefix = "models.";
    if (full.compare(0, prefix.size(), prefix) != 0)
      return false;
    auto dot = full.find('.', prefix.size());
    if (dot == std::string::npos)
      return false;
    model = full.substr(prefix.size(), dot - prefix.size());
    key = full.substr(dot + 1);
    return is_model_name(model);
  }

  /// Stores a CAF option from the file as a command-line argument for CAF.
  void add_caf_from_file(const std::string& key, const value& v) {
    if (v.kind == value_kind::boolean) {
      if (v.boolean)
        cfg.caf_args.push_back("--" + key);
      return;  // false is CAF's default for every flag; its CLI has no `=false`
    }
    cfg.caf_args.push_back("--" + key + "=" + v.text);
  }

  void read_file(const std::string& path) {
    std::ifstream in{path, std::ios::binary};
    if (!in)
      fail(path + ": cannot open file");
    constexpr std::streamsize max_size = 1024 * 1024;
    std::string text;
    text.resize(static_cast<size_t>(max_size) + 1);
    in.read(&text[0], max_size + 1);
    if (in.bad())
      fail(path + ": cannot read file");
    text.resize(static_cast<size_t>(in.gcount()));
    if (static_cast<std::streamsize>(text.size()) > max_size)
      fail(path + ": file larger than 1 MiB");
    if (text.compare(0, 3, "\xEF\xBB\xBF") == 0)
      text.erase(0, 3);
    parse_ini(text, path);
  }

  void parse_ini(const std::string& text, const std::string& path) {
    scanner in{text, path, true};
    std::string section;
    bool section_is_caf = false;
    std::map<std::string, int> line_of;  // key -> line where this file set it
    for (;;) {
      in.skip_space_and_comments();
      if (in.at_end())
        return;
      if (in.peek() == '[') {
        in.advance();
        in.skip_blanks();
        section = in.read_name(true);
        in.skip_blanks();
        if (section.empty() || in.peek() != ']')
          in.fail_at("", "expected a section header such as [pool]");
        in.advance();
        auto top = section.substr(0, section.find('.'));
        section_is_caf = is_caf_section(top);
        std::string model_name, rest;
        bool model_section =
            split_model_key(section + ".x", model_name, rest) && rest == "x";
        if (!section_is_caf && !model_section &&
            (top != section || !is_our_section(section)))
          in.fail_at("", "unknown section [" + section + "]");
        in.expect_end_of_line("");
        continue;
      }
      auto name = in.read_name(false);
      if (name.empty())
        in.fail_at("", "expected a [section], a key = value line or a comment");
      if (section.empty())
        in.fail_at(name, "key outside any section");
      auto key = section + "." + name;
      const key_spec* spec = section_is_caf ? nullptr : find_key(key);
      std::string model_name, model_key;
      bool is_model_key = !section_is_caf && spec == nullptr &&
                          split_model_key(key, model_name, model_key) &&
                          model_section_keys().count(model_key) > 0;
      if ((!section_is_caf && spec == nullptr && !is_model_key) ||
          (section_is_caf && !is_caf_option(key)))
        in.fail_at("", "unknown key " + key);
      in.skip_blanks();
      if (in.peek() != '=')
        in.fail_at(key, "expected '=' after the key");
      in.advance();
      int line = in.line();
      if (auto i = line_of.find(key); i != line_of.end())
        in.fail_at(key, "set twice in the file (also on line " +
                            std::to_string(i->second) + ")");
      line_of.emplace(key, line);
      auto where = in.where();
      auto v = in.read_value(key);
      if (spec != nullptr) {
        // Type first: `timeout = 10 ms` reads better as "expected a duration".
        apply(*spec, v, cfg, where);
        in.expect_end_of_line(key);
        source_of[key] = where;
      } else if (is_model_key) {
        in.expect_end_of_line(key);
        model_settings.push_back(
            model_setting{model_name, model_key, std::move(v), where});
        source_of[key] = where;
      } else {
        in.expect_end_of_line(key);
        if (v.text.empty())
          fail(key + ": missing value (" + where + ")");
        add_caf_from_file(key, v);
        caf_seen[key] = where;
      }
    }
  }

  void parse_argument(const std::string& arg) {
    const std::string where = "command line";
    if (arg.size() < 3 || arg.compare(0, 2, "--") != 0)
      fail("unexpected argument " + quote(arg) + " (" + where +
           "); options look like --section.key=value");
    auto eq = arg.find('=');
    auto key = arg.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
    auto dot = key.find('.');
    if (dot == std::string::npos || dot == 0 || dot + 1 == key.size())
      fail(key + ": key without section, expected --section.key=value (" + where + ")");
    if (is_caf_section(key.substr(0, dot))) {
      if (!is_caf_option(key))
        fail("unknown key " + key + " (" + where + ")");
      cfg.caf_args.push_back(arg);  // CAF validates its own values
      caf_seen[key] = where;
      return;
    }
    const auto* spec = find_key(key);
    std::string model_name, model_key;
    if (spec == nullptr && split_model_key(key, model_name, model_key) &&
        model_section_keys().count(model_key) > 0) {
      if (eq == std::string::npos)
        fail(key + ": expected a value, as in --" + key + "=... (" + where + ")");
      auto text = arg.substr(eq + 1);
      scanner in{text, where, false};
      auto v = in.read_value(key, true);
      in.expect_end_of_line(key);
      model_settings.push_back(model_setting{model_name, model_key, std::move(v), where});
      source_of[key] = where;
      return;
    }
    if (spec == nullptr)
      fail("unknown key " + key + " (" + where + ")");
    if (eq == std::string::npos) {
      if (spec->type != key_type::boolean)
        fail(key + ": expected a value, as in --" + key + "=" + spec->render(cfg) + " (" +
             where + ")");
      spec->set_boolean(cfg, true);
    } else {
      auto text = arg.substr(eq + 1);
      scanner in{text, where, false};
      auto v = in.read_value(key, true);
      in.expect_end_of_line(key);
      apply(*spec, v, cfg, where);
    }
    source_of[key] = where;
  }

  std::string source(const std::string& key) const {
    auto i = source_of.find(key);
    return i == source_of.end() ? std::string{"default"} : i->second;
  }

  /// Fills every model of models.names from `[pool]`, `[model]` defaults and
  /// its own section; errors name the key.
  void resolve_models() {
    auto default_name = default_model_name(cfg);
    if (!default_name.empty() && !is_model_name(default_name))
      fail("model.name: expected 1..64 letters, digits, '-' or '_', got " +
           quote(default_name) + " (" + source("model.name") + ")");
    if (cfg.models.size() + 1 > max_models)
      fail("models.names: at most " + std::to_string(max_models - 1) +
           " models besides the default one (" + source("models.names") + ")");
    std::set<std::string> names;
    if (!default_name.empty())
      names.insert(default_name);
    for (const auto& m : cfg.models) {
      if (!is_model_name(m.name))
        fail("models.names: expected names of 1..64 letters, digits, '-' or '_', got " +
             quote(m.name) + " (" + source("models.names") + ")");
      if (!names.insert(m.name).second)
        fail("models.names: " + quote(m.name) +
             (m.name == default_name ? " is the default model's name (model.name)"
                                     : " is listed twice") +
             " (" + source("models.names") + ")");
    }
    for (const auto& s : model_settings)
      if (names.count(s.model) == 0 || s.model == default_name)
        fail("models." + s.model + "." + s.key + ": model " + quote(s.model) +
             " is not listed in models.names (" + s.where + ")");
    for (auto& m : cfg.models) {
      node_config scratch;
      scratch.model.blas_threads = cfg.model.blas_threads;
      scratch.model.truncate = cfg.model.truncate;
      scratch.pool = cfg.pool;
      std::string kind_source = "default";
      for (const auto& s : model_settings) {
        if (s.model != m.name)
          continue;
        auto spec = *find_key(model_section_keys().at(s.key));
        spec.name = "models." + m.name + "." + s.key;
        apply(spec, s.v, scratch, s.where);
        if (s.key == "kind")
          kind_source = s.where;
      }
      m.model = scratch.model;
      m.model.name = m.name;
      m.pool = scratch.pool;
      if (m.model.kind == "bert" && m.model.path.empty())
        fail("models." + m.name + ".path: required when models." + m.name +
             ".kind = bert (set in " + kind_source + ")");
      if (auto limits = resolve_worker_limits(m.pool, "models." + m.name); !limits)
        fail(error_message(limits.error()));
    }
  }

  /// Rules that involve more than one key.
  void check_relations() const {
    if (cfg.pool.restart_backoff_max < cfg.pool.restart_backoff)
      fail("pool.restart-backoff-max: expected a duration >= pool.restart-backoff (" +
           format_duration(cfg.pool.restart_backoff) + "), got " +
           quote(format_duration(cfg.pool.restart_backoff_max)) + " (" +
           source("pool.restart-backoff-max") + ")");
    if (cfg.heartbeat.timeout <= cfg.heartbeat.interval)
      fail("heartbeat.timeout: expected a duration > heartbeat.interval (" +
           format_duration(cfg.heartbeat.interval) + "), got " +
           quote(format_duration(cfg.heartbeat.timeout)) + " (" +
           source("heartbeat.timeout") + ")");
    if (auto limits = resolve_worker_limits(cfg.pool); !limits)
      fail(error_message(limits.error()) + " (" + source("pool.min-workers") + ")");
    if (cfg.model.kind == "bert" && cfg.model.path.empty())
      fail("model.path: required when model.kind = bert (model.kind set in " +
           source("model.kind") + ")");
  }

  /// pool::node_caf_defaults, for each key the user did not set.
  void add_caf_defaults() {
    for (auto& option : node_caf_defaults())
      if (caf_seen.count(caf_option_key(option)) == 0)
        cfg.caf_args.push_back(std::move(option));
  }
};

}  // namespace

caf::expected<parsed_args> parse_node_args(const std::vector<std::string>& args) {
  parsed_args result;
  for (const auto& arg : args) {
    if (arg == "--help" || arg == "-h") {
      result.help = true;
      return result;
    }
  }
  try {
    loader state;
    const std::string prefix = "--config-file";
    std::vector<const std::string*> rest;
    for (const auto& arg : args) {
      if (arg.compare(0, prefix.size(), prefix) != 0 ||
          (arg.size() > prefix.size() && arg[prefix.size()] != '=')) {
        rest.push_back(&arg);
        continue;
      }
      if (arg.size() <= prefix.size() + 1)
        fail(
            "--config-file: expected a path, as in --config-file=conf/embedpool.ini "
            "(command line)");
      if (!state.cfg.config_file.empty())
        fail("--config-file: given twice (command line)");
      state.cfg.config_file = arg.substr(prefix.size() + 1);
    }
    if (!state.cfg.config_file.empty())
      state.read_file(state.cfg.config_file);
    for (const auto* arg : rest)
      state.parse_argument(*arg);
    state.check_relations();
    state.resolve_models();
    state.add_caf_defaults();
    result.config = std::move(state.cfg);
    return result;
  } catch (const config_failure& failure) {
    return make_error(pool_errc::invalid_input, failure.message);
  } catch (const std::exception& ex) {
    return make_error(pool_errc::invalid_input,
                      std::string{"cannot load the configuration: "} + ex.what());
  }
}

std::string node_usage(const std::string& program) {
  node_config defaults;
  std::ostringstream out;
  out << "Usage: " << program << " [--config-file=PATH] [--section.key=value ...]\n"
      << "\n"
      << "  --config-file=PATH   INI file read first ([section] then key = value)\n"
      << "  -h, --help           print this text\n"
      << "  --version            print the versions (embedpool, git revision, protocol,\n"
      << "                       CAF, OpenBLAS) and exit\n"
      << "\n"
      << "Every key below can be set in the file or as --section.key=value; the\n"
      << "command line wins. Durations take a unit: ns us ms s min h (e.g. 10ms).\n"
      << "Booleans may be given as a bare flag (--log.console) or =true/=false.\n";
  std::string section;
  for (const auto& spec : schema()) {
    auto sec = spec.name.substr(0, spec.name.find('.'));
    if (sec != section) {
      section = sec;
      out << "\n[" << section << "]\n";
    }
    auto def = spec.render(defaults);
    if (spec.type == key_type::string && def.empty())
      def = "\"\"";
    out << "  --" << spec.name << "=" << def << "\n"
        << "      " << spec.doc << "; " << expectation(spec) << "\n";
  }
  out << "\nCAF's own sections (scheduler, middleman, stream, work-stealing, openssl,\n"
      << "logger) are passed to CAF, e.g. --scheduler.max-threads=4; a key CAF does\n"
      << "not know is refused like ours.\n"
      << "Defaults added unless set: --middleman.heartbeat-interval=1s\n"
      << "                           --middleman.connection-timeout=10s\n";
  return out.str();
}

std::string default_model_name(const node_config& cfg) {
  return cfg.model.name;
}

caf::expected<worker_limits> resolve_worker_limits(const pool_section& pool,
                                                   const std::string& prefix) {
  worker_limits result;
  if (pool.min_workers == 0 && pool.max_workers == 0) {
    result.min = result.max = pool.workers;
  } else if (pool.min_workers == 0) {
    result.max = pool.max_workers;
    result.min = std::min(pool.workers, result.max);
  } else if (pool.max_workers == 0) {
    result.min = pool.min_workers;
    result.max = std::max(pool.workers, result.min);
  } else {
    result.min = pool.min_workers;
    result.max = pool.max_workers;
  }
  if (result.min > result.max)
    return make_error(pool_errc::invalid_input,
                      prefix + ".min-workers: expected at most " + prefix +
                          ".max-workers (" + std::to_string(result.max) + "), got " +
                          std::to_string(result.min));
  result.min = std::max<uint32_t>(result.min, 1);
  result.initial = std::clamp(pool.workers, result.min, result.max);
  return result;
}

caf::expected<std::pair<std::string, uint16_t>> parse_host_port(const std::string& text,
                                                                const std::string& key) {
  auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == text.size())
    return make_error(pool_errc::invalid_input,
                      key + ": expected HOST:PORT, got \"" + text + "\"");
  auto host = text.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  char* end = nullptr;
  auto port = std::strtoul(text.c_str() + colon + 1, &end, 10);
  if (*end != '\0' || port == 0 || port > 65535)
    return make_error(pool_errc::invalid_input,
                      key + ": expected a port in [1, 65535] in \"" + text + "\"");
  return std::make_pair(host, static_cast<uint16_t>(port));
}

}  // namespace pool
