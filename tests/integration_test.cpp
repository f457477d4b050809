// Multi-process integration tests: real `embedpool-node` processes on
// 127.0.0.1 (port picked by the OS), driven through `embedpool-cli`,
// `pool::client` and a raw CAF actor system.
#include <catch2/catch.hpp>

#include <atomic>
#include <cmath>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <nlohmann/json.hpp>

#include "pool/client.hpp"
#include "pool/config.hpp"
#include "pool/embedder.hpp"
#include "pool/error.hpp"
#include "pool/make_embedder.hpp"
#include "pool/protocol.hpp"
#include "process_helpers.hpp"

using namespace std::chrono_literals;
using json = nlohmann::json;
using pool::pool_errc;
using pool::test::node_process;
using pool::test::run_command;
using pool::test::split_lines;
using pool::test::temp_dir;

namespace {

/// Bound for one CLI run (connect + request + exit) on a loaded machine.
constexpr auto cli_timeout = 30s;
/// Per-call timeout of test clients.
constexpr caf::timespan client_timeout = std::chrono::seconds(30);
/// Dimension of the node's default model (hash, model.dim = 384).
constexpr size_t default_dim = 384;

pool::test::run_result cli(uint16_t port, std::vector<std::string> args,
                           const std::string& stdin_file = "/dev/null") {
  std::vector<std::string> argv = {EMBEDPOOL_CLI_BIN, "--host=127.0.0.1",
                                   "--port=" + std::to_string(port), "--timeout=30"};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_command(argv, cli_timeout, stdin_file);
}

std::unique_ptr<pool::client> connect_client(uint16_t port) {
  pool::client_options opts;
  opts.host = "127.0.0.1";
  opts.port = port;
  opts.timeout = client_timeout;
  auto conn = pool::client::connect(opts);
  if (!conn)
    throw std::runtime_error("cannot connect to the node: " +
                             pool::describe(conn.error()));
  return std::move(*conn);
}

/// Parses one `{"dim":N,"embedding":[...]}` line; throws on a malformed line.
std::vector<double> parse_embedding(const std::string& line) {
  auto j = json::parse(line);
  if (!j.is_object() || j.size() != 2 || !j.at("dim").is_number_unsigned() ||
      !j.at("embedding").is_array())
    throw std::runtime_error("not an embedding line: " + line.substr(0, 200));
  auto values = j.at("embedding").get<std::vector<double>>();
  if (values.size() != j.at("dim").get<size_t>())
    throw std::runtime_error("dim does not match the number of values: " +
                             line.substr(0, 200));
  return values;
}

double norm(const std::vector<double>& v) {
  double sum = 0;
  for (double x : v)
    sum += x * x;
  return std::sqrt(sum);
}

bool all_finite(const std::vector<double>& v) {
  return std::all_of(v.begin(), v.end(), [](double x) { return std::isfinite(x); });
}

std::string describe_ledger(const pool::ledger_counters& l) {
  return "accepted=" + std::to_string(l.accepted) +
         " completed=" + std::to_string(l.completed) +
         " failed=" + std::to_string(l.failed) +
         " rejected=" + std::to_string(l.rejected) +
         " expired=" + std::to_string(l.expired) +
         " in_flight=" + std::to_string(l.in_flight);
}

/// Polls `status()` until `pred` holds or `timeout` passes; returns the last
/// status (check `pred` on it again in the test).
pool::pool_status poll_status(pool::client& cl, std::chrono::milliseconds timeout,
                              const std::function<bool(const pool::pool_status&)>& pred,
                              std::chrono::milliseconds interval = 10ms) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto st = cl.status();
    if (!st)
      throw std::runtime_error("status failed: " + pool::describe(st.error()));
    if (pred(*st) || std::chrono::steady_clock::now() >= deadline)
      return *st;
    std::this_thread::sleep_for(interval);
  }
}

/// The reference for every embedding a default node returns: the same model,
/// run in this process without any actor in between.
const pool::embedder& reference_model() {
  static auto model = [] {
    auto m = pool::make_embedder(pool::model_config{});
    if (!m)
      throw std::runtime_error("reference model: " + pool::describe(m.error()));
    return *m;
  }();
  return *model;
}

std::vector<float> reference_embedding(const std::string& text) {
  const auto& model = reference_model();
  std::vector<float> out(model.dim());
  std::vector<std::string_view> texts{text};
  model.embed(texts, "", out.data());
  return out;
}

/// Lets a known number of threads get ready (e.g. connect), then releases
/// them all at once so that their requests overlap.
class start_gate {
 public:
  /// Counts the calling thread as ready and blocks until the gate opens.
  void arrive_and_wait() {
    std::unique_lock<std::mutex> guard{mtx_};
    ++arrived_;
    cv_.notify_all();
    cv_.wait(guard, [this] { return open_; });
  }

