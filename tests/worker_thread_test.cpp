// The worker with its compute thread (spawn_worker with own_thread, as in a
// node), on a real multi-threaded actor system: short chunks run inline on
// the scheduler, long ones on the compute thread with the next chunk queued
// behind; every job gets its own rows exactly once, an embed waits behind at
// most the chunk being computed, and pings wait while a chunk is computed.
#include <catch2/catch.hpp>

#include <condition_variable>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include <caf/all.hpp>

#include "actors.hpp"
#include "pool/protocol.hpp"

using namespace pool;
using namespace std::chrono_literals;

namespace {

/// A 2-dimensional embedder: row = (text length, first byte). It records the
/// texts of every call; a call holding a text that starts with "hold" waits
/// until `open()`, and one holding "boom" throws.
class gated_embedder : public embedder {
 public:
  std::string name() const override { return "gated"; }
  size_t dim() const override { return 2; }
  size_t weights_bytes() const override { return 0; }
  size_t worker_bytes(uint32_t texts) const override {
    return texts * dim() * sizeof(float);
  }
  void embed(const std::vector<std::string_view>& texts, const std::string&,
             float* out) const override {
    std::unique_lock<std::mutex> guard{mtx_};
    calls_.emplace_back(texts.begin(), texts.end());
    for (auto t : texts) {
      if (t.rfind("hold", 0) == 0) {
        holding_ = true;
        changed_.notify_all();
        changed_.wait_for(guard, 30s, [this] { return open_; });
        holding_ = false;
      }
      if (t.find("boom") != std::string_view::npos)
        throw std::runtime_error("boom");
    }
    for (size_t i = 0; i < texts.size(); ++i) {
      out[2 * i] = static_cast<float>(texts[i].size());
      out[2 * i + 1] = static_cast<float>(static_cast<unsigned char>(texts[i][0]));
    }
  }

  /// Waits (10 s at most) until a call holds at the gate.
  bool wait_holding() const {
    std::unique_lock<std::mutex> guard{mtx_};
    return changed_.wait_for(guard, 10s, [this] { return holding_; });
  }
  void open() {
    std::lock_guard<std::mutex> guard{mtx_};
    open_ = true;
    changed_.notify_all();
  }
  std::vector<std::vector<std::string>> calls() const {
    std::lock_guard<std::mutex> guard{mtx_};
    return calls_;
  }

 private:
  mutable std::mutex mtx_;
  mutable std::condition_variable changed_;
  mutable bool holding_ = false;
  bool open_ = false;
  mutable std::vector<std::vector<std::string>> calls_;
};

struct system_fixture {
  caf::actor_system_config cfg;
  caf::actor_system sys;
  std::shared_ptr<gated_embedder> model = std::make_shared<gated_embedder>();
  caf::actor worker;

  static caf::actor_system_config& configured(caf::actor_system_config& c) {
    add_message_types(c);
    return c;
  }
  system_fixture() : sys(configured(cfg)) {}
  ~system_fixture() {
    model->open();
    if (worker)
      caf::anon_send_exit(worker, caf::exit_reason::kill);
  }

  void spawn(uint32_t micro_batch, caf::timespan inline_compute,
             caf::timespan compute_delay = caf::timespan{0}) {
    detail::worker_config c;
    c.model = model;
    c.micro_batch_texts = micro_batch;
    c.inline_compute = inline_compute;
    c.fault.compute_delay = compute_delay;
    c.max_jobs = 1000;
    worker = detail::spawn_worker(sys, c, true);
  }
};

job make_job(uint64_t id, std::vector<std::string> texts, lane ln) {
  job j;
  j.id = id;
  j.lane = static_cast<uint8_t>(ln);
  j.texts = shared_texts{std::move(texts)};
  return j;
}

/// What came back for each job id, in arrival order.
struct answers {
  std::vector<uint64_t> order;
  std::map<uint64_t, matrix> done;
  std::map<uint64_t, caf::error> failed;
  size_t count() const { return done.size() + failed.size(); }
};

/// Receives answers from the worker until `n` arrived or 10 s passed.
void receive_answers(caf::scoped_actor& self, answers& out, size_t n) {
  bool timed_out = false;
  while (out.order.size() < n && !timed_out) {
    self->receive(
        [&](done_atom, uint64_t id, matrix& m) {
          out.order.push_back(id);
          out.done.emplace(id, std::move(m));
        },
        [&](fail_atom, uint64_t id, caf::error& err) {
          out.order.push_back(id);
          out.failed.emplace(id, std::move(err));
        },
        caf::after(10s) >> [&] { timed_out = true; });
  }
}

/// True if a further answer arrives within `wait`.
bool another_answer(caf::scoped_actor& self, std::chrono::milliseconds wait) {
  bool got = false;
  self->receive([&](done_atom, uint64_t, matrix&) { got = true; },
                [&](fail_atom, uint64_t, caf::error&) { got = true; },
                caf::after(wait) >> [] {});
  return got;
}

}  // namespace

