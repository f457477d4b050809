// The client library against real node processes on loopback: the credit
// window, the per-call timeout, lost connections; and the load generator's
// exactly-once accounting.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <future>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "pool/client.hpp"
#include "pool/error.hpp"
#include "process_helpers.hpp"

namespace {

using namespace std::chrono_literals;
using pool::test::node_process;
using steady = std::chrono::steady_clock;

std::unique_ptr<pool::client> connect_to(const node_process& node, uint32_t window,
                                         caf::timespan timeout = std::chrono::seconds(30),
                                         uint32_t coalesce = 64) {
  pool::client_options opts;
  opts.port = node.port();
  opts.window = window;
  opts.timeout = timeout;
  opts.coalesce = coalesce;
  auto cl = pool::client::connect(opts);
  if (!cl)
    throw std::runtime_error("cannot connect: " + pool::describe(cl.error()));
  return std::move(*cl);
}

caf::optional<pool::pool_errc> code_of(const caf::error& err) {
  return pool::pool_code(err);
}

}  // namespace

TEST_CASE("A client never has more requests in flight at the node than its window",
          "[client]") {
  node_process node{{"--pool.workers=1", "--fault.compute-delay=10ms"}};
  auto cl = connect_to(node, 4);
  auto observer = connect_to(node, 1);
  constexpr int calls = 40;
  std::atomic<int> ok{0};
  std::atomic<int> answered{0};
  std::atomic<uint32_t> max_client_in_flight{0};
  std::thread sender{[&] {
    for (int i = 0; i < calls; ++i) {
      cl->embed_async("text number " + std::to_string(i),
                      [&](caf::expected<std::vector<float>> x) {
                        if (x && !x->empty())
                          ++ok;
                        ++answered;
                      });
      auto now_in_flight = cl->stats().in_flight;
      auto seen = max_client_in_flight.load();
      while (now_in_flight > seen &&
             !max_client_in_flight.compare_exchange_weak(seen, now_in_flight)) {
      }
    }
  }};
  // Watch the node's ledger while the calls run: nobody else talks to it.
  uint64_t max_node_in_flight = 0;
  auto deadline = steady::now() + 30s;
  while (answered.load() < calls && steady::now() < deadline) {
    auto st = observer->status();
    REQUIRE(st);
    max_node_in_flight = std::max(max_node_in_flight, st->ledger.in_flight);
  }
  sender.join();
  CHECK(answered.load() == calls);
  CHECK(ok.load() == calls);
  CHECK(max_node_in_flight <= 4);
  CHECK(max_node_in_flight >= 2);  // the window was actually used
  CHECK(max_client_in_flight.load() <= 4);
  auto stats = cl->stats();
  CHECK(stats.sent == calls);
  CHECK(stats.answered == calls);
  CHECK(stats.in_flight == 0);
}

namespace {

/// The answers of embed calls made with `embed_async`, by call index.
struct embed_results {
  explicit embed_results(size_t n) : values(n) {}

  pool::callback<std::vector<float>> at(size_t i) {
    return [this, i](caf::expected<std::vector<float>> x) {
      std::lock_guard<std::mutex> guard{mtx};
      values[i].emplace_back(std::move(x));
      ++answered;
      cv.notify_all();
    };
  }

  /// Waits until `n` answers came (at most 30 s); true if they did.
  bool wait_for(size_t n) {
    std::unique_lock<std::mutex> guard{mtx};
    return cv.wait_for(guard, 30s, [&] { return answered >= n; });
  }

  std::mutex mtx;
  std::condition_variable cv;
  size_t answered = 0;
  std::vector<std::vector<caf::expected<std::vector<float>>>> values;
};

bool same_row(const std::vector<float>& row, const pool::matrix& m, size_t i) {
  if (row.size() != m.dim)
    return false;
  for (size_t k = 0; k < m.dim; ++k)
    if (std::abs(row[k] - m.values[i * m.dim + k]) > 1e-5f)
      return false;
  return true;
}

}  // namespace

