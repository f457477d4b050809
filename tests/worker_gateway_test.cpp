// Deterministic tests of the worker (micro-batching, pings between chunks,
// real queue depth, fault drills) and the gateway (validation, unexpected
// messages, respawn) on CAF's test coordinator.
#include <catch2/catch.hpp>

#include <mutex>

#include "actor_fixture.hpp"

using namespace pool;
using namespace pool::test;
using namespace std::chrono_literals;

namespace {

/// A 2-dimensional embedder that records the size of every call:
/// row = (text length, call number).
class recording_embedder : public embedder {
 public:
  std::string name() const override { return "recording"; }
  size_t dim() const override { return 2; }
  size_t weights_bytes() const override { return 0; }
  size_t worker_bytes(uint32_t texts) const override {
    return texts * dim() * sizeof(float);
  }
  void embed(const std::vector<std::string_view>& texts, const std::string&,
             float* out) const override {
    std::lock_guard<std::mutex> guard{mtx_};
    calls_.push_back(texts.size());
    for (size_t i = 0; i < texts.size(); ++i) {
      out[2 * i] = static_cast<float>(texts[i].size());
      out[2 * i + 1] = static_cast<float>(calls_.size());
    }
  }
  std::vector<size_t> calls() const {
    std::lock_guard<std::mutex> guard{mtx_};
    return calls_;
  }

 private:
  mutable std::mutex mtx_;
  mutable std::vector<size_t> calls_;
};

/// Collects what a worker sends back, in order.
struct worker_outbox {
  std::vector<std::string> events;  // "done:<id>", "fail:<id>", "pong:<depth>"
  std::vector<matrix> results;
  caf::error exit_reason;
  bool down = false;
};

caf::behavior outbox_actor(caf::event_based_actor* self,
                           std::shared_ptr<worker_outbox> box) {
  self->set_down_handler([=](caf::down_msg& msg) {
    box->down = true;
    box->exit_reason = msg.reason;
  });
  return {
      [=](caf::actor& watched) { self->monitor(watched); },
      [=](done_atom, uint64_t id, matrix& m) {
        box->events.push_back("done:" + std::to_string(id));
        box->results.push_back(std::move(m));
      },
      [=](fail_atom, uint64_t id, caf::error&) {
        box->events.push_back("fail:" + std::to_string(id));
      },
      [=](pong_atom, uint64_t, worker_report r) {
        box->events.push_back("pong:" + std::to_string(r.queue_depth));
      },
  };
}

job make_job(uint64_t id, size_t texts, lane ln = lane::embed) {
  job j;
  j.id = id;
  j.lane = static_cast<uint8_t>(ln);
  std::vector<std::string> list;
  for (size_t i = 0; i < texts; ++i)
    list.push_back(std::string(i % 7 + 1, 'x'));
  j.texts = shared_texts{std::move(list)};
  return j;
}

struct worker_fixture : actor_fixture {
  std::shared_ptr<recording_embedder> model = std::make_shared<recording_embedder>();
  std::shared_ptr<worker_outbox> box = std::make_shared<worker_outbox>();
  caf::actor outbox = sys.spawn(outbox_actor, box);
  caf::actor worker;

  ~worker_fixture() {
    if (worker)
      caf::anon_send_exit(worker, caf::exit_reason::kill);
    caf::anon_send_exit(outbox, caf::exit_reason::kill);
    sched.run();
  }

  void spawn(uint32_t micro_batch, fault_section fault = {},
             caf::timespan chunk_time_budget = caf::timespan{0}) {
    detail::worker_config c;
    c.model = model;
    c.micro_batch_texts = micro_batch;
    c.chunk_time_budget = chunk_time_budget;
    c.fault = fault;
    worker = detail::spawn_worker(sys, c, false);
    caf::anon_send(outbox, worker);  // the outbox monitors it
    sched.run();
  }

