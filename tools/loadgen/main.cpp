// embedpool-loadgen: drives a node (or anything answering the embedpool
// protocol) with a fixed offered rate (open loop) or a fixed concurrency
// (closed loop, the client's credit window), checks that every request was
// answered exactly once and prints one JSON summary on stdout. While it runs,
// it prints one progress line per second on stderr (unless --quiet) and, with
// --csv, appends and flushes one CSV row per second.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <future>
#include <limits>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "command_line.hpp"
#include "pool/client.hpp"
#include "pool/config.hpp"
#include "pool/error.hpp"
#include "pool/node_version.hpp"
#include "texts.hpp"

namespace {

using steady = std::chrono::steady_clock;

constexpr const char* usage_text =
    R"(usage: embedpool-loadgen --host=H --port=P --mode=embed|batch
         (--rate=R | --window=W) --duration=SECONDS --text-bytes=N [--batch-size=K]
         [--node-pid=PID] [--csv=FILE] [OPTIONS]

  --host=H               node address (default 127.0.0.1)
  --port=P               node port (default 4242)
  --mode=embed|batch     one text per request, or --batch-size texts per request
  --rate=R               open loop: offer R requests/s, no client window; each
                         request has its own timeout (overload shows up as
                         `overloaded` answers)
  --window=W             closed loop: W requests in flight (the client's window)
  --coalesce=N           embed mode: most requests the client sends in one message
                         when they queue up (default 32, the client's default;
                         0 or 1 = every request in a message of its own)
  --duration=SECONDS     stop sending after this long (default 10)
  --count=N              stop sending after N requests (whichever comes first)
  --text-bytes=N         generated texts of N bytes (default 1024)
  --texts-file=FILE      texts from FILE, one per line, instead of generated ones
  --batch-size=K         texts per batch request (default 16)
  --task=T               task (a prompt name of the model) sent with every request
  --model=NAME           model every request names (default: the node's default)
  --timeout=SECONDS      per-request timeout (default 30)
  --drain-wait=SECONDS   after sending stops, wait at most this long for the
                         remaining answers; unanswered ones count as `missing`
                         (default: --timeout plus 5)
  --max-outstanding=N    open loop: never more than N unanswered requests; what
                         could not be sent is counted as `unsent` (default 100000)
  --node-pid=PID         sample the node's VmRSS from /proc/PID/status
  --warmup=SECONDS       when the "after warm-up" RSS sample is taken (default 5)
  --status-interval=MS   poll the node's status every MS ms for the queue depth
                         (default 100; 0 = never, e.g. for peers without status)
  --csv=FILE             per-second time series: one row appended (and
                         flushed) as each second ends, the rest after the drain
  --quiet                no progress line on stderr (one per second otherwise)
  --tls.certificate=F, --tls.key=F, --tls.ca-file=F, --tls.passphrase=S
                         mutual TLS, the same keys as the node's [tls] section
  -h, --help             this text
  --version              print the versions and exit

Every option also takes its value as the next argument (--port 4242).

Every second, on stderr: "embedpool-loadgen: second=S sent=N completed=N
errors=N throughput_rps=R p50_ms=X p99_ms=Y" (sent, completed and errors so
far; throughput and latencies of the answers of second S).
At the end, prints one JSON object: sent, completed, errors (code -> count), missing,
duplicates, throughput_rps, latency_ms {p50,p90,p99,max} (of completed
requests, each from its hand-over to the network, after any wait for a window
credit, to its answer), node_rss_kb {start,after_warmup,peak,end} (with --node-pid), and more.
Exit status: 0 if every sent request was answered exactly once, 1 if not,
2 for usage errors or when the node cannot be reached, 3 when the connection
to the node was lost during the run (sending stops at once; the summary is
still printed, calls the client could not send count as `unsent`).
)";

struct options {
  std::string host = "127.0.0.1";
  uint16_t port = 4242;
  std::string mode = "embed";
  double rate = 0;
  uint32_t window = 0;
  uint32_t coalesce = pool::client_options{}.coalesce;
  double duration = 10;
  uint64_t count = 0;
  size_t text_bytes = 1024;
  std::string texts_file;
  uint32_t batch_size = 16;
  std::string task;
  std::string model;
  double timeout = 30;
  double drain_wait = -1;  // < 0: timeout + 5
  uint64_t max_outstanding = 100000;
  long node_pid = 0;
  double warmup = 5;
  double status_interval_ms = 100;
  std::string csv;
  bool quiet = false;
  pool::tls_section tls;  // --tls.certificate/key/ca-file/passphrase, as for the node
  bool help = false;
};

bool parse_double(const std::string& s, double& out) {
  try {
    size_t pos = 0;
    out = std::stod(s, &pos);
    return pos == s.size() && std::isfinite(out);
  } catch (const std::exception&) {
    return false;
  }
}

bool parse_uint(const std::string& s, uint64_t& out) {
  if (s.empty() || s.find_first_not_of("0123456789") != std::string::npos ||
      s.size() > 18)
    return false;
  out = std::stoull(s);
  return true;
}

/// A check of an option's value: `ok` accepts it, or the message names what
/// was `expected` and what was given (CLI11 puts the option's name first).
CLI::Validator expect(const std::string& expected,
                      std::function<bool(const std::string&)> ok) {
  return CLI::Validator{[expected, ok](std::string& value) {
                          return ok(value)
                                     ? std::string{}
                                     : "expected " + expected + ", got \"" + value + "\"";
                        },
                        expected};
}

/// Accepts an integer in [lo, hi].
std::function<bool(const std::string&)> uint_in(uint64_t lo, uint64_t hi) {
  return [lo, hi](const std::string& s) {
    uint64_t u = 0;
    return parse_uint(s, u) && u >= lo && u <= hi;
  };
}

/// Accepts a finite number above `lo` (at least `lo` when `inclusive`), at
/// most `hi`.
std::function<bool(const std::string&)> real_from(double lo, bool inclusive,
                                                  double hi = HUGE_VAL) {
  return [lo, inclusive, hi](const std::string& s) {
    double d = 0;
    return parse_double(s, d) && (inclusive ? d >= lo : d > lo) && d <= hi;
  };
}

/// Parses the arguments (`--key=value` or `--key value`; the last of a
/// repeated option wins); returns an error message or "".
std::string parse(int argc, char** argv, options& o) {
  constexpr auto max_u = std::numeric_limits<uint64_t>::max();
  CLI::App app{"", "embedpool-loadgen"};
  app.set_help_flag();  // usage_text is the help
  app.allow_extras();   // reported below, in this program's words
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app.add_flag("-h,--help", o.help);
  app.add_flag("--quiet", o.quiet);
  app.add_option("--host", o.host);
  app.add_option("--port", o.port)
      ->check(expect("a port in [1, 65535]", uint_in(1, 65535)));
  app.add_option("--mode", o.mode)
      ->check(expect("embed or batch",
                     [](const std::string& s) { return s == "embed" || s == "batch"; }));
  auto* rate =
      app.add_option("--rate", o.rate)
          ->check(expect("requests per second in (0, 1e7]", real_from(0, false, 1e7)));
  auto* window = app.add_option("--window", o.window)
                     ->check(expect("a window in [1, 1000000]", uint_in(1, 1000000)));
  app.add_option("--coalesce", o.coalesce)
      ->check(expect("a count in [0, 1000000]", uint_in(0, 1000000)));
  app.add_option("--duration", o.duration)
      ->check(expect("a positive number of seconds", real_from(0, false)));
  app.add_option("--count", o.count)
      ->check(expect("a positive request count", uint_in(1, max_u)));
  app.add_option("--text-bytes", o.text_bytes)
      ->check(expect("a byte count in [1, 64 MiB]", uint_in(1, 64u << 20)));
  app.add_option("--texts-file", o.texts_file);
  app.add_option("--batch-size", o.batch_size)
      ->check(expect("a positive batch size", uint_in(1, 1000000)));
  app.add_option("--task", o.task);
  app.add_option("--model", o.model);
  app.add_option("--timeout", o.timeout)
      ->check(expect("a positive number of seconds", real_from(0, false)));
  app.add_option("--drain-wait", o.drain_wait)
      ->check(expect("a number of seconds >= 0", real_from(0, true)));
  app.add_option("--max-outstanding", o.max_outstanding)
      ->check(expect("a positive count", uint_in(1, max_u)));
  app.add_option("--node-pid", o.node_pid)
      ->check(expect("a process id", uint_in(1, 0x3fffffff)));
  app.add_option("--warmup", o.warmup)
      ->check(expect("a number of seconds >= 0", real_from(0, true)));
  app.add_option("--status-interval", o.status_interval_ms)
      ->check(expect("milliseconds >= 0", real_from(0, true)));
  app.add_option("--csv", o.csv);
  app.add_option("--tls.certificate", o.tls.certificate);
  app.add_option("--tls.key", o.tls.key);
  app.add_option("--tls.ca-file", o.tls.ca_file);
  app.add_option("--tls.passphrase", o.tls.passphrase);
  if (auto err = pool::command_line::parse(app, argc, argv); !err.empty())
    return err;
  if (auto extras = pool::command_line::not_taken(app); !extras.empty()) {
    const auto& arg = extras.front();
    if (arg.rfind("--", 0) == 0 && arg.size() > 2)
      return "unknown option " + arg.substr(0, arg.find('='));
    return "expected --key=value, got \"" + arg + "\"";
  }
  if (o.help)
    return {};
  if ((rate->count() > 0) == (window->count() > 0))
    return "give exactly one of --rate=R (open loop) and --window=W (closed loop)";
  return {};
}

/// VmRSS of `pid` in KiB, or -1 if it cannot be read.
int64_t read_rss_kb(long pid) {
  std::ifstream in{"/proc/" + std::to_string(pid) + "/status"};
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0)
      return std::strtoll(line.c_str() + 6, nullptr, 10);
  return -1;
}

