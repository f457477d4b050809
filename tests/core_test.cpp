// The pool's rules without an actor system: the ledger, the worker slots and
// scaling are plain objects here, time is a time point the test passes in
// (no clock is read, nothing sleeps), and every decision is a value to check.
#include <catch2/catch.hpp>

#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <variant>

#include "core/ledger.hpp"
#include "core/scaling.hpp"
#include "core/slots.hpp"
#include "memory_budget.hpp"
#include "pool/error.hpp"

using namespace pool;
using namespace pool::detail;
using namespace pool::detail::core;
using namespace std::chrono_literals;

namespace {

/// Any fixed instant: the rules only compare time points they are given.
const time_point t0 = time_point{} + 1h;

pool_section test_pool() {
  pool_section p;
  p.embed_queue_capacity = 2;
  p.batch_queue_capacity = 1;
  p.pending_capacity = 4;
  p.request_timeout = 1s;
  p.max_attempts = 2;
  p.restart_backoff = 100ms;
  p.restart_backoff_max = 1s;
  p.max_restarts = 5;
  p.restart_window = 60s;
  p.max_abandoned = 2;
  return p;
}

heartbeat_section test_heartbeat() {
  heartbeat_section h;
  h.interval = 1s;
  h.timeout = 5s;
  return h;
}

/// A model's core: `workers` local workers started at t0.
struct core_fixture {
  explicit core_fixture(pool_section p = test_pool(), uint32_t workers = 2,
                        uint64_t memory_limit = 0, uint64_t bytes_limit = 0)
      : pool(p),
        memory(std::make_shared<memory_budget>(memory_limit)),
        bytes(std::make_shared<byte_budget>(bytes_limit)),
        slots(pool, test_heartbeat(), memory, 100, 0, 42),
        book(pool, bytes) {
    for (uint32_t i = 0; i < workers; ++i)
      slots.started(*slots.add_local(true), t0);
  }

  /// Admits an embed (or batch) request of one text; `charged` bytes are
  /// taken from the byte budget first, as the gateway does.
  admission admit(time_point now, lane ln = lane::embed, uint64_t charged = 0) {
    REQUIRE(bytes->try_take(charged));
    request r;
    r.ln = ln;
    r.texts = shared_texts{{"some text"}};
    r.ticket = ++tickets;
    r.charged = charged;
    return book.admit(std::move(r), slots, now);
  }

  dispatch admit_dispatched(time_point now, lane ln = lane::embed, uint64_t charged = 0) {
    auto a = admit(now, ln, charged);
    REQUIRE(std::holds_alternative<dispatch>(a));
    return std::get<dispatch>(a);
  }

  pool_section pool;
  std::shared_ptr<memory_budget> memory;
  std::shared_ptr<byte_budget> bytes;
  slot_table slots;
  ledger book;
  uint64_t tickets = 0;
};

std::string code_of(const caf::error& err) {
  auto code = pool_code(err);
  return code ? to_string(*code) : "none";
}

template <class T, class V>
const T& as(const V& v) {
  REQUIRE(std::holds_alternative<T>(v));
  return std::get<T>(v);
}

}  // namespace

// -- slots: credits and ties ------------------------------------------------------

TEST_CASE("the worker with the most credits left gets the next job", "[core][slots]") {
  core_fixture f;
  auto first = f.admit_dispatched(t0);
  CHECK(first.slot == 0);
  CHECK(f.slots[0].credits[0] == 1);
  // Slot 1 has more credits now; then both have one and the tie goes on
  // round-robin from the slot after the last pick.
  CHECK(f.admit_dispatched(t0).slot == 1);
  CHECK(f.admit_dispatched(t0).slot == 0);
  CHECK(f.admit_dispatched(t0).slot == 1);
  CHECK(f.slots[0].credits[0] == 0);
  CHECK(f.slots[1].credits[0] == 0);
  // Embed credits are spent; the batch lane has its own.
  CHECK(f.slots.pick(lane::embed) == nullptr);
  CHECK(f.admit_dispatched(t0, lane::batch).job.lane == 1);
}

TEST_CASE("ties in credits go to the smallest reported queue depth, then round-robin",
          "[core][slots]") {
  core_fixture f{test_pool(), 3};
  f.slots[0].report.queue_depth = 5;
  f.slots[1].report.queue_depth = 2;
  f.slots[2].report.queue_depth = 2;
  CHECK(f.slots.pick(lane::embed)->id == 1);  // depth 2, first from the cursor
  CHECK(f.slots.pick(lane::embed)->id == 2);  // the cursor moved past slot 1
  CHECK(f.slots.pick(lane::embed)->id == 1);  // from slot 0: 1 before 2
  f.slots[1].report.queue_depth = 0;
  f.slots[2].report.queue_depth = 0;
  f.slots[0].report.queue_depth = 0;
  // Equal everything: strict round-robin.
  std::vector<uint32_t> picked;
  for (int i = 0; i < 6; ++i)
    picked.push_back(f.slots.pick(lane::embed)->id);
  CHECK(picked == std::vector<uint32_t>{2, 0, 1, 2, 0, 1});
}

TEST_CASE("only ready workers with credit are picked", "[core][slots]") {
  core_fixture f{test_pool(), 3};
  f.slots[0].state = worker_state::restarting;
  f.slots[1].credits[0] = 0;
  CHECK(f.slots.pick(lane::embed)->id == 2);
  f.slots[2].state = worker_state::leaving;
  CHECK(f.slots.pick(lane::embed) == nullptr);
  CHECK(f.slots.pick(lane::batch)->id == 1);
}