TEST_CASE("Embed calls that queue up share messages, each answered with its own row",
          "[client]") {
  // 2 ms per text: the first calls are still computing while the rest queue up.
  node_process node{{"--pool.workers=1", "--fault.compute-delay=2ms"}};
  auto cl = connect_to(node, 256);
  constexpr size_t calls = 100;
  std::vector<std::string> texts;
  for (size_t i = 0; i < calls; ++i)
    texts.push_back("coalesced text number " + std::to_string(i));
  embed_results results{calls};
  for (size_t i = 0; i < calls; ++i)
    cl->embed_async(texts[i], results.at(i));
  REQUIRE(results.wait_for(calls));
  // The reference: the same texts in one batch, row i for text i.
  auto reference = connect_to(node, 1, std::chrono::seconds(30), 0)->embed_batch(texts);
  REQUIRE(reference);
  for (size_t i = 0; i < calls; ++i) {
    INFO("call " << i);
    REQUIRE(results.values[i].size() == 1);  // exactly one answer
    auto& x = results.values[i].front();
    REQUIRE(x);
    CHECK(same_row(*x, *reference, i));
  }
  auto stats = cl->stats();
  CHECK(stats.sent == calls);
  CHECK(stats.answered == calls);
  CHECK(stats.in_flight == 0);
  // The first four went alone, and at least the 64 after them in one list.
  CHECK(stats.listed >= 64);
  CHECK(stats.listed <= calls - 4);
  CHECK(stats.lists >= 1);
  CHECK(stats.lists <= stats.listed / 2);
  // The node's ledger counts every call, listed or not, and the batch once.
  auto st = cl->status();
  REQUIRE(st);
  CHECK(st->ledger.accepted == calls + 1);
  CHECK(st->ledger.completed == st->ledger.accepted);
}

TEST_CASE("Calls from several threads at once each get their own answer, exactly once",
          "[client]") {
  node_process node{{"--pool.workers=2", "--fault.compute-delay=100us"}};
  pool::client_options opts;
  opts.port = node.port();
  opts.window = 16;  // the threads wait for credits: calls arrive in bursts
  auto connected = pool::client::connect(opts);
  REQUIRE(connected);
  auto& cl = **connected;
  constexpr size_t threads = 4;
  constexpr size_t per_thread = 150;
  std::vector<std::string> texts;
  for (size_t i = 0; i < threads * per_thread; ++i)
    texts.push_back("text " + std::to_string(i) + " from many threads");
  embed_results results{texts.size()};
  std::atomic<size_t> statuses{0};
  std::vector<std::thread> senders;
  for (size_t t = 0; t < threads; ++t)
    senders.emplace_back([&, t] {
      for (size_t k = 0; k < per_thread; ++k) {
        auto i = t * per_thread + k;
        cl.embed_async(texts[i], results.at(i));
        if (k % 50 == 0 && cl.status())  // outside the window, between embeds
          ++statuses;
      }
    });
  for (auto& s : senders)
    s.join();
  REQUIRE(results.wait_for(texts.size()));
  // The reference: each thread's texts in one batch (within max-batch-items).
  auto plain = connect_to(node, 1, std::chrono::seconds(30), 0);
  for (size_t t = 0; t < threads; ++t) {
    std::vector<std::string> part(texts.begin() + t * per_thread,
                                  texts.begin() + (t + 1) * per_thread);
    auto reference = plain->embed_batch(part);
    REQUIRE(reference);
    for (size_t k = 0; k < per_thread; ++k) {
      auto i = t * per_thread + k;
      INFO("call " << i);
      REQUIRE(results.values[i].size() == 1);
      auto& x = results.values[i].front();
      REQUIRE(x);
      CHECK(same_row(*x, *reference, k));
    }
  }
  CHECK(statuses == threads * 3);
  auto stats = cl.stats();
  CHECK(stats.sent == texts.size() + threads * 3);
  CHECK(stats.answered == stats.sent);
  CHECK(stats.in_flight == 0);
}