  /// Counts a thread that will not wait (e.g. it failed to connect).
  void arrive() {
    std::lock_guard<std::mutex> guard{mtx_};
    ++arrived_;
    cv_.notify_all();
  }

  /// Waits up to `timeout` for `n` arrivals, then opens the gate either way;
  /// returns whether all `n` arrived.
  bool open_when(size_t n, std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> guard{mtx_};
    bool all = cv_.wait_for(guard, timeout, [&] { return arrived_ >= n; });
    open_ = true;
    cv_.notify_all();
    return all;
  }

 private:
  std::mutex mtx_;
  std::condition_variable cv_;
  size_t arrived_ = 0;
  bool open_ = false;
};

/// What one request got back: a value, or an error (with its pool code if it
/// has one). Filled in by worker threads, checked by the test thread.
struct outcome {
  std::vector<std::string> texts;
  bool ok = false;
  caf::optional<pool_errc> code;
  std::string error;  // pool::describe of the error
  std::vector<float> values;
};

outcome record(std::vector<std::string> texts, caf::expected<std::vector<float>> x) {
  outcome o;
  o.texts = std::move(texts);
  if (x) {
    o.ok = true;
    o.values = std::move(*x);
  } else {
    o.code = pool::pool_code(x.error());
    o.error = pool::describe(x.error());
  }
  return o;
}

outcome record(std::vector<std::string> texts, caf::expected<pool::matrix> x) {
  outcome o;
  o.texts = std::move(texts);
  if (x) {
    o.ok = x->rows == o.texts.size() &&
           x->values.size() == static_cast<size_t>(x->rows) * x->dim;
    if (!o.ok)
      o.error = "malformed matrix: rows=" + std::to_string(x->rows) +
                " dim=" + std::to_string(x->dim) +
                " values=" + std::to_string(x->values.size());
    o.values = std::move(x->values);
  } else {
    o.code = pool::pool_code(x.error());
    o.error = pool::describe(x.error());
  }
  return o;
}

/// The value of ` key=` on the first log line with `event=<event>`; empty if
/// there is none.
std::string log_field(const std::string& log, const std::string& event,
                      const std::string& key) {
  auto at = log.find("event=" + event + " ");
  if (at == std::string::npos)
    return {};
  auto line = log.substr(at, log.find('\n', at) - at);
  auto k = line.find(" " + key + "=");
  if (k == std::string::npos)
    return {};
  auto value = line.substr(k + key.size() + 2);
  return value.substr(0, value.find(' '));
}

outcome connect_failure(const std::exception& ex) {
  outcome o;
  o.error = ex.what();
  return o;
}

/// True if a successful outcome holds exactly the reference embedding of
/// each of its texts, in order.
bool matches_reference(const outcome& o) {
  size_t dim = reference_model().dim();
  if (!o.ok || o.values.size() != o.texts.size() * dim)
    return false;
  for (size_t i = 0; i < o.texts.size(); ++i) {
    auto expected = reference_embedding(o.texts[i]);
    if (!std::equal(expected.begin(), expected.end(), o.values.begin() + i * dim))
      return false;
  }
  return true;
}

/// A loopback TCP port that is bound but not listening: connecting to it is
/// refused, and no other process can take it while this object lives.
class refused_port {
 public:
  refused_port() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0)
      throw std::runtime_error("socket failed");
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    socklen_t len = sizeof(addr);
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      ::close(fd_);
      throw std::runtime_error("bind failed");
    }
    port_ = ntohs(addr.sin_port);
  }
  ~refused_port() { ::close(fd_); }
  refused_port(const refused_port&) = delete;
  refused_port& operator=(const refused_port&) = delete;

  uint16_t port() const { return port_; }

 private:
  int fd_ = -1;
  uint16_t port_ = 0;
};

}  // namespace

namespace Catch {

template <>
struct StringMaker<pool_errc> {
  static std::string convert(pool_errc code) { return pool::to_string(code); }
};

template <>
struct StringMaker<caf::optional<pool_errc>> {
  static std::string convert(const caf::optional<pool_errc>& code) {
    return code ? pool::to_string(*code) : "(not a pool error)";
  }
};

}  // namespace Catch

// -- 1. CLI ------------------------------------------------------------------