TEST_CASE("a worker's answer returns its credit and answers the request",
          "[core][ledger]") {
  core_fixture f{test_pool(), 1};
  auto d = f.admit_dispatched(t0, lane::embed, 40);
  CHECK(d.first);
  CHECK(d.job.time_left_ns == std::chrono::nanoseconds(1s).count());
  CHECK_FALSE(d.job.solo);
  CHECK(f.slots[0].credits[0] == 1);
  CHECK(f.slots[0].jobs.count(d.job.id) == 1);
  CHECK(f.bytes->used == 40);
  REQUIRE(f.book.holder(d.job.id) == 0u);
  auto out = f.book.job_answered(d.job.id, true, caf::error{}, f.slots, t0 + 10ms);
  REQUIRE(out.done);
  CHECK(out.done->completed);
  CHECK(out.done->req.ticket == 1);
  CHECK(f.slots[0].credits[0] == 2);
  CHECK(f.slots[0].jobs.empty());
  CHECK(f.slots[0].idle_since == t0 + 10ms);
  CHECK(f.slots[0].completed == 1);
  CHECK(f.bytes->used == 0);
  auto l = f.book.counters();
  CHECK(l.accepted == 1);
  CHECK(l.completed == 1);
  CHECK(l.in_flight == 0);
  CHECK(f.book.balanced());
  CHECK_FALSE(f.book.holder(d.job.id));
}

TEST_CASE(
    "a list of embeds counts as its texts in credits, the ledger and the queue depth",
    "[core][ledger][scaling]") {
  auto p = test_pool();
  p.embed_queue_capacity = 4;
  p.pending_capacity = 4;
  core_fixture f{p, 1};
  auto list = [&](std::vector<std::string> texts) {
    request r;
    r.ln = lane::embed;
    r.texts = shared_texts{std::move(texts)};
    r.ticket = ++f.tickets;
    return f.book.admit(std::move(r), f.slots, t0);
  };
  auto d = as<dispatch>(list({"one", "two", "three"}));
  CHECK(f.slots[0].credits[0] == 1);  // three of the lane's four credits
  auto l = f.book.counters();
  CHECK(l.accepted == 3);
  CHECK(l.in_flight == 3);
  CHECK(f.book.balanced());
  CHECK(scaler::queue_depth(f.book, f.slots) == 3);
  // A list needs as many credits as it has texts: two do not fit in one.
  CHECK(std::holds_alternative<parked>(list({"four", "five"})));
  CHECK(f.book.pending() == 2);
  // A single embed behind it waits too (oldest first), and parking stops at
  // pool.pending-capacity embeds.
  CHECK(std::holds_alternative<parked>(f.admit(t0)));
  CHECK(std::holds_alternative<parked>(list({"six", "seven"})));
  CHECK(f.book.pending() == 5);
  auto shed = as<refused>(f.admit(t0));
  CHECK(code_of(shed.error) == "overloaded");
  CHECK(f.book.counters().rejected == 1);
  CHECK(scaler::queue_depth(f.book, f.slots) == 5 + 3);
  // The list's answer gives its three credits back: the parked list of two
  // and the single embed go out.
  auto out = f.book.job_answered(d.job.id, true, caf::error{}, f.slots, t0 + 1ms);
  REQUIRE(out.done);
  CHECK(f.book.counters().completed == 3);
  auto sent = f.book.pump(f.slots, t0 + 1ms);
  REQUIRE(sent.size() == 2);
  CHECK(sent[0].job.texts.size() == 2);
  CHECK(sent[1].job.texts.size() == 1);
  CHECK(f.slots[0].credits[0] == 1);
  CHECK(f.book.pending() == 2);
  CHECK(f.book.balanced());
  // A list longer than the lane takes all of an idle worker's credits.
  CHECK(f.slots.credits_for(lane::embed, 64) == 4);
  CHECK(f.slots.credits_for(lane::batch, 64) == 1);
  // Refused before admission: each text counts as a rejected request.
  f.book.refuse(0, request_weight(lane::embed, 5));
  CHECK(f.book.counters().rejected == 6);
}

// -- admission -------------------------------------------------------------------------

TEST_CASE("without credit a request is parked, then dispatched oldest first",
          "[core][ledger]") {
  core_fixture f{test_pool(), 1};
  auto a = f.admit_dispatched(t0);
  auto b = f.admit_dispatched(t0);
  CHECK(std::holds_alternative<parked>(f.admit(t0 + 1ms)));
  CHECK(std::holds_alternative<parked>(f.admit(t0 + 2ms)));
  CHECK(f.book.pending() == 2);
  CHECK(f.book.pump(f.slots, t0 + 3ms).empty());  // still no credit
  f.book.job_answered(a.job.id, true, {}, f.slots, t0 + 4ms);
  auto sent = f.book.pump(f.slots, t0 + 4ms);
  REQUIRE(sent.size() == 1);
  CHECK(sent[0].first);
  CHECK(sent[0].accepted_at == t0 + 1ms);  // it waited since then
  CHECK(f.book.pending() == 1);
  f.book.job_answered(b.job.id, true, {}, f.slots, t0 + 5ms);
  sent = f.book.pump(f.slots, t0 + 5ms);
  REQUIRE(sent.size() == 1);
  CHECK(sent[0].accepted_at == t0 + 2ms);
  CHECK(f.book.balanced());
}