TEST_CASE("Destroying a client settles every call it accepted, exactly once",
          "[client]") {
  // 5 ms per text on one worker: most calls are still queued or on their way
  // when the client goes.
  node_process node{{"--pool.workers=1", "--fault.compute-delay=5ms"}};
  constexpr size_t threads = 3;
  constexpr size_t per_thread = 100;
  embed_results results{threads * per_thread};
  {
    auto cl = connect_to(node, 0, std::chrono::seconds(30), 8);  // no window
    std::vector<std::thread> senders;
    for (size_t t = 0; t < threads; ++t)
      senders.emplace_back([&, t] {
        for (size_t k = 0; k < per_thread; ++k)
          cl->embed_async("going " + std::to_string(k), results.at(t * per_thread + k));
      });
    for (auto& s : senders)
      s.join();
  }
  // The destructor returned: every call has its answer already.
  std::lock_guard<std::mutex> guard{results.mtx};
  CHECK(results.answered == threads * per_thread);
  size_t closed = 0;
  for (size_t i = 0; i < results.values.size(); ++i) {
    INFO("call " << i);
    REQUIRE(results.values[i].size() == 1);
    auto& x = results.values[i].front();
    if (!x) {
      CHECK(code_of(x.error()) == pool::pool_errc::unavailable);
      CHECK(pool::error_message(x.error()).find("the client was closed") !=
            std::string::npos);
      ++closed;
    }
  }
  CHECK(closed > 0);  // 300 calls at 5 ms each cannot all be done at once
}

TEST_CASE("A text refused in a list fails alone and its neighbours get their rows",
          "[client]") {
  node_process node{
      {"--pool.workers=1", "--fault.compute-delay=20ms", "--pool.max-text-bytes=100"}};
  auto cl = connect_to(node, 256);
  // Four calls keep the node busy for 80 ms; the rest wait and go in lists.
  std::vector<std::string> texts{
      "busy 1", "busy 2", "busy 3",         "busy 4", "good a",
      "",       "good b", "bad \xff utf-8", "good c", std::string(101, 'x')};
  embed_results results{texts.size()};
  for (size_t i = 0; i < texts.size(); ++i)
    cl->embed_async(texts[i], results.at(i));
  REQUIRE(results.wait_for(texts.size()));
  auto reference = connect_to(node, 1, std::chrono::seconds(30), 0)
                       ->embed_batch({"busy 1", "busy 2", "busy 3", "busy 4", "good a",
                                      "good b", "good c"});
  REQUIRE(reference);
  auto row_of =
      std::map<size_t, size_t>{{0, 0}, {1, 1}, {2, 2}, {3, 3}, {4, 4}, {6, 5}, {8, 6}};
  auto code_at = [&](size_t i) {
    auto& x = results.values[i].front();
    return x ? caf::optional<pool::pool_errc>{} : code_of(x.error());
  };
  for (size_t i = 0; i < texts.size(); ++i) {
    INFO("call " << i);
    REQUIRE(results.values[i].size() == 1);
    if (row_of.count(i) > 0) {
      auto& x = results.values[i].front();
      REQUIRE(x);
      CHECK(same_row(*x, *reference, row_of[i]));
    }
  }
  CHECK(code_at(5) == pool::pool_errc::invalid_input);
  CHECK(code_at(7) == pool::pool_errc::invalid_input);
  CHECK(code_at(9) == pool::pool_errc::too_large);
  CHECK(cl->stats().listed >= 2);
  CHECK(cl->stats().answered == texts.size());
}