struct second_bucket {
  uint64_t offered = 0;
  uint64_t completed = 0;
  uint64_t rejected = 0;  // `overloaded` answers
  uint64_t errors = 0;    // every other error
  uint64_t unsent = 0;
  int64_t rss_kb = -1;
  int64_t max_queue_depth = -1;
  int64_t max_pending = -1;
  std::vector<uint32_t> latency_us;  // of this second's completions, until reported
};

/// The p-quantile (nearest rank) of sorted latencies, in ms; 0 when empty.
double percentile_ms(const std::vector<uint32_t>& sorted_us, double p) {
  if (sorted_us.empty())
    return 0.0;
  auto rank = static_cast<size_t>(std::ceil(p * static_cast<double>(sorted_us.size())));
  rank = std::clamp<size_t>(rank, 1, sorted_us.size());
  return sorted_us[rank - 1] / 1000.0;
}

/// Everything the sender, the callbacks and the sampler record. Thread-safe.
class recorder {
 public:
  explicit recorder(steady::time_point start) : start_(start) {}

  /// Registers a request about to be offered to the client; returns its
  /// index. Its send time is provisional until `sent(idx)`: a closed-loop
  /// call may still wait for a window credit.
  size_t begin_send() {
    std::lock_guard<std::mutex> guard{mtx_};
    auto now = steady::now();
    auto idx = sent_at_.size();
    sent_at_.push_back(now);
    answers_.push_back(0);
    ++bucket(now).offered;
    ++outstanding_;
    return idx;
  }