TEST_CASE("a full pending queue or policy reject sheds with a retry hint",
          "[core][ledger]") {
  auto p = test_pool();
  p.pending_capacity = 1;
  core_fixture f{p, 1, 0, 1000};
  f.admit_dispatched(t0);
  f.admit_dispatched(t0);
  CHECK(std::holds_alternative<parked>(f.admit(t0)));
  auto shed = as<refused>(f.admit(t0, lane::embed, 100));
  CHECK(code_of(shed.error) == "overloaded");
  CHECK(error_message(shed.error) ==
        "no worker credit available (pending queue full); retry after 100ms");
  CHECK(shed.overload_began);
  CHECK_FALSE(as<refused>(f.admit(t0 + 1ms)).overload_began);  // the same episode
  CHECK(f.bytes->used == 0);                                   // given back
  auto l = f.book.counters();
  CHECK(l.rejected == 2);
  CHECK(l.accepted == 3);
  // Shed requests are reported once a second; a quiet second ends it.
  auto r = f.book.overload_tick(t0 + 500ms);
  CHECK_FALSE(r.shed);
  CHECK_FALSE(r.ended_total);
  r = f.book.overload_tick(t0 + 1s);
  CHECK(r.shed == 2u);
  CHECK(r.window == 1s);
  CHECK_FALSE(r.ended_total);
  r = f.book.overload_tick(t0 + 1001ms);
  CHECK(r.ended_total == 2u);
  CHECK(as<refused>(f.admit(t0 + 2s)).overload_began);  // a new episode

  p.policy = overload_policy::reject;
  core_fixture g{p, 1};
  g.admit_dispatched(t0);
  g.admit_dispatched(t0);
  CHECK(error_message(as<refused>(g.admit(t0)).error) ==
        "no worker credit available (policy reject); retry after 100ms");
  CHECK(g.book.pending() == 0);
}

TEST_CASE("without a live worker a request is refused unavailable", "[core][ledger]") {
  core_fixture f{test_pool(), 0};
  auto r = as<refused>(f.admit(t0));
  CHECK(code_of(r.error) == "unavailable");
  CHECK(error_message(r.error) == "no worker available");
  CHECK_FALSE(r.overload_began);
  CHECK(f.book.counters().rejected == 1);
}

// -- deadlines -------------------------------------------------------------------------

TEST_CASE(
    "parked and dispatched requests are answered deadline_exceeded at their "
    "deadline",
    "[core][ledger]") {
  core_fixture f{test_pool(), 1, 0, 1000};
  auto held = f.admit_dispatched(t0, lane::batch, 100);
  CHECK(std::holds_alternative<parked>(f.admit(t0 + 100ms, lane::batch, 200)));
  CHECK(f.book.expire(t0 + 999ms).empty());
  auto out = f.book.expire(t0 + 1s);
  REQUIRE(out.size() == 1);  // the dispatched one; the parked one has 100 ms left
  CHECK(out[0].req.ticket == 1);
  CHECK(code_of(out[0].error) == "deadline_exceeded");
  CHECK(error_message(out[0].error) ==
        "request not answered within pool.request-timeout (1000ms)");
  // Its worker still holds the job: the credit and the bytes stay taken.
  CHECK(f.slots[0].credits[1] == 0);
  CHECK(f.bytes->used == 300);
  out = f.book.expire(t0 + 1100ms);
  REQUIRE(out.size() == 1);
  CHECK(out[0].req.ticket == 2);
  CHECK(f.bytes->used == 100);
  CHECK(f.book.counters().expired == 2);
  CHECK(f.book.balanced());
  // The late result answers nothing; now the credit and the bytes come back.
  auto late = f.book.job_answered(held.job.id, true, {}, f.slots, t0 + 2s);
  CHECK_FALSE(late.done);
  CHECK(f.slots[0].credits[1] == 1);
  CHECK(f.bytes->used == 0);
  CHECK(f.book.counters().completed == 0);
}

// -- retries ---------------------------------------------------------------------------

TEST_CASE("a failed job is retried, then answered with the failure after max-attempts",
          "[core][ledger]") {
  core_fixture f{test_pool(), 1};
  auto d = f.admit_dispatched(t0);
  auto out = f.book.job_answered(
      d.job.id, false, make_error(pool_errc::worker_failed, "boom"), f.slots, t0 + 1ms);
  CHECK_FALSE(out.done);
  REQUIRE(out.retried);
  CHECK(out.retried->attempts == 1);
  CHECK(out.retried->reason == "worker_failed: boom");
  CHECK(f.slots[0].failed == 1);
  auto again = f.book.pump(f.slots, t0 + 1ms);
  REQUIRE(again.size() == 1);
  CHECK(again[0].job.solo);  // a retry runs alone
  CHECK_FALSE(again[0].first);
  out = f.book.job_answered(again[0].job.id, false,
                            make_error(pool_errc::worker_failed, "boom again"), f.slots,
                            t0 + 2ms);
  REQUIRE(out.done);
  CHECK(error_message(out.done->error) == "boom again");
  CHECK(f.book.counters().failed == 1);
  CHECK(f.book.balanced());
}