  /// Sends from the outbox, so that replies land there.
  template <class... Ts>
  void tell(Ts&&... xs) {
    caf::send_as(outbox, worker, std::forward<Ts>(xs)...);
  }
};

}  // namespace

TEST_CASE_METHOD(worker_fixture, "a worker drains queued work into micro-batches",
                 "[worker]") {
  spawn(8);
  for (uint64_t id = 1; id <= 5; ++id)
    tell(work_atom::value, make_job(id, 1));
  tell(work_atom::value, make_job(6, 10, lane::batch));
  sched.run();
  CHECK(model->calls() == std::vector<size_t>{8, 7});
  REQUIRE(box->events == std::vector<std::string>{"done:1", "done:2", "done:3", "done:4",
                                                  "done:5", "done:6"});
  auto& batch = box->results.back();
  CHECK(batch.rows == 10);
  CHECK(batch.dim == 2);
  REQUIRE(batch.values.size() == 20);
  for (size_t i = 0; i < 10; ++i) {
    INFO("row " << i);
    CHECK(batch.values[2 * i] == static_cast<float>(i % 7 + 1));
  }
  // Rows 0-2 of the batch were embedded in call 1, rows 3-9 in call 2.
  CHECK(batch.values[1] == 1.0f);
  CHECK(batch.values[2 * 3 + 1] == 2.0f);
}

TEST_CASE_METHOD(worker_fixture, "pings are answered between the chunks of a long batch",
                 "[worker][heartbeat]") {
  spawn(8);
  tell(work_atom::value, make_job(1, 64, lane::batch));
  sched.run_once();  // worker takes the job
  sched.run_once();  // worker embeds chunk 1 of 8
  REQUIRE(model->calls().size() == 1);
  tell(ping_atom::value, uint64_t{7});
  sched.run();
  REQUIRE(box->events.size() == 2);
  CHECK(box->events[0] == "pong:1");
  CHECK(box->events[1] == "done:1");
  CHECK(model->calls() == std::vector<size_t>(8, 8));
}

TEST_CASE_METHOD(worker_fixture,
                 "a chunk holds no more texts than its time estimate fits in the budget",
                 "[worker][heartbeat]") {
  // 5 ms per text (the drill sleeps 5 ms x chunk size) and a 40 ms budget:
  // after a first chunk of one text (to measure), at most 8 texts a chunk,
  // though pool.micro-batch-texts would allow 64.
  fault_section fault;
  fault.compute_delay = std::chrono::milliseconds(5);
  spawn(64, fault, std::chrono::milliseconds(40));
  tell(work_atom::value, make_job(1, 40, lane::batch));
  sched.run_once();  // worker takes the job
  sched.run_once();  // worker embeds the first chunk
  REQUIRE(model->calls() == std::vector<size_t>{1});
  tell(ping_atom::value, uint64_t{7});
  sched.run();
  REQUIRE(box->events == std::vector<std::string>{"pong:1", "done:1"});
  auto calls = model->calls();
  INFO("chunk sizes: " << Catch::Detail::stringify(calls));
  CHECK(calls.size() >= 1 + 39 / 8);
  size_t texts = 0;
  for (auto n : calls) {
    CHECK(n >= 1);
    CHECK(n <= 8);
    texts += n;
  }
  CHECK(texts == 40);
  CHECK(box->results.back().rows == 40);
}

TEST_CASE_METHOD(worker_fixture,
                 "chunks are cut by pool.micro-batch-texts under a "
                 "time budget they fit in",
                 "[worker][heartbeat]") {
  spawn(8, {}, std::chrono::seconds(10));
  tell(work_atom::value, make_job(1, 33, lane::batch));
  sched.run();
  // One text to measure, then the text bound: microseconds a text fit 10 s.
  CHECK(model->calls() == std::vector<size_t>{1, 8, 8, 8, 8});
  CHECK(box->events == std::vector<std::string>{"done:1"});
}