TEST_CASE(
    "The CLI embeds texts, embeds a batch from stdin, reports status and fails "
    "cleanly",
    "[integration][cli]") {
  node_process node{{}};
  auto port = node.port();

  SECTION("embed prints one unit-norm 384-dim JSON line per text") {
    auto r = cli(port, {"embed", "the first text", "a second, different text"});
    INFO("stderr: " << r.err);
    REQUIRE(r.status.exited);
    REQUIRE(r.status.code == 0);
    auto lines = split_lines(r.out);
    REQUIRE(lines.size() == 2);
    std::vector<std::vector<double>> rows;
    for (const auto& line : lines) {
      auto j = json::parse(line);
      CHECK(j.at("dim") == default_dim);
      auto values = parse_embedding(line);
      REQUIRE(values.size() == default_dim);
      CHECK(all_finite(values));
      CHECK(norm(values) == Approx(1.0).margin(1e-5));
      rows.push_back(values);
    }
    CHECK(rows[0] != rows[1]);
  }

  SECTION("batch prints one line per stdin line, row i equal to embed of line i") {
    const std::vector<std::string> texts = {
        "plain ascii line",
        "na\xc3\xafve caf\xc3\xa9 cr\xc3\xa8me br\xc3\xbbl\xc3\xa9"
        "e",
        "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe3\x81\xae\xe3\x83\x86\xe3\x82\xad\xe3\x82"
        "\xb9\xe3\x83\x88",
        "emoji \xf0\x9f\x99\x82 and \xce\xb1\xce\xb2\xce\xb3",
        "last line",
    };
    temp_dir dir;
    std::string content;
    for (const auto& t : texts)
      content += t + "\n";
    auto input = dir.write("batch.txt", content);
    auto batch = cli(port, {"batch"}, input);
    INFO("batch stderr: " << batch.err);
    REQUIRE(batch.status.exited);
    REQUIRE(batch.status.code == 0);
    auto batch_lines = split_lines(batch.out);
    REQUIRE(batch_lines.size() == texts.size());

    std::vector<std::string> embed_args = {"embed"};
    embed_args.insert(embed_args.end(), texts.begin(), texts.end());
    auto single = cli(port, embed_args);
    INFO("embed stderr: " << single.err);
    REQUIRE(single.status.exited);
    REQUIRE(single.status.code == 0);
    auto single_lines = split_lines(single.out);
    REQUIRE(single_lines.size() == texts.size());

    for (size_t i = 0; i < texts.size(); ++i) {
      INFO("line " << i << ": " << texts[i]);
      auto b = parse_embedding(batch_lines[i]);
      auto s = parse_embedding(single_lines[i]);
      REQUIRE(b.size() == default_dim);
      CHECK(all_finite(b));
      CHECK(norm(b) == Approx(1.0).margin(1e-5));
      // The model is deterministic and batch-independent: bit-equal rows.
      CHECK(b == s);
      // And both equal the model run in this process.
      auto ref = reference_embedding(texts[i]);
      CHECK(std::equal(ref.begin(), ref.end(), b.begin(),
                       [](float x, double y) { return static_cast<float>(y) == x; }));
      if (i > 0)
        CHECK(b != parse_embedding(batch_lines[i - 1]));
    }
  }

  SECTION("status prints workers, a balanced ledger and restarts") {
    // Traffic first, so that the counters have something to count.
    auto warmup = cli(port, {"embed", "one", "two", "three"});
    REQUIRE(warmup.status.code == 0);
    auto r = cli(port, {"status"});
    INFO("stderr: " << r.err);
    REQUIRE(r.status.exited);
    REQUIRE(r.status.code == 0);
    auto lines = split_lines(r.out);
    REQUIRE(lines.size() == 1);
    auto j = json::parse(lines[0]);
    INFO("status: " << lines[0]);
    REQUIRE(j.at("workers").is_array());
    REQUIRE(j.at("workers").size() == 2);  // pool.workers default
    for (const auto& w : j.at("workers")) {
      CHECK(w.at("id").is_number_unsigned());
      CHECK(w.at("node").is_string());
      CHECK(w.at("state") == "ready");
      CHECK(w.at("queue_depth").is_number_unsigned());
      CHECK(w.at("credits").at("embed").is_number_unsigned());
      CHECK(w.at("credits").at("batch").is_number_unsigned());
      CHECK(w.at("last_pong_ms").is_number_integer());
      CHECK(w.at("completed").is_number_unsigned());
      CHECK(w.at("failed").is_number_unsigned());
    }
    const auto& l = j.at("ledger");
    for (const char* key :
         {"accepted", "completed", "failed", "rejected", "expired", "in_flight"})
      CHECK(l.at(key).is_number_unsigned());
    CHECK(j.at("restarts").is_number_unsigned());
    auto accepted = l.at("accepted").get<uint64_t>();
    CHECK(accepted >= 3);
    CHECK(accepted == l.at("completed").get<uint64_t>() + l.at("failed").get<uint64_t>() +
                          l.at("expired").get<uint64_t>() +
                          l.at("in_flight").get<uint64_t>());
    uint64_t worker_completed = 0;
    for (const auto& w : j.at("workers"))
      worker_completed += w.at("completed").get<uint64_t>();
    CHECK(worker_completed == l.at("completed").get<uint64_t>());
  }

  SECTION("a port without a node gives a non-zero exit and a coded error") {
    refused_port nobody;
    auto r = cli(nobody.port(), {"embed", "hello"});
    INFO("stderr: " << r.err);
    REQUIRE(r.status.exited);
    CHECK(r.status.code != 0);
    CHECK(r.out.empty());
    CHECK(r.err.rfind("error: unavailable: ", 0) == 0);
  }

  SECTION("an empty text gives a non-zero exit and invalid_input") {
    auto r = cli(port, {"embed", ""});
    INFO("stderr: " << r.err);
    REQUIRE(r.status.exited);
    CHECK(r.status.code != 0);
    CHECK(r.out.empty());
    CHECK(r.err.rfind("error: invalid_input", 0) == 0);
  }
}