TEST_CASE("input refused by the worker and expiry are never retried", "[core][ledger]") {
  core_fixture f{test_pool(), 1};
  auto d = f.admit_dispatched(t0);
  auto out = f.book.job_answered(d.job.id, false, make_error(pool_errc::too_large, "big"),
                                 f.slots, t0);
  REQUIRE(out.done);
  CHECK(f.slots[0].failed == 0);  // not the worker's fault
  d = f.admit_dispatched(t0);
  out = f.book.job_answered(
      d.job.id, false, make_error(pool_errc::deadline_exceeded, "late"), f.slots, t0);
  REQUIRE(out.done);
  auto l = f.book.counters();
  CHECK(l.failed == 1);
  CHECK(l.expired == 1);
}

TEST_CASE(
    "a dead worker's jobs are retried oldest first before new work, each alone on "
    "its worker, then fail with worker_failed",
    "[core][ledger]") {
  core_fixture f{test_pool(), 1};
  f.admit_dispatched(t0);
  f.admit_dispatched(t0);
  CHECK(std::holds_alternative<parked>(f.admit(t0)));  // ticket 3 waits
  auto out = f.book.requeue(f.slots[0], "worker died: killed");
  CHECK(out.answers.empty());
  REQUIRE(out.retries.size() == 2);
  CHECK(out.retries[0].request < out.retries[1].request);  // oldest first
  CHECK(out.retries[0].reason == "worker died: killed");
  CHECK(f.slots[0].jobs.empty());
  f.slots.started(f.slots[0], t0 + 100ms);  // its replacement
  auto sent = f.book.pump(f.slots, t0 + 100ms);
  // Request 1 went first, alone: the worker gets nothing else until it
  // answers, so 2 (a retry too) and 3 (new) wait, and so does new work.
  REQUIRE(sent.size() == 1);
  CHECK(sent[0].job.solo);
  CHECK(f.book.find(1)->dispatch_id == sent[0].job.id);
  CHECK(f.slots[0].isolating);
  CHECK(f.book.find(2)->dispatch_id == 0);
  CHECK(f.book.find(3)->dispatch_id == 0);
  CHECK(std::holds_alternative<parked>(f.admit(t0 + 100ms)));  // ticket 4
  CHECK(f.book.pump(f.slots, t0 + 100ms).empty());
  CHECK(f.book.pending() == 3);
  // Request 1 breaks this worker too: only it fails, on its second worker.
  out = f.book.requeue(f.slots[0], "worker stuck (no pong within heartbeat.timeout)");
  CHECK(out.retries.empty());
  REQUIRE(out.answers.size() == 1);
  CHECK(out.answers[0].req.ticket == 1);
  CHECK(code_of(out.answers[0].error) == "worker_failed");
  CHECK(error_message(out.answers[0].error) ==
        "request failed on 2 worker(s); last: worker stuck (no pong within "
        "heartbeat.timeout)");
  CHECK_FALSE(f.slots[0].isolating);
  f.slots.started(f.slots[0], t0 + 200ms);
  sent = f.book.pump(f.slots, t0 + 200ms);
  REQUIRE(sent.size() == 1);
  CHECK(f.book.find(2)->dispatch_id == sent[0].job.id);
  // Request 2 succeeds on its second worker; then new work flows again,
  // not isolated.
  auto done =
      f.book.job_answered(sent[0].job.id, true, caf::error{}, f.slots, t0 + 300ms);
  REQUIRE(done.done);
  CHECK(done.done->req.ticket == 2);
  CHECK_FALSE(f.slots[0].isolating);
  sent = f.book.pump(f.slots, t0 + 300ms);
  REQUIRE(sent.size() == 2);  // 3 and 4, both at once (embed-queue-capacity 2)
  CHECK_FALSE(sent[0].job.solo);
  CHECK_FALSE(f.slots[0].isolating);
  CHECK(f.book.counters().failed == 1);
  CHECK(f.book.counters().completed == 1);
  CHECK(f.book.balanced());
}

TEST_CASE("a retry waits for an idle worker while new work of the other lane parks",
          "[core][ledger]") {
  core_fixture f{test_pool(), 2};
  auto a = f.admit_dispatched(t0);  // to one worker
  auto b = f.admit_dispatched(t0);  // to the other (most credits)
  REQUIRE(a.slot != b.slot);
  auto out = f.book.requeue(f.slots[a.slot], "worker died: killed");
  REQUIRE(out.retries.size() == 1);
  f.slots.schedule_restart(f.slots[a.slot], t0);
  // The dead worker is not back yet and the other one holds a job: the
  // retry waits, and a batch request, whose lane is empty, parks behind it
  // instead of going to the busy worker.
  CHECK(f.book.pump(f.slots, t0).empty());
  CHECK(std::holds_alternative<parked>(f.admit(t0, lane::batch)));
  // The busy worker answers: the retry goes to it, alone, and the batch
  // request waits for another worker.
  f.book.job_answered(b.job.id, true, caf::error{}, f.slots, t0 + 10ms);
  auto sent = f.book.pump(f.slots, t0 + 10ms);
  REQUIRE(sent.size() == 1);
  CHECK(sent[0].slot == b.slot);
  CHECK(sent[0].job.solo);
  CHECK(f.slots[b.slot].isolating);
  // The replacement starts: the batch request goes there.
  f.slots.started(f.slots[a.slot], t0 + 100ms);
  sent = f.book.pump(f.slots, t0 + 100ms);
  REQUIRE(sent.size() == 1);
  CHECK(sent[0].slot == a.slot);
  CHECK(sent[0].job.lane == static_cast<uint8_t>(lane::batch));
  CHECK(f.book.balanced());
}