TEST_CASE_METHOD(system_fixture,
                 "inline and compute-thread chunks give every job its own rows, once",
                 "[worker][compute-thread]") {
  // 20 us per text and 100 us inline: chunks of up to 5 texts run inline,
  // longer ones (up to 8) on the compute thread, with the next one queued.
  spawn(8, 100us, 20us);
  caf::scoped_actor self{sys};
  std::map<uint64_t, std::vector<std::string>> sent;
  for (uint64_t id = 1; id <= 300; ++id) {
    std::vector<std::string> texts;
    auto n = 1 + (id * 7) % 13;
    for (size_t i = 0; i < n; ++i)
      texts.push_back(
          std::string(1 + (id + i) % 9, static_cast<char>('a' + (id + i) % 26)));
    sent[id] = texts;
    self->send(worker, work_atom::value,
               make_job(id, texts, id % 3 == 0 ? lane::batch : lane::embed));
  }
  answers got;
  receive_answers(self, got, sent.size());
  REQUIRE(got.count() == sent.size());
  CHECK(got.failed.empty());
  for (auto& [id, texts] : sent) {
    INFO("job " << id);
    auto& m = got.done.at(id);
    REQUIRE(m.rows == texts.size());
    REQUIRE(m.values.size() == 2 * texts.size());
    for (size_t i = 0; i < texts.size(); ++i) {
      CHECK(m.values[2 * i] == static_cast<float>(texts[i].size()));
      CHECK(m.values[2 * i + 1] == static_cast<float>(texts[i][0]));
    }
  }
  size_t short_calls = 0, long_calls = 0;
  for (auto& call : model->calls())
    (call.size() <= 5 ? short_calls : long_calls) += 1;
  CHECK(short_calls > 0);
  CHECK(long_calls > 0);
  CHECK_FALSE(another_answer(self, 50ms));
}

TEST_CASE_METHOD(system_fixture,
                 "an embed waits behind at most the chunk being computed, and pings "
                 "wait for it",
                 "[worker][compute-thread][heartbeat]") {
  spawn(4, caf::timespan{0});
  caf::scoped_actor self{sys};
  self->send(worker, work_atom::value,
             make_job(1, {"hold", "b1", "b2", "b3", "b4", "b5", "b6", "b7", "b8", "b9"},
                      lane::batch));
  REQUIRE(model->wait_holding());
  // The first chunk is being computed; the next one may wait behind it.
  self->send(worker, work_atom::value, make_job(2, {"embed"}, lane::embed));
  self->send(worker, ping_atom::value, uint64_t{5});
  bool early_pong = false;
  self->receive([&](pong_atom, uint64_t, worker_report&) { early_pong = true; },
                caf::after(100ms) >> [] {});
  CHECK_FALSE(early_pong);  // a chunk is computing: no pong until it is back
  model->open();
  bool pong = false;
  self->receive([&](pong_atom, uint64_t seq, worker_report&) { pong = seq == 5; },
                caf::after(10s) >> [] {});
  CHECK(pong);
  answers got;
  receive_answers(self, got, 2);
  REQUIRE(got.count() == 2);
  CHECK(got.order == std::vector<uint64_t>{2, 1});
  auto calls = model->calls();
  REQUIRE(calls.size() >= 2);
  CHECK(calls[0] == std::vector<std::string>{"hold", "b1", "b2", "b3"});
  CHECK(calls[1].front() == "embed");
  REQUIRE(got.done.count(1) == 1);
  auto& batch = got.done.at(1);
  REQUIRE(batch.rows == 10);
  CHECK(batch.values[2 * 9] == 2.0f);  // "b9"
}

TEST_CASE_METHOD(system_fixture,
                 "a failed chunk fails its jobs once, and the chunk queued behind "
                 "it answers the rest",
                 "[worker][compute-thread]") {
  spawn(4, caf::timespan{0});
  caf::scoped_actor self{sys};
  // Job 1 spans two chunks and fails in the first; job 2 follows in the second.
  self->send(worker, work_atom::value,
             make_job(1, {"hold", "boom", "c", "d", "e", "f"}, lane::batch));
  REQUIRE(model->wait_holding());
  self->send(worker, work_atom::value, make_job(2, {"g", "h"}, lane::batch));
  model->open();
  answers got;
  receive_answers(self, got, 2);
  REQUIRE(got.count() == 2);
  REQUIRE(got.failed.count(1) == 1);
  CHECK(pool_code(got.failed.at(1)) == pool_errc::worker_failed);
  REQUIRE(got.done.count(2) == 1);
  CHECK(got.done.at(2).rows == 2);
  CHECK(got.done.at(2).values == std::vector<float>{1, 'g', 1, 'h'});
  CHECK_FALSE(another_answer(self, 50ms));
}