// -- 2. bad inputs -------------------------------------------------------------

TEST_CASE("Bad inputs each get their own error and the node keeps serving",
          "[integration][validation]") {
  node_process node{{"--pool.max-text-bytes=1000", "--pool.max-batch-items=8"}};
  auto cl = connect_client(node.port());

  auto embed_code = [&](const std::string& text) {
    auto r = cl->embed(text);
    INFO("text of " << text.size() << " bytes");
    REQUIRE_FALSE(r);
    INFO("error: " << pool::describe(r.error()));
    auto code = pool::pool_code(r.error());
    REQUIRE(code);
    return *code;
  };
  auto batch_error = [&](const std::vector<std::string>& texts) {
    auto r = cl->embed_batch(texts);
    INFO("batch of " << texts.size() << " texts");
    REQUIRE_FALSE(r);
    return r.error();
  };

  SECTION("through pool::client") {
    CHECK(embed_code("") == pool_errc::invalid_input);
    CHECK(embed_code(std::string(1001, 'a')) == pool_errc::too_large);
    CHECK(cl->embed(std::string(1000, 'a')));  // exactly at the limit
    CHECK(embed_code("\xff\xfe") == pool_errc::invalid_input);
    CHECK(embed_code("overlong \xc0\xaf slash") == pool_errc::invalid_input);
    CHECK(embed_code("lone surrogate \xed\xa0\x80") == pool_errc::invalid_input);
    CHECK(embed_code("truncated \xe6\x97") == pool_errc::invalid_input);

    CHECK(pool::pool_code(batch_error({})) == pool_errc::invalid_input);
    CHECK(pool::pool_code(batch_error(std::vector<std::string>(9, "x"))) ==
          pool_errc::too_large);
    CHECK(cl->embed_batch(std::vector<std::string>(8, "x")));  // at the limit

    auto err = batch_error({"fine", "also fine", "bad \xff byte", "fine again"});
    CHECK(pool::pool_code(err) == pool_errc::invalid_input);
    CHECK_THAT(pool::error_message(err), Catch::Contains("texts[2]"));
    err = batch_error({"fine", ""});
    CHECK(pool::pool_code(err) == pool_errc::invalid_input);
    CHECK_THAT(pool::error_message(err), Catch::Contains("texts[1]"));
    err = batch_error({std::string(1001, 'b'), "fine"});
    CHECK(pool::pool_code(err) == pool_errc::too_large);
    CHECK_THAT(pool::error_message(err), Catch::Contains("texts[0]"));
  }

  SECTION("through a raw CAF actor system sending messages of unknown types") {
    caf::actor_system_config cfg;
    pool::add_message_types(cfg);
    cfg.load<caf::io::middleman>();
    caf::actor_system sys{cfg};
    auto gw = sys.middleman().remote_actor("127.0.0.1", node.port());
    REQUIRE(gw);
    caf::scoped_actor self{sys};
    auto ask = [&](auto... xs) {
      caf::error result;
      bool answered = false;
      self->request(*gw, std::chrono::seconds(10), xs...)
          .receive(
              [&](pool::matrix&) {
                answered = true;
                result = caf::make_error(caf::sec::unexpected_response);
              },
              [&](caf::error& err) {
                answered = true;
                result = std::move(err);
              });
      CHECK(answered);
      INFO("reply: " << pool::describe(result));
      CHECK(pool::pool_code(result) == pool_errc::invalid_input);
    };
    ask(std::string("hello"));
    ask(pool::embed_atom::value, int32_t{5});
    ask(caf::atom("bogus"));
    ask(pool::batch_atom::value, std::string("not a list"));
    ask(pool::status_atom::value, uint64_t{1});
  }

  // Whatever came before, the node still serves correctly.
  auto ok = cl->embed("an ordinary request after the bad ones");
  REQUIRE(ok);
  CHECK(*ok == reference_embedding("an ordinary request after the bad ones"));
  auto st = cl->status();
  REQUIRE(st);
  INFO(describe_ledger(st->ledger));
  CHECK(balanced(st->ledger));
  CHECK(st->ledger.in_flight == 0);
  CHECK(st->ledger.failed == 0);
  CHECK(st->restarts == 0);
  CHECK_FALSE(st->draining);
  REQUIRE(st->workers.size() == 2);
  for (const auto& w : st->workers)
    CHECK(w.state == "ready");
}