TEST_CASE(
    "a waiting retry keeps one busy worker from new work while the others take it, "
    "under policy reject too",
    "[core][ledger]") {
  auto p = test_pool();
  p.policy = overload_policy::reject;
  p.embed_queue_capacity = 3;
  core_fixture f{p, 3};
  for (int i = 0; i < 3; ++i)
    f.admit_dispatched(t0);
  for (auto& s : f.slots.all())
    REQUIRE(s.jobs.size() == 1);  // one each: the most credits left
  // One worker (x) takes a second job; of the other two, one dies (dead)
  // and one is left with a single job (y).
  uint32_t x = f.admit_dispatched(t0).slot;
  uint32_t dead = x == 0 ? 1 : 0;
  uint32_t y = 3 - x - dead;
  auto out = f.book.requeue(f.slots[dead], "worker died: killed");
  REQUIRE(out.retries.size() == 1);
  f.slots.schedule_restart(f.slots[dead], t0);
  // No worker is idle: the retry waits, and the worker with the fewest jobs
  // (y) is kept for it.
  CHECK(f.book.pump(f.slots, t0).empty());
  CHECK(f.slots[y].kept_for_retry);
  CHECK_FALSE(f.slots[x].kept_for_retry);
  // New work is not shed meanwhile: it goes to the worker that is not kept.
  auto more = f.admit(t0 + 1ms);
  REQUIRE(std::holds_alternative<dispatch>(more));
  CHECK(std::get<dispatch>(more).slot == x);
  // x's credits are all taken now, and the kept worker still takes nothing:
  // the next request is shed (policy reject).
  CHECK(std::holds_alternative<refused>(f.admit(t0 + 1ms)));
  REQUIRE(f.slots[y].jobs.size() == 1);
  // The kept worker runs dry: the retry goes to it, alone, and no worker is
  // kept any more.
  auto y_job = *f.slots[y].jobs.begin();
  f.book.job_answered(y_job, true, caf::error{}, f.slots, t0 + 10ms);
  auto sent = f.book.pump(f.slots, t0 + 10ms);
  REQUIRE(sent.size() == 1);
  CHECK(sent[0].slot == y);
  CHECK(sent[0].job.solo);
  CHECK(f.slots[y].isolating);
  for (auto& s : f.slots.all())
    CHECK_FALSE(s.kept_for_retry);
  CHECK(f.book.balanced());
}

// -- restarts
// ----------------------------------------------------------------------------

TEST_CASE(
    "restart backoff doubles from 100 ms, is capped, and gives up after "
    "max-restarts in the window",
    "[core][slots]") {
  core_fixture f{test_pool(), 1, 1000};
  auto& s = f.slots[0];
  CHECK(f.memory->used() == 100);
  std::vector<int64_t> backoffs;
  for (int i = 0; i < 5; ++i) {
    auto r = as<restart>(f.slots.schedule_restart(s, t0 + std::chrono::seconds(i)));
    backoffs.push_back(to_ms(r.backoff));
    CHECK(r.recent_restarts == static_cast<uint64_t>(i + 1));
    CHECK(s.state == worker_state::restarting);
    CHECK(f.slots.restart_due(0, r.generation, false));
    CHECK_FALSE(f.slots.restart_due(0, r.generation, true));  // not while draining
    CHECK_FALSE(f.slots.restart_due(0, r.generation - 1, false));
    f.slots.restarted(s, t0 + std::chrono::seconds(i) + r.backoff);
  }
  CHECK(backoffs == std::vector<int64_t>{100, 200, 400, 800, 1000});
  CHECK(f.slots.restarts_total() == 5);
  CHECK(s.restarts == 5);
  CHECK(s.state == worker_state::ready);
  // A sixth death within pool.restart-window gives the slot up.
  auto g = as<give_up>(f.slots.schedule_restart(s, t0 + 59s));
  CHECK(std::string{g.reason} == "restart intensity exceeded");
  CHECK(s.state == worker_state::given_up);
  CHECK(f.slots.given_up() == 1);
  CHECK(f.memory->used() == 0);
  CHECK_FALSE(f.slots.any_live());
}

TEST_CASE(
    "the model's weights and its local workers hold the memory budget while the "
    "table lives",
    "[core][slots]") {
  pool_section p = test_pool();
  auto memory = std::make_shared<memory_budget>(1250);
  {
    slot_table slots{p, test_heartbeat(), memory, 100, 1000, 7};
    CHECK(memory->used() == 1000);  // the weights, whatever the limit
    REQUIRE(slots.add_local(false) != nullptr);
    REQUIRE(slots.add_local(false) != nullptr);
    CHECK(slots.add_local(false) == nullptr);  // 1300 would pass 1250
    CHECK(slots.size() == 2);
    auto no = slots.refusal();
    CHECK(no.needed_bytes == 100);
    CHECK(no.used_bytes == 1200);
    CHECK(no.budget_bytes == 1250);
    REQUIRE(slots.add_local(true) != nullptr);  // a minimum worker: forced
    CHECK(memory->used() == 1300);
    slots.evict(slots[0]);
    CHECK(memory->used() == 1200);
  }
  CHECK(memory->used() == 0);  // all given back
}