TEST_CASE("A text that breaks a worker in a list fails alone and its neighbours get rows",
          "[client]") {
  // The marked text hangs every worker that embeds it; the supervisor gives
  // up on its job after two attempts.
  node_process node{{"--pool.workers=1", "--fault.compute-delay=20ms",
                     "--fault.hang-marker=HANG-ME", "--heartbeat.interval=100ms",
                     "--heartbeat.timeout=400ms", "--pool.max-attempts=2"}};
  auto cl = connect_to(node, 256);
  // Four calls keep the node busy for 80 ms; the rest wait and go in lists.
  std::vector<std::string> texts{"busy 1", "busy 2", "busy 3", "busy 4"};
  for (int i = 0; i < 6; ++i)
    texts.push_back("good " + std::to_string(i));
  const size_t poison = texts.size();
  texts.push_back("please HANG-ME now");
  for (int i = 6; i < 12; ++i)
    texts.push_back("good " + std::to_string(i));
  embed_results results{texts.size()};
  for (size_t i = 0; i < texts.size(); ++i)
    cl->embed_async(texts[i], results.at(i));
  REQUIRE(results.wait_for(texts.size()));
  auto good = texts;
  good.erase(good.begin() + static_cast<std::ptrdiff_t>(poison));
  auto reference = connect_to(node, 1, std::chrono::seconds(30), 0)->embed_batch(good);
  REQUIRE(reference);
  for (size_t i = 0; i < texts.size(); ++i) {
    INFO("call " << i << ": " << texts[i]);
    REQUIRE(results.values[i].size() == 1);  // exactly one answer
    auto& x = results.values[i].front();
    if (i == poison) {
      REQUIRE_FALSE(x);
      CHECK(code_of(x.error()) == pool::pool_errc::worker_failed);
    } else {
      INFO((x ? std::string{} : pool::describe(x.error())));
      REQUIRE(x);
      CHECK(same_row(*x, *reference, i < poison ? i : i - 1));
    }
  }
  // The marked text went in a list (which failed) and then alone.
  CHECK(cl->stats().listed >= 2);
  CHECK(cl->stats().answered == texts.size());
  CHECK(node.wait_for_log("event=worker_stuck", 1s));
}

TEST_CASE("Against a node with a lower pool.max-batch-items lists shrink to its limit",
          "[client]") {
  node_process node{
      {"--pool.workers=1", "--fault.compute-delay=2ms", "--pool.max-batch-items=4"}};
  auto cl = connect_to(node, 256);  // lists of up to 64
  constexpr size_t calls = 100;
  std::vector<std::string> texts;
  for (size_t i = 0; i < calls; ++i)
    texts.push_back("limited text number " + std::to_string(i));
  auto reference = connect_to(node, 1, std::chrono::seconds(30), 0);
  auto wave = [&](const char* name) {
    INFO(name);
    embed_results results{calls};
    for (size_t i = 0; i < calls; ++i)
      cl->embed_async(texts[i], results.at(i));
    REQUIRE(results.wait_for(calls));
    for (size_t i = 0; i < calls; ++i) {
      INFO("call " << i);
      REQUIRE(results.values[i].size() == 1);
      auto& x = results.values[i].front();
      REQUIRE(x);
      auto one = reference->embed(texts[i]);
      REQUIRE(one);
      CHECK(*x == *one);
    }
  };
  // The first lists are refused as too long; their calls go again alone.
  wave("first wave");
  auto before = cl->stats();
  CHECK(before.answered == calls);
  CHECK(before.sent == calls);
  // Then every list stays within the node's limit.
  wave("second wave");
  auto after = cl->stats();
  CHECK(after.answered == 2 * calls);
  auto listed = after.listed - before.listed;
  auto lists = after.lists - before.lists;
  CHECK(listed >= 8);
  CHECK(listed <= 4 * lists);
}