// -- 3. crash drill ------------------------------------------------------------

TEST_CASE(
    "Workers that crash every fifth job are restarted and every request is "
    "answered",
    "[integration][crash]") {
  node_process node{{"--pool.workers=2", "--fault.crash-every=5", "--pool.max-attempts=3",
                     "--pool.max-restarts=1000", "--pool.restart-backoff=10ms",
                     "--pool.restart-backoff-max=50ms"}};
  constexpr size_t threads = 4;
  constexpr size_t per_thread = 15;
  std::vector<std::vector<outcome>> results(threads);
  start_gate gate;
  std::vector<std::thread> pool_threads;
  for (size_t t = 0; t < threads; ++t) {
    pool_threads.emplace_back([&, t] {
      auto& out = results[t];
      std::unique_ptr<pool::client> cl;
      try {
        cl = connect_client(node.port());
      } catch (const std::exception& ex) {
        out.push_back(connect_failure(ex));
        gate.arrive();
        return;
      }
      gate.arrive_and_wait();
      for (size_t i = 0; i < per_thread; ++i) {
        auto tag = "thread " + std::to_string(t) + " request " + std::to_string(i);
        if (i % 3 == 2) {
          std::vector<std::string> texts = {tag + " row a", tag + " row b",
                                            tag + " row c"};
          out.push_back(record(texts, cl->embed_batch(texts)));
        } else {
          out.push_back(record({tag}, cl->embed(tag)));
        }
      }
    });
  }
  bool all_ready = gate.open_when(threads, 30s);
  for (auto& th : pool_threads)
    th.join();
  CHECK(all_ready);

  size_t answers = 0, succeeded = 0;
  for (const auto& per : results) {
    for (const auto& o : per) {
      ++answers;
      INFO("request " << (o.texts.empty() ? "(connect)" : o.texts[0]) << ": " << o.error);
      if (o.ok) {
        ++succeeded;
        CHECK(matches_reference(o));
      } else {
        CHECK(o.code == pool_errc::worker_failed);
      }
    }
  }
  CHECK(answers == threads * per_thread);
  // A request fails only if each of its three dispatches lands on a worker
  // that crashes before answering it; more than a few means re-dispatch broke.
  CHECK(succeeded + 3 >= answers);

  auto cl = connect_client(node.port());
  auto st = poll_status(
      *cl, 5s, [](const pool::pool_status& s) { return s.ledger.in_flight == 0; });
  INFO(describe_ledger(st.ledger) << " restarts=" << st.restarts);
  CHECK(st.restarts > 0);
  CHECK(balanced(st.ledger));
  CHECK(st.ledger.in_flight == 0);
  CHECK(st.ledger.completed == succeeded);
  CHECK(st.ledger.accepted == answers);
  CHECK_THAT(node.log(), Catch::Contains("event=worker_crash_drill"));
  CHECK_FALSE(log_field(node.log(), "worker_crash_drill", "worker").empty());
}

// -- 4. hang drill -------------------------------------------------------------