  /// Request `idx` is handed to the network now (the client's send hook, run
  /// after its window credit and before its answer can arrive): its latency
  /// counts from here, and it is offered in this second unless the second it
  /// was registered in is already reported (rows stay final).
  void sent(size_t idx) {
    std::lock_guard<std::mutex> guard{mtx_};
    if (frozen_ || idx >= sent_at_.size() || answers_[idx] != 0)
      return;
    auto now = steady::now();
    if (second_of(sent_at_[idx]) >= reported_) {
      --bucket(sent_at_[idx]).offered;
      ++bucket(now).offered;
    }
    sent_at_[idx] = now;
  }

  void unsent() {
    std::lock_guard<std::mutex> guard{mtx_};
    ++unsent_;
    ++bucket(steady::now()).unsent;
  }

  /// Request `idx` (registered by begin_send) never reached the network: it
  /// counts as unsent, not as sent.
  void not_sent(size_t idx) {
    std::lock_guard<std::mutex> guard{mtx_};
    if (frozen_ || idx >= answers_.size() || answers_[idx] != 0)
      return;
    answers_[idx] = 1;
    ++not_sent_;
    --outstanding_;
    ++unsent_;
    auto& b = bucket(sent_at_[idx]);
    --b.offered;
    ++b.unsent;
    if (outstanding_ == 0)
      drained_.notify_all();
  }