TEST_CASE(
    "A text the model refuses in a list fails alone and its neighbours get their rows",
    "[client]") {
  // The BERT fixture reads at most 48 tokens and, with truncation off, refuses
  // a longer text at the worker, where a list is one job.
  const std::string model_dir =
      std::string{EMBEDPOOL_SOURCE_DIR} + "/tests/data/bert/mini-mean";
  node_process node{{"--pool.workers=1", "--fault.compute-delay=20ms",
                     "--model.kind=bert", "--model.path=" + model_dir,
                     "--model.truncate=false"}};
  auto cl = connect_to(node, 256);
  std::string long_text;
  for (int i = 0; i < 60; ++i)
    long_text += "world ";
  // Four calls keep the node busy for 80 ms; the rest wait and go in a list.
  std::vector<std::string> texts{"busy 1", "busy 2",  "busy 3", "busy 4",
                                 "good a", long_text, "good b", "good c"};
  embed_results results{texts.size()};
  for (size_t i = 0; i < texts.size(); ++i)
    cl->embed_async(texts[i], results.at(i));
  REQUIRE(results.wait_for(texts.size()));
  auto reference = connect_to(node, 1, std::chrono::seconds(30), 0);
  for (size_t i = 0; i < texts.size(); ++i) {
    INFO("call " << i);
    REQUIRE(results.values[i].size() == 1);
    auto& x = results.values[i].front();
    if (i == 5) {
      REQUIRE_FALSE(x);
      CHECK(code_of(x.error()) == pool::pool_errc::too_large);
      continue;
    }
    REQUIRE(x);
    auto one = reference->embed(texts[i]);
    REQUIRE(one);
    // Equal up to float rounding: the worker may embed it beside other texts.
    REQUIRE(x->size() == one->size());
    for (size_t k = 0; k < x->size(); ++k)
      CHECK(std::abs((*x)[k] - (*one)[k]) <= 1e-4f);
  }
  CHECK(cl->stats().listed >= 2);
  CHECK(cl->stats().answered == texts.size());
}

TEST_CASE("A call without an answer within its timeout fails with deadline_exceeded",
          "[client]") {
  node_process node{{"--pool.workers=1", "--fault.compute-delay=2s"}};
  auto cl = connect_to(node, 1, std::chrono::milliseconds(300));
  SECTION("waiting for the node") {
    auto start = steady::now();
    auto x = cl->embed("slow text");
    auto elapsed = steady::now() - start;
    REQUIRE_FALSE(x);
    CHECK(code_of(x.error()) == pool::pool_errc::deadline_exceeded);
    CHECK(elapsed >= 250ms);
    CHECK(elapsed < 1500ms);
    CHECK(cl->stats().timed_out == 1);
  }
  SECTION("waiting for a window credit") {
    auto first = cl->embed_future("holds the only credit");
    auto start = steady::now();
    auto second = cl->embed("waits for a credit");
    auto elapsed = steady::now() - start;
    REQUIRE_FALSE(second);
    CHECK(code_of(second.error()) == pool::pool_errc::deadline_exceeded);
    CHECK(elapsed < 1500ms);
    auto x = first.get();
    REQUIRE_FALSE(x);
    CHECK(code_of(x.error()) == pool::pool_errc::deadline_exceeded);
    CHECK(cl->stats().sent == 1);  // the second call never left the client
  }
  // The client still works for calls that fit their timeout.
  auto st = cl->status();
  CHECK(st);
}