TEST_CASE("A hanging worker is detected and replaced while ordinary requests succeed",
          "[integration][hang]") {
  node_process node{{"--fault.hang-marker=HANG-ME", "--heartbeat.interval=100ms",
                     "--heartbeat.timeout=400ms", "--pool.workers=2",
                     "--pool.max-attempts=2"}};
  outcome hanging;
  std::thread hang_thread{[&] {
    try {
      auto cl = connect_client(node.port());
      hanging = record({"please HANG-ME now"}, cl->embed("please HANG-ME now"));
    } catch (const std::exception& ex) {
      hanging = connect_failure(ex);
    }
  }};
  // The ordinary requests start once a worker really hangs.
  bool hung = node.wait_for_log("event=worker_hang_drill", 10s);

  constexpr size_t senders = 2;
  constexpr size_t per_sender = 10;
  std::vector<std::vector<outcome>> results(senders);
  std::vector<std::thread> ordinary;
  for (size_t t = 0; t < senders; ++t) {
    ordinary.emplace_back([&, t] {
      auto& out = results[t];
      try {
        auto cl = connect_client(node.port());
        for (size_t i = 0; i < per_sender; ++i) {
          auto text = "ordinary text " + std::to_string(t) + "/" + std::to_string(i);
          out.push_back(record({text}, cl->embed(text)));
        }
      } catch (const std::exception& ex) {
        out.push_back(connect_failure(ex));
      }
    });
  }
  for (auto& th : ordinary)
    th.join();
  hang_thread.join();
  REQUIRE(hung);

  size_t ordinary_answers = 0;
  for (const auto& per : results) {
    for (const auto& o : per) {
      ++ordinary_answers;
      INFO(o.texts.at(0) << ": " << o.error);
      CHECK(o.ok);
      CHECK(matches_reference(o));
    }
  }
  CHECK(ordinary_answers == senders * per_sender);
  INFO("hanging request: " << hanging.error);
  CHECK_FALSE(hanging.ok);
  CHECK(hanging.code == pool_errc::worker_failed);

  auto cl = connect_client(node.port());
  auto st = poll_status(*cl, 5s, [](const pool::pool_status& s) {
    return std::all_of(s.workers.begin(), s.workers.end(),
                       [](const pool::worker_status& w) { return w.state == "ready"; });
  });
  INFO(describe_ledger(st.ledger) << " abandoned=" << st.abandoned);
  CHECK(st.abandoned >= 1);
  REQUIRE(st.workers.size() == 2);
  for (const auto& w : st.workers)
    CHECK(w.state == "ready");
  CHECK(balanced(st.ledger));
  CHECK(st.ledger.in_flight == 0);
  CHECK_THAT(node.log(), Catch::Contains("event=worker_stuck"));
}

// -- 4b. honest heartbeats ----------------------------------------------------------

TEST_CASE(
    "Busy workers answer every ping within heartbeat.interval and a hung one is "
    "still replaced",
    "[integration][hang][heartbeat]") {
  // 20 ms per text: a chunk of pool.micro-batch-texts (64) texts would take
  // 1.3 s, past heartbeat.interval; chunks cut by time take at most a quarter.
  constexpr auto interval = 1s;
  constexpr auto timeout = 2s;
  constexpr auto tick = 100ms;  // the supervisor's check period at most
  node_process node{{"--fault.compute-delay=20ms", "--fault.hang-marker=HANG-ME",
                     "--heartbeat.interval=1s", "--heartbeat.timeout=2s",
                     "--pool.workers=2", "--pool.max-attempts=1"}};

  // Phase 1: batches of 256 texts (5 s of compute each) keep both workers
  // busy for 10 s.
  constexpr size_t senders = 2;
  constexpr auto busy_for = 10s;
  const auto busy_until = std::chrono::steady_clock::now() + busy_for;
  std::vector<std::vector<outcome>> results(senders);
  std::vector<std::thread> threads;
  for (size_t t = 0; t < senders; ++t) {
    threads.emplace_back([&, t] {
      auto& out = results[t];
      try {
        auto cl = connect_client(node.port());
        for (size_t n = 0; std::chrono::steady_clock::now() < busy_until && n < 10; ++n) {
          std::vector<std::string> texts;
          for (size_t i = 0; i < 256; ++i)
            texts.push_back("busy " + std::to_string(t) + "/" + std::to_string(n) + "/" +
                            std::to_string(i));
          out.push_back(record(texts, cl->embed_batch(texts)));
        }
      } catch (const std::exception& ex) {
        out.push_back(connect_failure(ex));
      }
    });
  }
  auto busy_status = poll_status(
      *connect_client(node.port()), busy_for,
      [&](const pool::pool_status&) {
        return std::chrono::steady_clock::now() >= busy_until;
      },
      100ms);
  const auto busy_log = node.log();

  // Phase 2: a text that hangs its worker, sent while the batches still run.
  outcome hanging;
  std::thread hang_thread{[&] {
    try {
      auto cl = connect_client(node.port());
      hanging = record({"please HANG-ME now"}, cl->embed("please HANG-ME now"));
    } catch (const std::exception& ex) {
      hanging = connect_failure(ex);
    }
  }};
  const bool hung = node.wait_for_log("event=worker_hang_drill", 10s);
  const auto hung_at = std::chrono::steady_clock::now();
  // Its last pong came at most `interval` before it hung; it is pinged once
  // more and found silent past `timeout` at the next tick. One second more
  // for a loaded machine.
  const bool replaced =
      node.wait_for_log("event=worker_stuck", interval + timeout + tick + 1s);
  const auto detected_in = std::chrono::steady_clock::now() - hung_at;
  hang_thread.join();
  for (auto& th : threads)
    th.join();

  INFO("status at the end of the busy phase: " << describe_ledger(busy_status.ledger));
  INFO("log: " << node.log());
  // Two batches per sender: the second ones still ran at the end (5 s each).
  CHECK(busy_status.ledger.accepted >= 2 * senders);
  // No worker that kept computing missed a heartbeat.
  CHECK(busy_log.find("event=heartbeat_missed") == std::string::npos);
  CHECK(busy_log.find("event=worker_stuck") == std::string::npos);
  size_t completed = 0;
  for (const auto& per : results) {
    for (const auto& o : per) {
      INFO((o.texts.empty() ? "(connect)" : o.texts.at(0)) << ": " << o.error);
      if (o.ok) {
        ++completed;
        CHECK(matches_reference(o));
      } else {
        // Only the batch the hung worker held fails (pool.max-attempts=1).
        CHECK(o.code == pool_errc::worker_failed);
      }
    }
  }
  CHECK(completed + 1 >= 2 * senders);

  REQUIRE(hung);
  CHECK(replaced);
  INFO("detected in "
       << std::chrono::duration_cast<std::chrono::milliseconds>(detected_in).count()
       << " ms");
  CHECK(detected_in <= interval + timeout + tick + 1s);
  // Worker and supervisor lines name the worker with the same field.
  const auto log = node.log();
  CHECK_FALSE(log_field(log, "worker_hang_drill", "worker").empty());
  CHECK(log_field(log, "worker_hang_drill", "worker") ==
        log_field(log, "worker_stuck", "worker"));
  INFO("hanging request: " << hanging.error);
  CHECK_FALSE(hanging.ok);
  CHECK(hanging.code == pool_errc::worker_failed);
}