  /// One answer for request `idx`: none for success, else the error.
  void answer(size_t idx, const caf::error& err) {
    // The answer is here now, not once the lock is ours (the sender may hold
    // it registering the next request).
    auto now = steady::now();
    std::lock_guard<std::mutex> guard{mtx_};
    if (frozen_ || idx >= answers_.size())
      return;
    if (answers_[idx]++ > 0) {
      ++duplicates_;
      return;
    }
    --outstanding_;
    auto& b = bucket(now);
    if (!err) {
      ++completed_;
      ++b.completed;
      last_completion_ = now;
      auto us =
          std::chrono::duration_cast<std::chrono::microseconds>(now - sent_at_[idx]);
      auto latency = static_cast<uint32_t>(std::min<int64_t>(us.count(), UINT32_MAX));
      latency_us_.push_back(latency);
      b.latency_us.push_back(latency);  // a second not reported yet: `now` is in it
    } else {
      auto code = pool::pool_code(err);
      std::string name = code ? pool::to_string(*code) : "other";
      ++errors_[name];
      if (code == pool::pool_errc::overloaded)
        ++b.rejected;
      else
        ++b.errors;
    }
    if (outstanding_ == 0)
      drained_.notify_all();
  }

  uint64_t outstanding() {
    std::lock_guard<std::mutex> guard{mtx_};
    return outstanding_;
  }

  /// Waits until every sent request is answered or `deadline` passes.
  void wait_drained(steady::time_point deadline) {
    std::unique_lock<std::mutex> guard{mtx_};
    drained_.wait_until(guard, deadline, [this] { return outstanding_ == 0; });
  }

  void sample_rss(int64_t kb, bool after_warmup) {
    std::lock_guard<std::mutex> guard{mtx_};
    if (kb < 0)
      return;
    if (rss_start_ < 0)
      rss_start_ = kb;
    if (after_warmup && rss_after_warmup_ < 0)
      rss_after_warmup_ = kb;
    rss_peak_ = std::max(rss_peak_, kb);
    rss_end_ = kb;
    auto& b = bucket(steady::now());
    b.rss_kb = std::max(b.rss_kb, kb);
  }

  void sample_status(const pool::pool_status& st) {
    std::lock_guard<std::mutex> guard{mtx_};
    int64_t depth = 0;
    for (const auto& w : st.workers)
      depth = std::max(depth, static_cast<int64_t>(w.queue_depth));
    auto& b = bucket(steady::now());
    b.max_queue_depth = std::max(b.max_queue_depth, depth);
    b.max_pending = std::max(b.max_pending, static_cast<int64_t>(st.pending));
    max_queue_depth_ = std::max(max_queue_depth_, depth);
    max_pending_ = std::max(max_pending_, static_cast<int64_t>(st.pending));
    ++status_samples_;
  }

  void status_failed() {
    std::lock_guard<std::mutex> guard{mtx_};
    ++status_errors_;
  }