TEST_CASE_METHOD(worker_fixture, "a pong reports the jobs the worker holds",
                 "[worker][heartbeat]") {
  spawn(4);
  for (uint64_t id = 1; id <= 5; ++id)
    tell(work_atom::value, make_job(id, 1));
  tell(ping_atom::value, uint64_t{1});  // high priority: handled before the work
  sched.run();
  REQUIRE(box->events.size() == 6);
  CHECK(box->events[0] == "pong:5");
  tell(ping_atom::value, uint64_t{2});
  sched.run();
  CHECK(box->events.back() == "pong:0");
}

TEST_CASE_METHOD(worker_fixture,
                 "a pong counts the work that arrives while the worker takes the ping",
                 "[worker][heartbeat]") {
  // Issue #10: the ping handler asked CAF 0.17 for mailbox().size(), whose
  // inlined move of newly arrived messages into an empty queue downcasts the
  // queue's sentinel node (undefined behavior). UBSan ended the sanitizer
  // build's worker node on it; here that would end this test. A job arrives
  // while the ping is handled: sent from the worker's sender check.
  auto sent = std::make_shared<bool>(false);
  detail::worker_config c;
  c.model = model;
  c.micro_batch_texts = 4;
  c.accepts = [this, sent](const caf::strong_actor_ptr&) {
    if (!*sent) {
      *sent = true;
      tell(work_atom::value, make_job(1, 1));
    }
    return true;
  };
  worker = detail::spawn_worker(sys, c, false);
  caf::anon_send(outbox, worker);
  sched.run();
  tell(ping_atom::value, uint64_t{1});
  sched.run();
  REQUIRE(box->events.size() == 2);
  CHECK(box->events[0] == "pong:1");
  CHECK(box->events[1] == "done:1");
  tell(ping_atom::value, uint64_t{2});
  sched.run();
  CHECK(box->events.back() == "pong:0");
}

TEST_CASE_METHOD(worker_fixture, "the crash drill kills the worker on every Nth job",
                 "[worker][fault]") {
  fault_section fault;
  fault.crash_every = 3;
  spawn(8, fault);
  for (uint64_t id = 1; id <= 3; ++id)
    tell(work_atom::value, make_job(id, 1));
  sched.run();
  CHECK(box->down);
  CHECK(pool_code(box->exit_reason) == pool_errc::worker_failed);
  CHECK(box->events.empty());
}

TEST_CASE("the UTF-8 check accepts well-formed text and refuses malformed bytes",
          "[gateway]") {
  using detail::is_valid_utf8;
  CHECK(is_valid_utf8("plain ascii"));
  CHECK(is_valid_utf8(std::string_view{"nul \0 inside", 13}));  // U+0000 is a code point
  CHECK(is_valid_utf8("\x7f\xc2\x80\x7f"));  // ASCII either side of a sequence
  CHECK(is_valid_utf8("caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80"));
  CHECK_FALSE(is_valid_utf8("\xff\xfe"));
  CHECK_FALSE(is_valid_utf8("\xc0\xaf"));          // overlong '/'
  CHECK_FALSE(is_valid_utf8("\xe0\x80\xaf"));      // overlong, 3 bytes
  CHECK_FALSE(is_valid_utf8("\xed\xa0\x80"));      // lone surrogate
  CHECK_FALSE(is_valid_utf8("\xf4\x90\x80\x80"));  // above U+10FFFF
  CHECK_FALSE(is_valid_utf8("abc\xe6\x97"));       // truncated
  CHECK_FALSE(is_valid_utf8("\x80"));              // stray continuation
  CHECK_FALSE(is_valid_utf8("\xc1\xbf"));          // overlong, lead C1
  CHECK_FALSE(is_valid_utf8("\xf0\x80\x80\xaf"));  // overlong, 4 bytes
  CHECK_FALSE(is_valid_utf8("\xed\xbf\xbf"));      // last surrogate U+DFFF
  CHECK_FALSE(is_valid_utf8("\xf5\x80\x80\x80"));  // lead above F4
  CHECK_FALSE(is_valid_utf8("\xf0\x9f\x98"));      // 4-byte sequence cut short
  CHECK_FALSE(is_valid_utf8("\xe6\x41\x97"));      // ASCII where a continuation belongs
  CHECK_FALSE(is_valid_utf8("ok\xc3\xa9\xff"));    // bad byte after valid ones
  // The boundaries either side of the refused ranges are accepted.
  CHECK(is_valid_utf8("\xc2\x80"));                   // U+0080
  CHECK(is_valid_utf8("\xe0\xa0\x80"));               // U+0800
  CHECK(is_valid_utf8("\xed\x9f\xbf"));               // U+D7FF
  CHECK(is_valid_utf8("\xee\x80\x80"));               // U+E000
  CHECK(is_valid_utf8("\xf0\x90\x80\x80"));           // U+10000
  CHECK(is_valid_utf8("\xf4\x8f\xbf\xbf"));           // U+10FFFF
  CHECK(is_valid_utf8(std::string_view{"a\0b", 3}));  // NUL is a code point
  CHECK(is_valid_utf8(""));
}