TEST_CASE("restarts older than the window are forgotten", "[core][slots]") {
  core_fixture f{test_pool(), 1};
  auto& s = f.slots[0];
  CHECK(to_ms(as<restart>(f.slots.schedule_restart(s, t0)).backoff) == 100);
  CHECK(to_ms(as<restart>(f.slots.schedule_restart(s, t0 + 1s)).backoff) == 200);
  // The first is 60 s old (not older than the window), the second not yet.
  CHECK(to_ms(as<restart>(f.slots.schedule_restart(s, t0 + 60s)).backoff) == 400);
  auto r = as<restart>(f.slots.schedule_restart(s, t0 + 60s + 1ms));
  CHECK(r.recent_restarts == 3);  // the first fell out
  CHECK(to_ms(r.backoff) == 400);
  CHECK(to_ms(as<restart>(f.slots.schedule_restart(s, t0 + 200s)).backoff) == 100);
}

// -- heartbeats
// --------------------------------------------------------------------------

TEST_CASE(
    "a worker silent past heartbeat.interval is missed once, past "
    "heartbeat.timeout stuck",
    "[core][slots]") {
  core_fixture f{test_pool(), 1};
  auto& s = f.slots[0];
  auto ping = as<send_ping>(f.slots.heartbeat(s, t0));  // at the first tick
  CHECK(s.ping_outstanding);
  CHECK(std::holds_alternative<std::monostate>(f.slots.heartbeat(s, t0 + 1s)));
  CHECK(to_ms(as<heartbeat_missed>(f.slots.heartbeat(s, t0 + 1001ms)).silent) == 1001);
  CHECK(std::holds_alternative<std::monostate>(f.slots.heartbeat(s, t0 + 3s)));
  CHECK(std::holds_alternative<std::monostate>(f.slots.heartbeat(s, t0 + 5s)));
  CHECK(to_ms(as<worker_stuck>(f.slots.heartbeat(s, t0 + 5001ms)).silent) == 5001);
  // A pong for another ping is ignored; the outstanding one's is taken.
  CHECK(f.slots.pong(s, ping.seq + 1, {}, t0 + 2s) == pong_result::ignored);
  CHECK(f.slots.pong(s, ping.seq, worker_report{7, 0, 0}, t0 + 2s) ==
        pong_result::recovered);
  CHECK(s.report.queue_depth == 7);
  CHECK(s.last_pong == t0 + 2s);
  CHECK(f.slots.pong(s, ping.seq, {}, t0 + 2s) == pong_result::ignored);  // once
  // The next ping goes a heartbeat.interval after the previous one was sent.
  CHECK(std::holds_alternative<std::monostate>(f.slots.heartbeat(s, t0 + 999ms)));
  auto next = as<send_ping>(f.slots.heartbeat(s, t0 + 2s));
  CHECK(f.slots.pong(s, next.seq, {}, t0 + 2100ms) == pong_result::taken);
}

TEST_CASE(
    "a stuck local worker is replaced until pool.max-abandoned, a stuck lent one "
    "is lost",
    "[core][slots]") {
  core_fixture f{test_pool(), 3};
  CHECK(f.slots.stuck(f.slots[0], t0, false) == stuck_fate::replace);
  CHECK(f.slots[0].state == worker_state::stuck);
  CHECK(f.slots.any_live());
  CHECK(f.slots.stuck(f.slots[1], t0, true) == stuck_fate::stopped);
  CHECK(f.slots[1].state == worker_state::stopped);
  CHECK(f.slots.stuck(f.slots[2], t0, false) == stuck_fate::give_up);  // 3 > 2
  CHECK(f.slots[2].state == worker_state::given_up);
  CHECK(f.slots.abandoned() == 3);
  auto node = caf::node_id{};
  auto ids = f.slots.plan_join(node, "w1", 1, 64);
  REQUIRE(ids);
  auto& lent = f.slots[ids->front()];
  f.slots.attach(lent, t0);
  CHECK(f.slots.stuck(lent, t0 + 1s, false) == stuck_fate::lost);
  CHECK(lent.state == worker_state::lost);
  CHECK(f.slots.abandoned() == 3);
  auto freed = f.slots.expire_lost(t0 + 60s, 60s);
  CHECK(freed.empty());
  freed = f.slots.expire_lost(t0 + 61s, 60s);
  REQUIRE(freed.size() == 1);
  CHECK(freed[0].node == "w1");
  CHECK(lent.state == worker_state::freed);
}

// -- lent workers
// ------------------------------------------------------------------------

TEST_CASE("a join is refused whole past cluster.max-workers-per-node", "[core][slots]") {
  core_fixture f{test_pool(), 1};
  caf::node_id node;
  CHECK(code_of(f.slots.check_join_name(node, "local")) == "invalid_input");
  CHECK(code_of(f.slots.check_join_name(node, "")) == "invalid_input");
  CHECK(!f.slots.check_join_name(node, "w1"));
  auto ids = f.slots.plan_join(node, "w1", 2, 2);
  REQUIRE(ids);
  CHECK(*ids == std::vector<uint32_t>{1, 2});
  for (auto id : *ids)
    f.slots.attach(f.slots[id], t0);
  auto more = f.slots.plan_join(node, "w1", 1, 2);
  REQUIRE_FALSE(more);
  CHECK(error_message(more.error()) ==
        "join: node \"w1\" would lend 3 workers; cluster.max-workers-per-node is 2");
  CHECK(f.slots.size() == 3);
  CHECK(f.slots.leave(node, "w1"));
  CHECK_FALSE(f.slots.leave(node, "w2"));
  CHECK(f.slots[1].state == worker_state::leaving);
  f.slots[1].jobs.insert(99);
  CHECK(f.slots.leaving_busy("w1"));
  f.slots[1].jobs.clear();
  CHECK_FALSE(f.slots.leaving_busy("w1"));
  CHECK(f.slots.mark_left("w1") == std::vector<uint32_t>{1, 2});
  // A node of that name joining again reuses the left slots.
  ids = f.slots.plan_join(node, "w1", 1, 2);
  REQUIRE(ids);
  CHECK(*ids == std::vector<uint32_t>{1});
}