  /// Stops recording (answers after this are ignored) and builds the summary.
  nlohmann::ordered_json finish(const options& o, const pool::client_stats& cs,
                                const nlohmann::json& ledger_delta) {
    std::lock_guard<std::mutex> guard{mtx_};
    frozen_ = true;
    uint64_t sent = sent_at_.size() - not_sent_;
    uint64_t missing = 0;
    for (auto n : answers_)
      if (n == 0)
        ++missing;
    std::sort(latency_us_.begin(), latency_us_.end());
    auto pct = [&](double p) { return percentile_ms(latency_us_, p); };
    double elapsed = 0;
    if (completed_ > 0)
      elapsed = std::chrono::duration<double>(last_completion_ - start_).count();
    double send_elapsed = std::chrono::duration<double>(send_end_ - start_).count();
    nlohmann::ordered_json j;
    j["mode"] = o.mode;
    j["loop"] = o.rate > 0 ? "open" : "closed";
    if (o.rate > 0)
      j["rate"] = o.rate;
    else
      j["window"] = o.window;
    if (o.mode == "batch")
      j["batch_size"] = o.batch_size;
    j["text_bytes"] = o.text_bytes;
    j["duration_s"] = send_elapsed;
    j["sent"] = sent;
    j["completed"] = completed_;
    nlohmann::ordered_json errs = nlohmann::ordered_json::object();
    for (const auto& [name, n] : errors_)
      errs[name] = n;
    j["errors"] = errs;
    j["missing"] = missing;
    j["duplicates"] = duplicates_;
    j["unsent"] = unsent_;
    j["offered_rps"] = send_elapsed > 0 ? static_cast<double>(sent) / send_elapsed : 0.0;
    j["throughput_rps"] = elapsed > 0 ? static_cast<double>(completed_) / elapsed : 0.0;
    if (o.mode == "batch")
      j["throughput_texts_per_s"] =
          elapsed > 0 ? static_cast<double>(completed_) * o.batch_size / elapsed : 0.0;
    j["latency_ms"] = {{"p50", pct(0.50)},
                       {"p90", pct(0.90)},
                       {"p99", pct(0.99)},
                       {"max", latency_us_.empty() ? 0.0 : latency_us_.back() / 1000.0}};
    if (o.node_pid > 0)
      j["node_rss_kb"] = {
          {"start", rss_start_},
          {"after_warmup", rss_after_warmup_ >= 0 ? rss_after_warmup_ : rss_start_},
          {"peak", rss_peak_},
          {"end", rss_end_}};
    if (o.status_interval_ms > 0) {
      j["max_queue_depth"] = max_queue_depth_;
      j["max_pending"] = max_pending_;
      j["status_samples"] = status_samples_;
      j["status_errors"] = status_errors_;
    }
    if (!ledger_delta.is_null())
      j["node_ledger_delta"] = ledger_delta;
    j["client"] = {{"late_answers", cs.late_answers},
                   {"timed_out", cs.timed_out},
                   {"lost", cs.lost},
                   {"reconnects", cs.reconnects},
                   {"coalesce", o.coalesce},
                   {"listed", cs.listed},
                   {"lists", cs.lists}};
    return j;
  }

  void mark_send_end() {
    std::lock_guard<std::mutex> guard{mtx_};
    send_end_ = steady::now();
  }

  /// Opens the CSV file and writes its header; false if it cannot be written.
  bool open_csv(const std::string& path) {
    std::lock_guard<std::mutex> guard{mtx_};
    csv_.open(path, std::ios::trunc);
    csv_ << "second,offered,completed,rejected,errors,unsent,node_rss_kb,max_queue_depth,"
            "max_pending,p50_ms,p99_ms\n";
    csv_.flush();
    return static_cast<bool>(csv_);
  }