namespace {

struct gateway_fixture : actor_fixture {
  caf::actor gateway;

  void start_pool(uint32_t max_text_bytes = 100, uint32_t max_batch_items = 4) {
    auto c = fake_config(1);
    c.pool.max_text_bytes = max_text_bytes;
    c.pool.max_batch_items = max_batch_items;
    start(c);
    gateway = current_gateway();
  }

  caf::actor current_gateway() {
    auto result = std::make_shared<caf::actor>();
    auto target = root;
    spawn_fn([=](caf::event_based_actor* self) {
      self->request(target, caf::infinite, gateway_atom::value).then([=](caf::actor& gw) {
        *result = gw;
      });
    });
    sched.run();
    return *result;
  }

  /// Sends `msg` to the gateway and returns the error it answers with (none
  /// if it answered with a value of type T).
  template <class T>
  std::shared_ptr<answer> ask(caf::message msg) {
    auto a = std::make_shared<answer>();
    auto gw = gateway;
    spawn_fn([=](caf::event_based_actor* self) {
      self->request(gw, caf::infinite, msg)
          .then(
              [=](T&) {
                ++a->count;
                a->value = matrix{};
              },
              [=](caf::error& e) {
                ++a->count;
                a->err = e;
              });
    });
    sched.run();
    return a;
  }

  std::shared_ptr<answer> embed_text(std::string text) {
    return ask<matrix>(caf::make_message(embed_atom::value, std::move(text)));
  }

  std::shared_ptr<answer> batch_texts(std::vector<std::string> texts) {
    return ask<matrix>(caf::make_message(batch_atom::value, std::move(texts)));
  }
};

}  // namespace

TEST_CASE_METHOD(gateway_fixture,
                 "the gateway refuses bad input before anything is queued", "[gateway]") {
  start_pool(100, 4);
  CHECK(embed_text("")->code() == pool_errc::invalid_input);
  CHECK(embed_text(std::string(101, 'a'))->code() == pool_errc::too_large);
  CHECK(embed_text("bad \xff bytes")->code() == pool_errc::invalid_input);
  CHECK(embed_text("\xed\xa0\x80")->code() == pool_errc::invalid_input);
  CHECK(batch_texts({})->code() == pool_errc::invalid_input);
  CHECK(batch_texts({"a", "b", "c", "d", "e"})->code() == pool_errc::too_large);
  auto bad_item = batch_texts({"fine", ""});
  CHECK(bad_item->code() == pool_errc::invalid_input);
  CHECK_THAT(error_message(bad_item->err), Catch::Contains("texts[1]"));
  auto st = status();
  CHECK(st.ledger.accepted == 0);
  CHECK(st.ledger.rejected == 0);
  CHECK(current_workers()[0]->jobs_received == 0);
  SECTION("valid input passes through to a worker") {
    auto ok = embed_text(std::string(100, 'a'));
    CHECK(current_workers()[0]->held.size() == 1);
    release(current_workers()[0]);
    CHECK(ok->ok());
    auto batch = batch_texts({"a", "b", "c", "d"});
    release(current_workers()[0]);
    CHECK(batch->ok());
  }
}