TEST_CASE("A send hook runs once, after the window credit and before the answer",
          "[client]") {
  node_process node{{"--pool.workers=1", "--fault.compute-delay=300ms"}};
  auto cl = connect_to(node, 1);
  std::mutex mtx;
  std::vector<std::pair<std::string, steady::time_point>> events;
  auto note = [&](std::string what) {
    std::lock_guard<std::mutex> guard{mtx};
    events.emplace_back(std::move(what), steady::now());
  };
  std::promise<void> first_done;
  std::promise<void> second_done;
  cl->embed_async(
      "first",
      [&](caf::expected<std::vector<float>> x) {
        note(x ? "done 1" : "failed 1");
        first_done.set_value();
      },
      [&] { note("sent 1"); });
  {
    // The hook ran on this thread before embed_async returned; the answer
    // is 300 ms away.
    std::lock_guard<std::mutex> guard{mtx};
    REQUIRE(events.size() == 1);
    CHECK(events[0].first == "sent 1");
  }
  auto second_called = steady::now();
  cl->embed_batch_async(
      {"second", "third"},
      [&](caf::expected<pool::matrix> x) {
        note(x && x->rows == 2 ? "done 2" : "failed 2");
        second_done.set_value();
      },
      [&] { note("sent 2"); });
  first_done.get_future().get();
  second_done.get_future().get();
  std::lock_guard<std::mutex> guard{mtx};
  std::map<std::string, steady::time_point> at;
  for (auto& [what, t] : events)
    CHECK(at.emplace(what, t).second);  // each event once
  REQUIRE(at.size() == 4);
  REQUIRE(at.count("done 1") == 1);
  REQUIRE(at.count("done 2") == 1);
  // The second call waited for the only credit before its hook ran, and its
  // round trip (the 300 ms of work) is after the hook.
  CHECK(at["sent 2"] - second_called >= 250ms);
  CHECK(at["done 2"] - at["sent 2"] >= 250ms);
  CHECK(at["sent 1"] < at["done 1"]);
  CHECK(cl->stats().sent == 2);
}

TEST_CASE("A call that fails before it is sent never runs its send hook", "[client]") {
  node_process node{{"--pool.workers=1", "--fault.compute-delay=1s"}};
  auto cl = connect_to(node, 1, std::chrono::milliseconds(200));
  auto first = cl->embed_future("holds the only credit");
  std::atomic<int> hooks{0};
  caf::error failure;
  bool done = false;
  cl->embed_async(
      "no credit within the timeout",
      [&](caf::expected<std::vector<float>> x) {
        done = true;
        if (!x)
          failure = x.error();
      },
      [&] { ++hooks; });
  // The failure is reported on this thread before embed_async returns.
  CHECK(done);
  CHECK(code_of(failure) == pool::pool_errc::deadline_exceeded);
  CHECK(hooks.load() == 0);
  first.get();
  CHECK(cl->stats().sent == 1);
}

TEST_CASE("Every pending call fails with unavailable at once when the node is killed",
          "[client]") {
  node_process node{{"--pool.workers=1", "--fault.compute-delay=500ms"}};
  auto cl = connect_to(node, 8, std::chrono::seconds(60));
  std::vector<std::future<caf::expected<std::vector<float>>>> embeds;
  for (int i = 0; i < 6; ++i)
    embeds.push_back(cl->embed_future("pending text " + std::to_string(i)));
  auto batch = cl->embed_batch_future({"a", "b"});
  // Wait until the node has accepted all seven requests.
  auto deadline = steady::now() + 20s;
  for (;;) {
    auto st = cl->status();
    REQUIRE(st);
    if (st->ledger.accepted >= 7)
      break;
    REQUIRE(steady::now() < deadline);
  }
  auto killed_at = steady::now();
  node.process().signal(SIGKILL);
  for (auto& f : embeds) {
    REQUIRE(f.wait_for(10s) == std::future_status::ready);
    auto x = f.get();
    REQUIRE_FALSE(x);
    CHECK(code_of(x.error()) == pool::pool_errc::unavailable);
  }
  REQUIRE(batch.wait_for(10s) == std::future_status::ready);
  auto b = batch.get();
  REQUIRE_FALSE(b);
  CHECK(code_of(b.error()) == pool::pool_errc::unavailable);
  // Far below the 60 s call timeout; at most the first text could have finished.
  CHECK(steady::now() - killed_at < 10s);
  CHECK_FALSE(cl->connected());
  auto stats = cl->stats();
  CHECK(stats.lost >= 6);
  CHECK(stats.in_flight == 0);
  // Later calls fail at once instead of waiting.
  auto start = steady::now();
  auto later = cl->embed("after the node is gone");
  REQUIRE_FALSE(later);
  CHECK(code_of(later.error()) == pool::pool_errc::unavailable);
  CHECK(steady::now() - start < 1s);
}