// -- 5. shutdown -----------------------------------------------------------------

TEST_CASE("SIGTERM drains accepted work, refuses new work and exits 0",
          "[integration][shutdown]") {
  node_process node{{"--fault.compute-delay=20ms", "--pool.workers=1"}};
  auto observer = connect_client(node.port());

  // Ten batch requests of four texts; at 20 ms per text the single worker
  // needs most of a second for them, so the signal lands while they run.
  constexpr size_t threads = 10;
  std::vector<outcome> results(threads);
  std::vector<int> answered(threads, 0);  // one writer per element
  start_gate gate;
  std::vector<std::thread> senders;
  for (size_t t = 0; t < threads; ++t) {
    senders.emplace_back([&, t] {
      std::unique_ptr<pool::client> cl;
      try {
        cl = connect_client(node.port());
      } catch (const std::exception& ex) {
        results[t] = connect_failure(ex);
        gate.arrive();
        return;
      }
      gate.arrive_and_wait();
      std::vector<std::string> texts;
      for (int i = 0; i < 4; ++i)
        texts.push_back("draining text " + std::to_string(t) + "/" + std::to_string(i));
      results[t] = record(texts, cl->embed_batch(texts));
      answered[t] = 1;
    });
  }
  bool all_ready = gate.open_when(threads, 30s);
  auto busy = poll_status(
      *observer, 10s,
      [](const pool::pool_status& s) {
        return s.ledger.accepted >= threads && s.ledger.in_flight > 0;
      },
      2ms);
  bool all_in_flight = busy.ledger.accepted >= threads && busy.ledger.in_flight > 0;
  node.process().signal(SIGTERM);
  bool drain_started = node.wait_for_log("event=drain_started", 10s);

  // Sent after the node took the signal: refused, or the node is already gone.
  auto late = observer->embed("sent after SIGTERM");
  auto ended = node.process().wait_exit(15s);
  for (auto& th : senders)
    th.join();

  INFO("status before the signal: " << describe_ledger(busy.ledger));
  REQUIRE(all_ready);
  REQUIRE(all_in_flight);
  CHECK(drain_started);
  REQUIRE_FALSE(late);
  INFO("late request: " << pool::describe(late.error()));
  // `unavailable` is the client's verdict for a lost connection; a CAF system
  // error is a connection failure the client did not translate.
  if (auto code = pool::pool_code(late.error()))
    CHECK((*code == pool_errc::shutting_down || *code == pool_errc::unavailable));
  else
    CHECK(late.error().category() == caf::atom("system"));

  for (size_t t = 0; t < threads; ++t) {
    const auto& o = results[t];
    INFO("request " << t << ": " << o.error);
    CHECK(answered[t] == 1);
    if (o.ok)
      CHECK(matches_reference(o));
    else
      CHECK(o.code == pool_errc::shutting_down);
  }

  REQUIRE(ended);
  INFO("node stderr: " << node.stderr_text());
  CHECK(ended->exited);
  CHECK(ended->code == 0);
  CHECK_THAT(node.log(), Catch::Contains("event=drained"));
}