TEST_CASE_METHOD(gateway_fixture,
                 "a list of embeds is answered text by text in one reply", "[gateway]") {
  start_pool(100, 4);
  auto list = [&](std::vector<std::string> texts) {
    auto result = std::make_shared<std::optional<embed_answers>>();
    auto err = std::make_shared<caf::error>();
    auto gw = gateway;
    spawn_fn([=](caf::event_based_actor* self) {
      self->request(gw, caf::infinite, embed_atom::value, std::move(texts), std::string{},
                    std::string{})
          .then([=](embed_answers& a) { *result = std::move(a); },
                [=](caf::error& e) { *err = std::move(e); });
    });
    sched.run();
    return std::make_pair(result, err);
  };
  SECTION("valid texts go on as one embed-lane job, refused ones get their own error") {
    auto [result, err] = list({"first", "", "second", "bad \xff"});
    auto& worker = *current_workers()[0];
    REQUIRE(worker.held.size() == 1);
    auto& j = worker.held.front().first;
    CHECK(j.lane == static_cast<uint8_t>(lane::embed));
    CHECK(j.texts.get() == std::vector<std::string>{"first", "second"});
    auto job_id = static_cast<float>(j.id);
    release(current_workers()[0]);
    REQUIRE(result->has_value());
    auto& a = **result;
    REQUIRE(a.errors.size() == 4);
    CHECK_FALSE(a.errors[0]);
    CHECK(pool_code(a.errors[1]) == pool_errc::invalid_input);
    CHECK_THAT(error_message(a.errors[1]), Catch::Contains("texts[1]"));
    CHECK_FALSE(a.errors[2]);
    CHECK(pool_code(a.errors[3]) == pool_errc::invalid_input);
    CHECK(a.rows.rows == 2);
    CHECK(a.rows.values == std::vector<float>{job_id, job_id});
    auto st = status();
    // One job, and an embed request per text in the ledger.
    CHECK(st.ledger.accepted == 2);
    CHECK(st.ledger.completed == 2);
  }
  SECTION("a list with no valid text is answered without a job") {
    auto [result, err] = list({"", std::string(101, 'a')});
    REQUIRE(result->has_value());
    auto& a = **result;
    REQUIRE(a.errors.size() == 2);
    CHECK(pool_code(a.errors[0]) == pool_errc::invalid_input);
    CHECK(pool_code(a.errors[1]) == pool_errc::too_large);
    CHECK(a.rows.rows == 0);
    CHECK(a.rows.values.empty());
    CHECK(current_workers()[0]->jobs_received == 0);
  }
  SECTION("an empty or too long list is refused whole") {
    auto [none, none_err] = list({});
    CHECK_FALSE(none->has_value());
    CHECK(pool_code(*none_err) == pool_errc::invalid_input);
    auto [many, many_err] = list({"a", "b", "c", "d", "e"});
    CHECK_FALSE(many->has_value());
    CHECK(pool_code(*many_err) == pool_errc::too_large);
    CHECK_THAT(error_message(*many_err), Catch::Contains("pool.max-batch-items is 4"));
    CHECK(current_workers()[0]->jobs_received == 0);
    // A malformed list counts once in the reply metrics, however long it is.
    auto [huge, huge_err] = list(std::vector<std::string>(100000, "x"));
    CHECK(pool_code(*huge_err) == pool_errc::too_large);
    auto text = std::make_shared<std::string>();
    auto gw = gateway;
    spawn_fn([=](caf::event_based_actor* self) {
      self->request(gw, caf::infinite, metrics_atom::value)
          .then([=](std::string& exposition) { *text = std::move(exposition); });
    });
    sched.run();
    auto at = text->find("code=\"too_large\"} ");
    REQUIRE(at != std::string::npos);
    CHECK(std::stoull(text->substr(text->find("} ", at) + 2)) == 2);
  }
  SECTION("an error of the whole request answers the list") {
    auto [result, err] = list({"only"});
    caf::anon_send(current_workers()[0]->handle, refuse_atom::value);
    sched.run();
    CHECK_FALSE(result->has_value());
    CHECK(pool_code(*err) == pool_errc::too_large);
  }
}