// -- scaling
// -----------------------------------------------------------------------------

namespace {

pool_section scaling_pool() {
  auto p = test_pool();
  p.embed_queue_capacity = 1;
  p.batch_queue_capacity = 1;
  p.pending_capacity = 100;
  p.request_timeout = 60s;
  p.min_workers = 1;
  p.max_workers = 3;
  p.scale_up_queue_depth = 2;
  p.scale_up_window = 500ms;
  p.idle_cooldown = 10s;
  return p;
}

}  // namespace

TEST_CASE("a queue depth above the threshold for a window adds one worker",
          "[core][scaling]") {
  auto p = scaling_pool();
  core_fixture f{p, 1};
  scaler sc{p, worker_limits{1, 1, 3}};
  for (int i = 0; i < 10; ++i)
    f.admit(t0);
  CHECK(scaler::queue_depth(f.book, f.slots) == 10);  // 9 parked + 1 held
  CHECK(std::holds_alternative<std::monostate>(sc.tick(t0, f.book, f.slots, false)));
  CHECK(std::holds_alternative<std::monostate>(
      sc.tick(t0 + 499ms, f.book, f.slots, false)));
  auto add = as<scale_add>(sc.tick(t0 + 500ms, f.book, f.slots, false));
  CHECK(add.slot == 1);
  CHECK(add.depth == 10);
  CHECK(add.threshold == 2);
  CHECK(add.workers == 2);
  REQUIRE(f.slots.size() == 2);
  f.slots.started(f.slots[add.slot], t0 + 500ms);
  CHECK(f.slots.spawned() == 2);
  CHECK(f.book.pump(f.slots, t0 + 500ms).size() == 1);
  // The next worker needs a window of its own.
  CHECK(std::holds_alternative<std::monostate>(
      sc.tick(t0 + 999ms, f.book, f.slots, false)));
  add = as<scale_add>(sc.tick(t0 + 1s, f.book, f.slots, false));
  CHECK(add.threshold == 4);  // two ready workers
  f.slots.started(f.slots[add.slot], t0 + 1s);
  f.book.pump(f.slots, t0 + 1s);
  // At pool.max-workers: refused, reported once per episode.
  auto refused = as<scale_refused>(sc.tick(t0 + 1500ms, f.book, f.slots, false));
  CHECK(refused.reason == scale_refused::why::max_workers);
  CHECK(refused.depth == 10);
  CHECK(refused.threshold == 6);
  CHECK(refused.workers == 3);
  CHECK(std::holds_alternative<std::monostate>(sc.tick(t0 + 2s, f.book, f.slots, false)));
  // Not while draining, nor in a fixed-size pool.
  CHECK(std::holds_alternative<std::monostate>(sc.tick(t0 + 5s, f.book, f.slots, true)));
  scaler fixed{p, worker_limits{2, 2, 2}};
  fixed.tick(t0, f.book, f.slots, false);
  CHECK(std::holds_alternative<std::monostate>(
      fixed.tick(t0 + 10s, f.book, f.slots, false)));
}

TEST_CASE("a scale-up past the memory budget is refused once per episode",
          "[core][scaling]") {
  auto p = scaling_pool();
  core_fixture f{p, 1, 150};  // room for one worker of 100 bytes
  scaler sc{p, worker_limits{1, 1, 3}};
  std::vector<dispatch> held;
  for (int i = 0; i < 4; ++i)
    if (auto a = f.admit(t0); std::holds_alternative<dispatch>(a))
      held.push_back(std::get<dispatch>(a));
  sc.tick(t0, f.book, f.slots, false);
  auto refused = as<scale_refused>(sc.tick(t0 + 500ms, f.book, f.slots, false));
  CHECK(refused.reason == scale_refused::why::memory_budget);
  CHECK(refused.budget.needed_bytes == 100);
  CHECK(refused.budget.used_bytes == 100);
  CHECK(refused.budget.budget_bytes == 150);
  CHECK(refused.budget.workers == 1);
  CHECK(f.slots.size() == 1);  // nothing added
  CHECK(std::holds_alternative<std::monostate>(sc.tick(t0 + 1s, f.book, f.slots, false)));
  // The depth falls below the threshold: the episode ends; the next one is
  // reported again.
  for (auto& d : held)
    f.book.job_answered(d.job.id, true, {}, f.slots, t0 + 1100ms);
  for (auto& d : f.book.pump(f.slots, t0 + 1100ms))
    f.book.job_answered(d.job.id, true, {}, f.slots, t0 + 1100ms);
  CHECK(std::holds_alternative<std::monostate>(
      sc.tick(t0 + 1200ms, f.book, f.slots, false)));
  for (int i = 0; i < 4; ++i)
    f.admit(t0 + 1300ms);
  sc.tick(t0 + 1300ms, f.book, f.slots, false);
  CHECK(std::holds_alternative<scale_refused>(sc.tick(t0 + 2s, f.book, f.slots, false)));
}