  /// Reports every second before `upto` (all recorded seconds when `upto` is
  /// 0) not reported yet: its progress line on stderr when `progress`, its
  /// CSV row (flushed) when a CSV file is open. A second is reported once it
  /// is over, so its row is final: answers recorded later fall into later
  /// seconds. Returns false if the CSV could not be written.
  bool report(size_t upto, bool progress) {
    std::lock_guard<std::mutex> guard{mtx_};
    if (upto == 0)
      upto = seconds_.size();
    if (seconds_.size() < upto)
      seconds_.resize(upto);
    uint64_t errors = 0;
    for (const auto& [name, n] : errors_)
      errors += n;
    for (; reported_ < upto; ++reported_) {
      auto& b = seconds_[reported_];
      std::sort(b.latency_us.begin(), b.latency_us.end());
      auto p50 = percentile_ms(b.latency_us, 0.50);
      auto p99 = percentile_ms(b.latency_us, 0.99);
      std::vector<uint32_t>{}.swap(b.latency_us);
      if (progress) {
        // Totals are as of now; a final report of several seconds repeats them.
        std::fprintf(stderr,
                     "embedpool-loadgen: second=%zu sent=%llu completed=%llu errors=%llu "
                     "throughput_rps=%llu p50_ms=%.3f p99_ms=%.3f\n",
                     reported_,
                     static_cast<unsigned long long>(sent_at_.size() - not_sent_),
                     static_cast<unsigned long long>(completed_),
                     static_cast<unsigned long long>(errors),
                     static_cast<unsigned long long>(b.completed), p50, p99);
      }
      if (csv_.is_open()) {
        char ms[64];
        std::snprintf(ms, sizeof(ms), "%.3f,%.3f", p50, p99);
        csv_ << reported_ << ',' << b.offered << ',' << b.completed << ',' << b.rejected
             << ',' << b.errors << ',' << b.unsent << ',' << b.rss_kb << ','
             << b.max_queue_depth << ',' << b.max_pending << ',' << ms << '\n';
      }
    }
    if (progress)
      std::fflush(stderr);
    if (!csv_.is_open())
      return true;
    csv_.flush();
    return static_cast<bool>(csv_);
  }

 private:
  size_t second_of(steady::time_point t) const {
    return t <= start_ ? 0
                       : static_cast<size_t>(
                             std::chrono::duration_cast<std::chrono::seconds>(t - start_)
                                 .count());
  }

  second_bucket& bucket(steady::time_point t) {
    auto s = second_of(t);
    if (s >= seconds_.size())
      seconds_.resize(s + 1);
    return seconds_[s];
  }

  std::mutex mtx_;
  std::condition_variable drained_;
  steady::time_point start_;
  steady::time_point send_end_;
  steady::time_point last_completion_;
  std::vector<steady::time_point> sent_at_;
  std::vector<uint8_t> answers_;  // answers per request (saturates at 255)
  std::vector<uint32_t> latency_us_;
  std::map<std::string, uint64_t> errors_;
  std::vector<second_bucket> seconds_;
  uint64_t completed_ = 0;
  uint64_t duplicates_ = 0;
  uint64_t unsent_ = 0;
  uint64_t not_sent_ = 0;  // registered, then refused before the network
  uint64_t outstanding_ = 0;
  bool frozen_ = false;
  int64_t rss_start_ = -1;
  int64_t rss_after_warmup_ = -1;
  int64_t rss_peak_ = -1;
  int64_t rss_end_ = -1;
  int64_t max_queue_depth_ = -1;
  int64_t max_pending_ = -1;
  uint64_t status_samples_ = 0;
  uint64_t status_errors_ = 0;
  std::ofstream csv_;
  size_t reported_ = 0;  // seconds reported (progress line and CSV row)
};