TEST_CASE_METHOD(gateway_fixture,
                 "unexpected messages get invalid_input and the gateway keeps serving",
                 "[gateway]") {
  start_pool();
  CHECK(ask<int32_t>(caf::make_message(std::string{"hello"}))->code() ==
        pool_errc::invalid_input);
  CHECK(ask<int32_t>(caf::make_message(int32_t{5}))->code() == pool_errc::invalid_input);
  CHECK(ask<int32_t>(caf::make_message(embed_atom::value, int32_t{5}))->code() ==
        pool_errc::invalid_input);
  CHECK(ask<int32_t>(caf::make_message(caf::atom("bogus")))->code() ==
        pool_errc::invalid_input);
  auto ok = embed_text("still here");
  release(current_workers()[0]);
  CHECK(ok->ok());
}

TEST_CASE_METHOD(gateway_fixture, "a killed gateway is replaced by the node root",
                 "[gateway]") {
  start_pool();
  auto old = gateway;
  // An exit message from anyone but the root does nothing, not even a
  // kill (which CAF makes fatal for any actor that lets it in).
  caf::anon_send_exit(old, caf::exit_reason::kill);
  sched.run();
  CHECK(current_gateway() == old);
  auto still = embed_text("kill ignored");
  release(current_workers()[0]);
  CHECK(still->ok());
  // A gateway that dies anyway (here: the root's own kill) is replaced.
  caf::send_as(caf::actor_cast<caf::actor>(root), old,
               caf::exit_msg{root.address(), caf::exit_reason::kill});
  sched.run();
  gateway = current_gateway();
  REQUIRE(gateway);
  CHECK(gateway != old);
  auto ok = embed_text("after respawn");
  release(current_workers()[0]);
  CHECK(ok->ok());
}

TEST_CASE_METHOD(gateway_fixture,
                 "a drain stops every model, then the gateway that carried their last "
                 "answers, then the root",
                 "[gateway][root][drain]") {
  auto first = fake_config(1);
  first.model_name = "first";
  auto second = fake_config(1);
  second.model_name = "second";
  auto supervisors = start_models({first, second});
  gateway = current_gateway();
  auto first_down = down_flag(supervisors[0]);
  auto second_down = down_flag(supervisors[1]);
  auto root_down = down_flag(root);
  auto gateway_down = down_flag(gateway);
  auto held = ask<matrix>(
      caf::make_message(embed_atom::value, std::string{"held"}, std::string{}, "second"));
  auto holder = std::find_if(probes.begin(), probes.end(),
                             [](const auto& p) { return !p->held.empty(); });
  REQUIRE(holder != probes.end());
  caf::anon_send(root, drain_atom::value);
  sched.run();
  // "first" held nothing and is drained; its requests are answered at once.
  auto late = ask<matrix>(
      caf::make_message(embed_atom::value, std::string{"late"}, std::string{}, "first"));
  REQUIRE(late->count == 1);
  CHECK(late->code() == pool_errc::unavailable);
  CHECK(held->count == 0);
  CHECK(*first_down);
  CHECK_FALSE(*second_down);
  CHECK_FALSE(*gateway_down);
  CHECK_FALSE(*root_down);
  // The last answer of "second" still goes out through the gateway.
  release(*holder);
  CHECK(held->ok());
  CHECK(*second_down);
  CHECK(*gateway_down);
  CHECK(*root_down);
}