TEST_CASE("SIGINT on an idle node exits 0 promptly", "[integration][shutdown]") {
  node_process node{{}};
  node.process().signal(SIGINT);
  auto ended = node.process().wait_exit(10s);
  REQUIRE(ended);
  INFO("node stderr: " << node.stderr_text());
  CHECK(ended->exited);
  CHECK(ended->code == 0);
  CHECK_THAT(node.log(), Catch::Contains("event=drained"));
}

// -- 6. configuration ------------------------------------------------------------

TEST_CASE("The node refuses bad configuration naming the key, and --help lists the keys",
          "[integration][config]") {
  temp_dir dir;
  auto log_arg = "--log.file=" + (dir.path() / "supervisor.log").string();

  SECTION("a value of the wrong type on the command line") {
    auto r = run_command(
        {EMBEDPOOL_NODE_BIN, "--node.port=0", log_arg, "--pool.workers=abc"}, 15s);
    INFO("stderr: " << r.err);
    REQUIRE(r.status.exited);
    CHECK(r.status.code == 2);
    CHECK_THAT(r.err, Catch::Contains("pool.workers"));
  }

  SECTION("an unknown key in a config file") {
    auto file = dir.write("bad.ini", "[pool]\nworkers = 2\nworkerz = 3\n");
    auto r = run_command(
        {EMBEDPOOL_NODE_BIN, "--config-file=" + file, "--node.port=0", log_arg}, 15s);
    INFO("stderr: " << r.err);
    REQUIRE(r.status.exited);
    CHECK(r.status.code == 2);
    CHECK_THAT(r.err, Catch::Contains("workerz"));
  }

  SECTION("--help") {
    auto r = run_command({EMBEDPOOL_NODE_BIN, "--help"}, 15s);
    INFO("stderr: " << r.err);
    REQUIRE(r.status.exited);
    CHECK(r.status.code == 0);
    CHECK_THAT(r.out, Catch::Contains("pool.workers"));
  }
}

// -- 7. overload -----------------------------------------------------------------

TEST_CASE("With policy reject an overloaded node answers overloaded and counts it",
          "[integration][overload]") {
  node_process node{{"--pool.workers=1", "--pool.embed-queue-capacity=2",
                     "--pool.overload-policy=reject", "--fault.compute-delay=50ms"}};
  constexpr size_t threads = 20;
  std::vector<outcome> results(threads);
  start_gate gate;
  std::vector<std::thread> senders;
  for (size_t t = 0; t < threads; ++t) {
    senders.emplace_back([&, t] {
      auto& out = results[t];
      std::unique_ptr<pool::client> cl;
      try {
        cl = connect_client(node.port());
      } catch (const std::exception& ex) {
        out = connect_failure(ex);
        gate.arrive();
        return;
      }
      gate.arrive_and_wait();
      auto text = "overload text " + std::to_string(t);
      out = record({text}, cl->embed(text));
    });
  }
  bool all_ready = gate.open_when(threads, 30s);
  for (auto& th : senders)
    th.join();
  REQUIRE(all_ready);

  uint64_t overloaded = 0, succeeded = 0;
  for (const auto& o : results) {
    INFO(o.texts.at(0) << ": " << o.error);
    if (o.ok) {
      ++succeeded;
      CHECK(matches_reference(o));
    } else {
      CHECK(o.code == pool_errc::overloaded);
      if (o.code == pool_errc::overloaded)
        ++overloaded;
    }
  }
  CHECK(overloaded > 0);
  CHECK(succeeded >= 2);
  CHECK(overloaded + succeeded == threads);

  auto cl = connect_client(node.port());
  auto st = poll_status(
      *cl, 5s, [](const pool::pool_status& s) { return s.ledger.in_flight == 0; });
  INFO(describe_ledger(st.ledger));
  CHECK(st.policy == "reject");
  CHECK(st.ledger.rejected == overloaded);
  CHECK(st.ledger.completed == succeeded);
  CHECK(balanced(st.ledger));
  CHECK_THAT(node.log(), Catch::Contains("event=overload_began"));
}