TEST_CASE("Connecting to a port where nothing listens fails with unavailable",
          "[client]") {
  uint16_t port = 0;
  {
    node_process node{{}};
    port = node.port();
  }  // killed: the port is free again
  pool::client_options opts;
  opts.port = port;
  auto cl = pool::client::connect(opts);
  REQUIRE_FALSE(cl);
  CHECK(code_of(cl.error()) == pool::pool_errc::unavailable);
}

#ifdef EMBEDPOOL_LOADGEN_BIN

namespace {

nlohmann::json run_loadgen(const node_process& node, std::vector<std::string> args) {
  std::vector<std::string> argv = {EMBEDPOOL_LOADGEN_BIN, "--host=127.0.0.1",
                                   "--port=" + std::to_string(node.port())};
  argv.insert(argv.end(), args.begin(), args.end());
  auto res = pool::test::run_command(argv, std::chrono::seconds(60));
  INFO("stderr: " << res.err);
  INFO("stdout: " << res.out);
  REQUIRE(res.status.exited);
  REQUIRE(res.status.code == 0);
  return nlohmann::json::parse(res.out);
}

uint64_t error_total(const nlohmann::json& j) {
  uint64_t total = 0;
  for (const auto& [code, n] : j.at("errors").items())
    total += n.get<uint64_t>();
  return total;
}

}  // namespace

TEST_CASE("The load generator accounts for every request exactly once",
          "[client][loadgen]") {
  SECTION("closed loop, embed") {
    node_process node{{"--pool.workers=1"}};
    auto j = run_loadgen(
        node, {"--mode=embed", "--window=8", "--duration=1", "--text-bytes=64"});
    INFO(j.dump());
    auto sent = j.at("sent").get<uint64_t>();
    CHECK(sent > 0);
    CHECK(sent == j.at("completed").get<uint64_t>() + error_total(j) +
                      j.at("missing").get<uint64_t>());
    CHECK(j.at("missing") == 0);
    CHECK(j.at("duplicates") == 0);
    CHECK(j.at("completed").get<uint64_t>() == sent);
    // The node's ledger counts each text of a list of embeds.
    auto listed = j.at("client").at("listed").get<uint64_t>();
    auto lists = j.at("client").at("lists").get<uint64_t>();
    CHECK(lists <= listed / 2);
    CHECK(j.at("node_ledger_delta").at("accepted").get<uint64_t>() == sent);
    CHECK(j.at("latency_ms").at("p50").get<double>() > 0);
  }
  SECTION("open loop into an overloaded node, batch") {
    node_process node{{"--pool.workers=1", "--fault.compute-delay=5ms",
                       "--pool.overload-policy=reject", "--pool.batch-queue-capacity=2"}};
    auto j = run_loadgen(
        node, {"--mode=batch", "--batch-size=4", "--rate=400", "--duration=1",
               "--text-bytes=32", "--node-pid=" + std::to_string(node.process().pid())});
    INFO(j.dump());
    auto sent = j.at("sent").get<uint64_t>();
    CHECK(sent > 200);
    CHECK(sent == j.at("completed").get<uint64_t>() + error_total(j) +
                      j.at("missing").get<uint64_t>());
    CHECK(j.at("missing") == 0);
    CHECK(j.at("duplicates") == 0);
    CHECK(j.at("errors").value("overloaded", 0) > 0);
    CHECK(j.at("completed").get<uint64_t>() > 0);
    // The node saw exactly what was sent: accepted or rejected, once each.
    auto& ledger = j.at("node_ledger_delta");
    CHECK(ledger.at("accepted").get<uint64_t>() + ledger.at("rejected").get<uint64_t>() ==
          sent);
    CHECK(j.at("node_rss_kb").at("peak").get<int64_t>() > 0);
  }
}

#endif  // EMBEDPOOL_LOADGEN_BIN