TEST_CASE_METHOD(worker_fixture, "a retried job is embedded in a call of its own",
                 "[worker][fault]") {
  spawn(64);
  tell(work_atom::value, make_job(1, 2));
  tell(work_atom::value, make_job(2, 1));
  auto retried = make_job(3, 1);
  retried.solo = true;
  tell(work_atom::value, retried);
  tell(work_atom::value, make_job(4, 1));
  sched.run();
  CHECK(model->calls() == std::vector<size_t>{3, 1, 1});
  CHECK(box->events == std::vector<std::string>{"done:1", "done:2", "done:3", "done:4"});
}

TEST_CASE_METHOD(actor_fixture,
                 "the gateway sheds once its supervisor's mailbox holds the gate's limit",
                 "[gateway]") {
  // A stand-in supervisor that takes submissions but never answers and never
  // counts down: the gate fills after `limit` forwards.
  auto held = std::make_shared<int>(0);
  auto stalled = spawn_fn([=](caf::event_based_actor* self) -> caf::behavior {
    return {[=](submit_atom, detail::submission&) { ++*held; }};
  });
  auto gate = std::make_shared<detail::admission_gate>(2);
  pool_section limits;
  auto gw = spawn_fn([&](caf::event_based_actor* self) -> caf::behavior {
    auto g = detail::spawn_gateway(
        self, caf::actor_cast<detail::supervisor_interface>(stalled), limits, gate);
    return {[=](embed_atom a, std::string& text) { return self->delegate(g, a, text); }};
  });
  sched.run();
  std::vector<std::shared_ptr<answer>> answers;
  for (int i = 0; i < 4; ++i) {
    auto a = std::make_shared<answer>();
    spawn_fn([=](caf::event_based_actor* self) {
      self->request(gw, caf::infinite, embed_atom::value, std::string("text"))
          .then([=](matrix&) { ++a->count; },
                [=](caf::error& e) {
                  ++a->count;
                  a->err = std::move(e);
                });
    });
    sched.run();
    answers.push_back(a);
  }
  CHECK(*held == 2);
  CHECK(gate->queued == 2);
  CHECK(gate->shed == 2);
  CHECK(answers[0]->count == 0);  // held by the stalled supervisor
  CHECK(answers[1]->count == 0);
  for (int i = 2; i < 4; ++i) {
    REQUIRE(answers[i]->count == 1);
    CHECK(pool_code(answers[i]->err) == pool_errc::overloaded);
  }
  // A supervisor that dies leaves no request unanswered: the gateway answers
  // what it held `unavailable`.
  caf::anon_send_exit(stalled, caf::exit_reason::kill);
  sched.run();
  for (int i = 0; i < 2; ++i) {
    REQUIRE(answers[i]->count == 1);
    CHECK(pool_code(answers[i]->err) == pool_errc::unavailable);
  }
}

TEST_CASE_METHOD(worker_fixture,
                 "a worker answers deadline_exceeded for a job whose time ran out "
                 "instead of computing it",
                 "[worker][deadline]") {
  spawn(8);
  auto late = make_job(1, 3);
  late.time_left_ns = 1;  // gone by the time the worker gets to it
  auto timely = make_job(2, 1);
  timely.time_left_ns = std::chrono::nanoseconds{std::chrono::minutes(1)}.count();
  tell(work_atom::value, late);
  tell(work_atom::value, timely);
  sched.run();
  CHECK(box->events == std::vector<std::string>{"fail:1", "done:2"});
  CHECK(model->calls() == std::vector<size_t>{1});  // only the timely text
}