/// The status of `model` ("" = the default) within `wait`, or none.
caf::optional<pool::pool_status> status_within(pool::client& cl, const std::string& model,
                                               std::chrono::seconds wait) {
  auto promise = std::make_shared<std::promise<caf::expected<pool::pool_status>>>();
  auto fut = promise->get_future();
  cl.status_async(
      [promise](caf::expected<pool::pool_status> x) { promise->set_value(std::move(x)); },
      model);
  if (fut.wait_for(wait) != std::future_status::ready)
    return caf::none;
  auto st = fut.get();
  if (!st)
    return caf::none;
  return std::move(*st);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::string{argv[1]} == "--version") {
    std::fputs(pool::node_version_text("embedpool-loadgen").c_str(), stdout);
    return 0;
  }
  options o;
  if (auto err = parse(argc, argv, o); !err.empty()) {
    std::fprintf(stderr, "embedpool-loadgen: %s\n%s", err.c_str(), usage_text);
    return 2;
  }
  if (o.help) {
    std::fputs(usage_text, stdout);
    return 0;
  }
  std::vector<std::string> texts;
  if (!o.texts_file.empty()) {
    texts = pool::loadgen::read_texts(o.texts_file);
    if (texts.empty()) {
      std::fprintf(stderr, "embedpool-loadgen: no texts in %s\n", o.texts_file.c_str());
      return 2;
    }
  } else {
    texts = pool::loadgen::make_texts(1024, o.text_bytes, 42);
  }

  pool::client_options copts;
  copts.host = o.host;
  copts.port = o.port;
  copts.tls = o.tls;
  copts.timeout =
      std::chrono::duration_cast<caf::timespan>(std::chrono::duration<double>(o.timeout));
  copts.window = o.rate > 0 ? 0 : o.window;
  copts.coalesce = o.coalesce;
  auto conn = pool::client::connect(copts);
  if (!conn) {
    std::fprintf(stderr, "embedpool-loadgen: %s\n", pool::describe(conn.error()).c_str());
    return 2;
  }
  auto& cl = **conn;
  bool poll_status = o.status_interval_ms > 0;
  caf::optional<pool::pool_status> status_before;
  if (poll_status)
    status_before = status_within(cl, o.model, std::chrono::seconds(5));

  auto start = steady::now();
  recorder rec{start};
  std::atomic<bool> stop_sampling{false};
  std::atomic<bool> status_outstanding{false};
  bool csv_ok = o.csv.empty() || rec.open_csv(o.csv);
  if (!csv_ok)
    std::fprintf(stderr, "embedpool-loadgen: cannot write %s\n", o.csv.c_str());

  // Reporter: as second k ends (at start + k s), its progress line and CSV row.
  std::mutex report_mtx;
  std::condition_variable report_cv;
  bool report_stop = false;
  std::thread reporter{[&] {
    for (size_t k = 1;; ++k) {
      std::unique_lock<std::mutex> lock{report_mtx};
      if (report_cv.wait_until(lock, start + std::chrono::seconds(k),
                               [&] { return report_stop; }))
        return;
      lock.unlock();
      rec.report(k, !o.quiet);
    }
  }};

  // Sampler: node RSS and (one request at a time) the node's status.
  std::thread sampler{[&] {
    auto period = std::chrono::duration_cast<steady::duration>(
        std::chrono::duration<double, std::milli>(poll_status ? o.status_interval_ms
                                                              : 100));
    auto next = steady::now();
    while (!stop_sampling.load()) {
      auto now = steady::now();
      if (o.node_pid > 0)
        rec.sample_rss(read_rss_kb(o.node_pid),
                       std::chrono::duration<double>(now - start).count() >= o.warmup);
      if (poll_status && !status_outstanding.exchange(true)) {
        cl.status_async(
            [&](caf::expected<pool::pool_status> st) {
              if (st)
                rec.sample_status(*st);
              else
                rec.status_failed();
              status_outstanding = false;
            },
            o.model);
      }
      next += period;
      std::this_thread::sleep_until(std::max(next, steady::now()));
    }
  }};

  // A call the client refuses before it reaches the network (it lost its node)
  // is not a sent request: the answer says "not sent".
  auto settle = [&rec](size_t idx, const caf::error& err) {
    if (err && pool::pool_code(err) == pool::pool_errc::unavailable &&
        pool::error_message(err).rfind("not sent: ", 0) == 0)
      rec.not_sent(idx);
    else
      rec.answer(idx, err);
  };
  auto send_one = [&](uint64_t n) {
    auto idx = rec.begin_send();
    // Latency counts from the hand-over to the network, after the window
    // credit: not from before the wait for it (at --window=1 that wait is
    // the previous request's round trip).
    auto on_send = [&rec, idx] { rec.sent(idx); };
    if (o.mode == "embed") {
      cl.embed_async(
          texts[n % texts.size()],
          [&rec, settle, idx](caf::expected<std::vector<float>> x) {
            if (x && x->empty())
              rec.answer(idx, pool::make_error(pool::pool_errc::invalid_input,
                                               "empty embedding"));
            else
              settle(idx, x ? caf::error{} : x.error());
          },
          on_send, o.task, o.model);
    } else {
      std::vector<std::string> batch;
      batch.reserve(o.batch_size);
      for (uint32_t k = 0; k < o.batch_size; ++k)
        batch.push_back(texts[(n * o.batch_size + k) % texts.size()]);
      auto rows = o.batch_size;
      cl.embed_batch_async(
          std::move(batch),
          [&rec, settle, idx, rows](caf::expected<pool::matrix> x) {
            if (x && x->rows != rows)
              rec.answer(idx, pool::make_error(pool::pool_errc::invalid_input,
                                               "batch answer with wrong row count"));
            else
              settle(idx, x ? caf::error{} : x.error());
          },
          on_send, o.task, o.model);
    }
  };

  auto send_deadline = start + std::chrono::duration_cast<steady::duration>(
                                   std::chrono::duration<double>(o.duration));
  uint64_t attempts = 0;
  // Sending stops for good when the client loses its node.
  bool lost_node = false;
  auto more = [&] {
    if (!lost_node && !cl.connected())
      lost_node = true;
    return !lost_node && (o.count == 0 || attempts < o.count);
  };
  if (o.rate > 0) {
    // Open loop: request k is due at start + k / rate, whatever the answers do.
    for (;;) {
      auto now = steady::now();
      if (now >= send_deadline || !more())
        break;
      auto due = static_cast<uint64_t>(
                     std::chrono::duration<double>(now - start).count() * o.rate) +
                 1;
      while (attempts < due && more()) {
        if (rec.outstanding() >= o.max_outstanding)
          rec.unsent();
        else
          send_one(attempts);
        ++attempts;
      }
      auto next = start + std::chrono::duration_cast<steady::duration>(
                              std::chrono::duration<double>(attempts / o.rate));
      std::this_thread::sleep_until(std::min(next, send_deadline));
    }
  } else {
    // Closed loop: each call waits for a window credit.
    while (steady::now() < send_deadline && more())
      send_one(attempts++);
  }
  rec.mark_send_end();
  if (lost_node)
    std::fprintf(stderr,
                 "embedpool-loadgen: lost the connection to %s after %llu requests; "
                 "stopped sending\n",
                 cl.stats().node.c_str(), static_cast<unsigned long long>(attempts));
  auto drain_wait = o.drain_wait >= 0 ? o.drain_wait : o.timeout + 5;
  rec.wait_drained(steady::now() + std::chrono::duration_cast<steady::duration>(
                                       std::chrono::duration<double>(drain_wait)));
  stop_sampling = true;
  sampler.join();
  {
    std::lock_guard<std::mutex> lock{report_mtx};
    report_stop = true;
  }
  report_cv.notify_all();
  reporter.join();

  nlohmann::json ledger_delta;
  if (status_before) {
    if (auto after = status_within(cl, o.model, std::chrono::seconds(5))) {
      auto& a = after->ledger;
      auto& b = status_before->ledger;
      ledger_delta = {
          {"accepted", a.accepted - b.accepted}, {"completed", a.completed - b.completed},
          {"failed", a.failed - b.failed},       {"rejected", a.rejected - b.rejected},
          {"expired", a.expired - b.expired},    {"in_flight", a.in_flight}};
    }
  }
  auto summary = rec.finish(o, cl.stats(), ledger_delta);
  // The seconds not reported yet (recording has stopped): the one under way
  // and any before it.
  if (!rec.report(0, !o.quiet) && csv_ok)
    std::fprintf(stderr, "embedpool-loadgen: cannot write %s\n", o.csv.c_str());
  std::printf("%s\n", summary.dump().c_str());
  std::fflush(stdout);
  // Close the client while `rec` still exists: closing settles any status
  // call still pending, and its callback records into `rec`.
  conn->reset();
  if (lost_node)
    return 3;
  bool exactly_once = summary["missing"] == 0 && summary["duplicates"] == 0;
  return exactly_once ? 0 : 1;
}