TEST_CASE(
    "idle workers are evicted after the cooldown, never below the minimum, and "
    "an evicted slot is reused",
    "[core][scaling]") {
  auto p = scaling_pool();
  core_fixture f{p, 3, 1000};
  scaler sc{p, worker_limits{1, 3, 3}};
  auto busy = f.admit_dispatched(t0 + 5s);  // slot 0 holds a job
  CHECK(busy.slot == 0);
  CHECK(sc.evict_idle(t0 + 9s, f.slots, false).empty());
  CHECK(sc.evict_idle(t0 + 20s, f.slots, true).empty());  // not while draining
  auto out = sc.evict_idle(t0 + 10s, f.slots, false);
  REQUIRE(out.size() == 2);  // slots 1 and 2; slot 0 is busy
  CHECK(out[0].slot == 1);
  CHECK(out[0].idle == 10s);
  CHECK(out[0].workers == 2);
  CHECK(out[1].workers == 1);
  CHECK(f.slots[1].state == worker_state::evicted);
  CHECK(f.slots.evicted() == 2);
  CHECK(f.memory->used() == 100);
  f.book.job_answered(busy.job.id, true, {}, f.slots, t0 + 11s);
  CHECK(sc.evict_idle(t0 + 60s, f.slots, false).empty());  // the minimum
  // A scale-up takes the first evicted slot again.
  for (int i = 0; i < 4; ++i)
    f.admit(t0 + 61s);
  sc.tick(t0 + 61s, f.book, f.slots, false);
  auto add = as<scale_add>(sc.tick(t0 + 62s, f.book, f.slots, false));
  CHECK(add.slot == 1);
  CHECK(f.slots.size() == 3);
  CHECK(f.memory->used() == 200);
}

// -- the ledger's invariant
// ----------------------------------------------------------------

TEST_CASE("the ledger balances after every call of a random sequence", "[core][ledger]") {
  auto p = test_pool();
  p.max_attempts = 3;
  p.pending_capacity = 8;
  core_fixture f{p, 3, 0, 1 << 20};
  std::mt19937_64 rng{20261203};
  auto now = t0;
  std::set<uint64_t> answered;  // tickets
  uint64_t answers = 0;
  auto take = [&](const std::vector<answer>& as) {
    for (auto& a : as) {
      CHECK(answered.insert(a.req.ticket).second);  // answered once
      ++answers;
    }
  };
  auto held_jobs = [&] {
    std::vector<uint64_t> ids;
    for (auto& s : f.slots.all())
      ids.insert(ids.end(), s.jobs.begin(), s.jobs.end());
    std::sort(ids.begin(), ids.end());
    return ids;
  };
  auto check = [&] {
    REQUIRE(f.book.balanced());
    auto l = f.book.counters();
    REQUIRE(l.completed + l.failed + l.expired == answers);
    // Every credit is either left or held as a job.
    for (auto& s : f.slots.all())
      if (s.state == worker_state::ready)
        REQUIRE(s.credits[0] + s.credits[1] + s.jobs.size() ==
                p.embed_queue_capacity + p.batch_queue_capacity);
    REQUIRE(f.book.jobs() == held_jobs().size());
  };
  for (int step = 0; step < 5000; ++step) {
    now += std::chrono::milliseconds(rng() % 50);
    switch (rng() % 7) {
      case 0:
      case 1: {
        auto ln = rng() % 3 == 0 ? lane::batch : lane::embed;
        f.admit(now, ln, 1 + rng() % 500);
        break;
      }
      case 2:
      case 3: {  // a worker answers one of its jobs
        auto ids = held_jobs();
        if (ids.empty())
          break;
        auto did = ids[rng() % ids.size()];
        bool ok = rng() % 3 != 0;
        auto err = ok ? caf::error{} : make_error(pool_errc::worker_failed, "x");
        auto out = f.book.job_answered(did, ok, std::move(err), f.slots, now);
        if (out.done)
          take({*out.done});
        take(f.book.expire(now));
        break;
      }
      case 4:
        take(f.book.expire(now));
        break;
      case 5: {  // a worker dies and is restarted at once
        auto& s = f.slots[static_cast<uint32_t>(rng() % f.slots.size())];
        if (s.state != worker_state::ready)
          break;
        auto out = f.book.requeue(s, "worker died");
        take(out.answers);
        f.slots.started(s, now);
        break;
      }
      case 6:
        if (rng() % 50 == 0)
          take(f.book.fail_pending(pool_errc::unavailable, "no worker left"));
        break;
    }
    check();
    for (auto& d : f.book.pump(f.slots, now))
      CHECK(d.job.time_left_ns > 0);
    check();
  }
  auto l = f.book.counters();
  CHECK(l.accepted > 1000);
  CHECK(l.completed > 100);
  CHECK(l.failed > 10);
  CHECK(l.expired > 0);
  CHECK(l.rejected > 0);
  take(f.book.finish());
  f.slots.stop_all();
  CHECK(f.book.balanced());
  CHECK(f.book.counters().in_flight == 0);
  CHECK(f.book.jobs() == 0);
  CHECK(answered.size() == f.book.counters().accepted);
  CHECK(f.bytes->used == 0);  // every byte came back
}