TEST_CASE_METHOD(worker_fixture,
                 "a single text waits behind at most one chunk of a long batch",
                 "[worker]") {
  spawn(4);
  tell(work_atom::value, make_job(1, 12, lane::batch));
  sched.run_once();  // the batch is queued, its first chunk not yet run
  tell(work_atom::value, make_job(2, 1));
  sched.run();
  // The embed job goes into the next chunk (first, with batch rows filling
  // the rest of it), not after the whole batch.
  REQUIRE(box->events.size() == 2);
  CHECK(box->events[0] == "done:2");
  CHECK(box->events[1] == "done:1");
  CHECK(model->calls() == std::vector<size_t>{4, 4, 4, 1});
  CHECK(box->results[0].values[1] <= 2.0f);  // behind one chunk at most
}

TEST_CASE_METHOD(gateway_fixture,
                 "request bytes past pool.max-queued-bytes are refused, and come back "
                 "once no worker holds them",
                 "[gateway][bytes]") {
  auto c = fake_config(1);
  c.pool.max_text_bytes = 1000;
  c.pool.request_timeout = std::chrono::seconds(1);
  constexpr uint64_t cost = 100 + 32;  // byte_budget::cost of one 100-byte text
  auto budget = std::make_shared<detail::byte_budget>(3 * cost);
  c.bytes = budget;
  start(c);
  gateway = current_gateway();
  std::vector<std::shared_ptr<answer>> held;
  for (char ch : {'a', 'b', 'c'})
    held.push_back(embed_text(std::string(100, ch)));
  CHECK(budget->used == 3 * cost);
  auto refused = embed_text(std::string(100, 'z'));
  REQUIRE(refused->count == 1);
  CHECK(refused->code() == pool_errc::overloaded);
  CHECK(status().ledger.rejected == 1);
  release(current_workers()[0]);
  for (auto& a : held)
    CHECK(a->ok());
  CHECK(budget->used == 0);
  // A request answered at its deadline while its worker still holds the job
  // keeps its bytes until the worker is done with it.
  auto late = embed_text(std::string(100, 'l'));
  advance(std::chrono::milliseconds(1300));
  REQUIRE(late->count == 1);
  CHECK(late->code() == pool_errc::deadline_exceeded);
  CHECK(budget->used == cost);
  release(current_workers()[0]);
  CHECK(budget->used == 0);
  CHECK(ledger_balances(status()));
}

TEST_CASE_METHOD(
    actor_fixture,
    "status requests are answered from a snapshot at most status.max-age old",
    "[gateway][status]") {
  auto asked = std::make_shared<int>(0);
  auto sup = spawn_fn([=](caf::event_based_actor*) -> caf::behavior {
    return {[=](status_atom) {
      ++*asked;
      pool_status st;
      st.model = "fake";
      st.pending = static_cast<uint64_t>(*asked);
      return st;
    }};
  });
  auto gate = std::make_shared<detail::admission_gate>(8);
  pool_section limits;
  auto gw = spawn_fn([&](caf::event_based_actor* self) -> caf::behavior {
    auto g = detail::spawn_gateway(
        self, caf::actor_cast<detail::supervisor_interface>(sup), limits, gate);
    return {[=](status_atom a) { return self->delegate(g, a); }};
  });
  sched.run();
  auto ask_status = [&] {
    auto got = std::make_shared<std::optional<pool_status>>();
    spawn_fn([=](caf::event_based_actor* self) {
      self->request(gw, caf::infinite, status_atom::value).then([=](pool_status& st) {
        *got = std::move(st);
      });
    });
    return got;
  };
  std::vector<std::shared_ptr<std::optional<pool_status>>> answers;
  for (int i = 0; i < 50; ++i)
    answers.push_back(ask_status());
  sched.run();
  CHECK(*asked == 1);  // one question for fifty requests
  for (auto& a : answers) {
    REQUIRE(a->has_value());
    CHECK((*a)->pending == 1);
  }
  advance(std::chrono::milliseconds(150));
  auto later = ask_status();
  sched.run();
  CHECK(*asked == 2);  // the snapshot was older than 100 ms
  REQUIRE(later->has_value());
  CHECK((*later)->pending == 2);
  caf::anon_send_exit(sup, caf::exit_reason::kill);
  sched.run();
}
