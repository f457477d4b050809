// Multi-process tests of the HTTP front: real `embedpool-node` processes with
// `--http.port=0` on 127.0.0.1, called over HTTP (cpp-httplib's client), over
// BASP (pool::client, the reference "actor path"), through `embedpool-cli
// metrics`, `promtool check metrics` and the official OpenAI Node client.
#include <catch2/catch.hpp>

#include <cmath>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "pool/client.hpp"
#include "pool/protocol.hpp"
#include "process_helpers.hpp"

using namespace std::chrono_literals;
using json = nlohmann::json;
using pool::test::node_process;
using pool::test::run_command;
using pool::test::temp_dir;

namespace {

/// The node's default model (hash, model.dim = 384).
const std::string default_model = "hash-384";
constexpr size_t default_dim = 384;
constexpr auto tool_timeout = 60s;

/// The N of the node's `event=http_listening ... port=N` log line (waits up to
/// 10 s for it).
uint16_t http_port(const node_process& node) {
  REQUIRE(node.wait_for_log("event=http_listening ", 10s));
  auto text = node.log();
  auto ev = text.find("event=http_listening ");
  auto eol = text.find('\n', ev);
  auto line = text.substr(ev, eol - ev);
  auto key = line.find(" port=");
  REQUIRE(key != std::string::npos);
  return static_cast<uint16_t>(std::stoul(line.substr(key + 6)));
}

/// A node with the HTTP front on a free port, plus an HTTP client for it.
struct http_node {
  explicit http_node(std::vector<std::string> extra = {})
      : node(with_http(std::move(extra))),
        port(http_port(node)),
        http("127.0.0.1", port) {
    http.set_read_timeout(30, 0);
    http.set_connection_timeout(5, 0);
  }

  static std::vector<std::string> with_http(std::vector<std::string> extra) {
    extra.insert(extra.begin(), "--http.port=0");
    return extra;
  }

  httplib::Result post(const std::string& path, const std::string& body) {
    return http.Post(path.c_str(), body, "application/json");
  }

  std::unique_ptr<pool::client> actor_client() {
    pool::client_options opts;
    opts.host = "127.0.0.1";
    opts.port = node.port();
    opts.timeout = std::chrono::seconds(30);
    auto conn = pool::client::connect(opts);
    REQUIRE(conn);
    return std::move(*conn);
  }

  node_process node;
  uint16_t port;
  httplib::Client http;
};

/// Reference embeddings over the actor path (one batch message).
std::vector<std::vector<float>> reference(http_node& n,
                                          const std::vector<std::string>& texts) {
  auto cl = n.actor_client();
  auto m = cl->embed_batch(texts);
  REQUIRE(m);
  std::vector<std::vector<float>> rows;
  for (uint32_t i = 0; i < m->rows; ++i)
    rows.emplace_back(m->values.begin() + static_cast<std::ptrdiff_t>(i * m->dim),
                      m->values.begin() + static_cast<std::ptrdiff_t>((i + 1) * m->dim));
  return rows;
}

std::vector<float> decode_base64_floats(const std::string& text) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z')
      return c - 'A';
    if (c >= 'a' && c <= 'z')
      return c - 'a' + 26;
    if (c >= '0' && c <= '9')
      return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
  };
  std::vector<unsigned char> bytes;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : text) {
    int v = value(c);
    if (v < 0)
      break;  // '=' padding
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      bytes.push_back(static_cast<unsigned char>((acc >> bits) & 0xFF));
    }
  }
  REQUIRE(bytes.size() % 4 == 0);
  std::vector<float> out(bytes.size() / 4);
  for (size_t i = 0; i < out.size(); ++i) {
    uint32_t u = uint32_t{bytes[4 * i]} | (uint32_t{bytes[4 * i + 1]} << 8) |
                 (uint32_t{bytes[4 * i + 2]} << 16) | (uint32_t{bytes[4 * i + 3]} << 24);
    std::memcpy(&out[i], &u, 4);
  }
  return out;
}

std::vector<float> to_floats(const json& array) {
  std::vector<float> out;
  for (auto& x : array)
    out.push_back(x.get<float>());
  return out;
}

/// Checks an error response: status, OpenAI-style body and its code.
void check_error(const httplib::Result& res, int status, const std::string& code) {
  REQUIRE(res);
  INFO(res->body);
  CHECK(res->status == status);
  CHECK(res->get_header_value("Content-Type") == "application/json");
  auto body = json::parse(res->body);
  REQUIRE(body.contains("error"));
  CHECK(body["error"]["code"] == code);
  CHECK(body["error"]["message"].is_string());
  CHECK(body["error"]["type"].is_string());
  // OpenAI's error object always has a param (null or the field).
  CHECK(body["error"].contains("param"));
}

/// The value of the sample `name{labels}` in an exposition, or -1.
double sample_value(const std::string& text, const std::string& series) {
  auto pos = text.find("\n" + series + " ");
  if (pos == std::string::npos)
    return -1;
  return std::stod(text.substr(pos + series.size() + 2));
}

/// Runs `promtool check metrics` on `text`; returns its output on failure.
std::string promtool_problems(const std::string& text) {
  temp_dir dir;
  auto file = (dir.path() / "scrape.txt").string();
  std::ofstream{file} << text;
  auto r = run_command({"/usr/bin/promtool", "check", "metrics"}, tool_timeout, file);
  if (r.status.exited && r.status.code == 0 && r.out.empty() && r.err.empty())
    return "";
  return "exit " + r.status.describe() + ": " + r.out + r.err;
}

/// Polls the node's status (bounded) until `count` requests are in flight.
void wait_for_in_flight(http_node& n, uint64_t count) {
  auto cl = n.actor_client();
  bool reached = false;
  for (int i = 0; i < 500 && !reached; ++i) {
    auto st = cl->status();
    REQUIRE(st);
    reached = st->ledger.in_flight == count;
    if (!reached)
      std::this_thread::sleep_for(10ms);
  }
  REQUIRE(reached);
}

/// POSTs `body` to `path` on a connection of its own; the future holds the
/// status (-1 if no response).
std::future<int> post_async(uint16_t port, std::string path, std::string body) {
  return std::async(std::launch::async, [port, path, body] {
    httplib::Client c{"127.0.0.1", port};
    c.set_read_timeout(30, 0);
    auto res = c.Post(path.c_str(), body, "application/json");
    return res ? res->status : -1;
  });
}

}  // namespace

TEST_CASE("Health endpoints report a live and ready node", "[http]") {
  http_node n;
  auto live = n.http.Get("/health/live");
  REQUIRE(live);
  CHECK(live->status == 200);
  CHECK(json::parse(live->body)["status"] == "live");
  auto ready = n.http.Get("/health/ready");
  REQUIRE(ready);
  CHECK(ready->status == 200);
  auto body = json::parse(ready->body);
  CHECK(body["status"] == "ready");
  CHECK(body["ready_workers"] == 2);
  CHECK(body["draining"] == false);
}

TEST_CASE("POST /v1/embeddings answers in OpenAI's shape with the actor path's values",
          "[http]") {
  http_node n;
  std::vector<std::string> texts = {"hello world", "the quick brown fox", "a"};
  auto want = reference(n, texts);
  SECTION("a string input, floats") {
    auto res = n.post("/v1/embeddings",
                      json{{"input", texts[1]}, {"model", default_model}}.dump());
    REQUIRE(res);
    REQUIRE(res->status == 200);
    auto body = json::parse(res->body);
    CHECK(body["object"] == "list");
    CHECK(body["model"] == default_model);
    REQUIRE(body["data"].size() == 1);
    CHECK(body["data"][0]["object"] == "embedding");
    CHECK(body["data"][0]["index"] == 0);
    CHECK(to_floats(body["data"][0]["embedding"]) == want[1]);
    // Tokens as the hash embedder counts them: whitespace-separated words.
    CHECK(body["usage"]["prompt_tokens"] == 4);
    CHECK(body["usage"]["total_tokens"] == 4);
  }
  SECTION("an array input without a model, base64") {
    auto res = n.post("/v1/embeddings",
                      json{{"input", texts}, {"encoding_format", "base64"}}.dump());
    REQUIRE(res);
    REQUIRE(res->status == 200);
    auto body = json::parse(res->body);
    CHECK(body["model"] == default_model);
    REQUIRE(body["data"].size() == texts.size());
    for (size_t i = 0; i < texts.size(); ++i) {
      CHECK(body["data"][i]["index"] == i);
      auto row = decode_base64_floats(body["data"][i]["embedding"].get<std::string>());
      CHECK(row.size() == default_dim);
      CHECK(row == want[i]);
    }
    CHECK(body["usage"]["prompt_tokens"] == 7);
  }
}

TEST_CASE("POST /embed answers in TEI's shape with the actor path's values", "[http]") {
  http_node n;
  std::vector<std::string> texts = {"alpha beta", "gamma"};
  auto want = reference(n, texts);
  auto single = n.post("/embed", json{{"inputs", texts[0]}}.dump());
  REQUIRE(single);
  REQUIRE(single->status == 200);
  auto one = json::parse(single->body);
  REQUIRE(one.size() == 1);
  CHECK(to_floats(one[0]) == want[0]);
  auto many = n.post("/embed", json{{"inputs", texts}}.dump());
  REQUIRE(many);
  REQUIRE(many->status == 200);
  auto rows = json::parse(many->body);
  REQUIRE(rows.size() == 2);
  CHECK(to_floats(rows[0]) == want[0]);
  CHECK(to_floats(rows[1]) == want[1]);
}

TEST_CASE("Bad requests get typed JSON errors with the expected status", "[http]") {
  http_node n{{"--pool.max-text-bytes=16", "--pool.max-batch-items=3",
               "--http.max-body-bytes=2048"}};
  check_error(n.post("/v1/embeddings", "{not json"), 422, "invalid_input");
  check_error(n.post("/v1/embeddings", "[1,2]"), 422, "invalid_input");
  check_error(n.post("/v1/embeddings", R"({"model":"hash-384"})"), 422, "invalid_input");
  check_error(n.post("/v1/embeddings", R"({"input":5})"), 422, "invalid_input");
  check_error(n.post("/v1/embeddings", R"({"input":[1,2,3]})"), 422, "invalid_input");
  check_error(n.post("/v1/embeddings", R"({"input":"x","encoding_format":"int8"})"), 422,
              "invalid_input");
  check_error(n.post("/v1/embeddings", R"({"input":[]})"), 422, "invalid_input");
  check_error(n.post("/v1/embeddings", R"({"input":""})"), 422, "invalid_input");
  // Pool validation, through the gateway: sizes.
  check_error(
      n.post("/v1/embeddings", R"({"input":"this text is longer than sixteen bytes"})"),
      413, "too_large");
  check_error(n.post("/embed", R"({"inputs":["a","b","c","d"]})"), 413, "too_large");
  // An unknown model is 404 model_not_found naming it, as OpenAI answers.
  auto unknown = n.post("/v1/embeddings", R"({"input":"x","model":"no-such-model"})");
  check_error(unknown, 404, "model_not_found");
  CHECK(unknown->body.find("no-such-model") != std::string::npos);
  CHECK(json::parse(unknown->body)["error"]["param"] == "model");
  check_error(n.post("/embed", R"({"inputs":"x","model":"no-such-model"})"), 404,
              "model_not_found");
  // Fields the front does not know are refused naming them, never ignored.
  auto extra = n.post("/v1/embeddings", R"({"input":"x","user":"u1"})");
  check_error(extra, 422, "invalid_input");
  CHECK(json::parse(extra->body)["error"]["param"] == "user");
  check_error(n.post("/embed", R"({"inputs":"x","truncate_dim":3})"), 422,
              "invalid_input");
  // A wrong method on a known path is 405 with Allow.
  auto wrong = n.http.Get("/v1/embeddings");
  check_error(wrong, 405, "method_not_allowed");
  CHECK(wrong->get_header_value("Allow") == "POST");
  auto wrong_post = n.post("/v1/models", "{}");
  check_error(wrong_post, 405, "method_not_allowed");
  CHECK(wrong_post->get_header_value("Allow") == "GET");
  check_error(n.http.Delete("/embed"), 405, "method_not_allowed");
  // A body over http.max-body-bytes is refused before it is parsed: invalid
  // JSON that large gets 413, not 422.
  check_error(n.post("/v1/embeddings", std::string(4096, '{')), 413, "too_large");
  // Unknown endpoints.
  check_error(n.http.Get("/v2/nothing"), 404, "not_found");
  // The node kept serving.
  auto ok = n.post("/embed", R"({"inputs":"still fine"})");
  REQUIRE(ok);
  CHECK(ok->status == 200);
}

TEST_CASE(
    "An overloaded node answers 429 whose body, Retry-After and retry-after-ms agree",
    "[http]") {
  http_node n{{"--pool.workers=1", "--pool.embed-queue-capacity=1",
               "--pool.overload-policy=reject", "--fault.compute-delay=1500ms"}};
  // One slow request holds the only embed credit.
  auto slow = post_async(n.port, "/v1/embeddings", R"({"input":"slow"})");
  wait_for_in_flight(n, 1);
  auto res = n.post("/v1/embeddings", R"({"input":"fast"})");
  check_error(res, 429, "overloaded");
  CHECK(res->get_header_value("Retry-After") == "1");
  CHECK(res->get_header_value("retry-after-ms") == "1000");
  CHECK_THAT(json::parse(res->body)["error"]["message"].get<std::string>(),
             Catch::EndsWith("retry after 1s"));
  CHECK(slow.get() == 200);
}

TEST_CASE("SIGTERM: readiness and new requests answer 503, the HTTP server stops cleanly",
          "[http][shutdown]") {
  http_node n{{"--fault.compute-delay=1500ms", "--pool.drain-timeout=10s"}};
  auto slow = post_async(n.port, "/embed", R"({"inputs":"finishes during the drain"})");
  wait_for_in_flight(n, 1);
  n.node.process().signal(SIGTERM);
  int ready_status = 0;
  for (int i = 0; i < 500 && ready_status != 503; ++i) {
    auto ready = n.http.Get("/health/ready");
    REQUIRE(ready);
    ready_status = ready->status;
    if (ready_status != 503)
      std::this_thread::sleep_for(10ms);
  }
  CHECK(ready_status == 503);
  check_error(n.post("/v1/embeddings", R"({"input":"too late"})"), 503, "shutting_down");
  CHECK(slow.get() == 200);
  auto status = n.node.process().wait_exit(20000ms);
  REQUIRE(status);
  CHECK(status->exited);
  CHECK(status->code == 0);
  CHECK(n.node.log().find("event=http_stopped") != std::string::npos);
}

TEST_CASE("GET /metrics passes promtool and its histograms match the ledger",
          "[http][metrics]") {
  http_node n{{"--pool.max-text-bytes=64"}};
  auto cl = n.actor_client();
  // 4 HTTP embeddings (1 + 3 texts), 2 over the actor path, 1 refused by
  // validation (never accepted), 1 TEI request of 2 texts.
  REQUIRE(n.post("/v1/embeddings", R"({"input":"one two"})")->status == 200);
  REQUIRE(n.post("/v1/embeddings", R"({"input":["a","b c","d e f"]})")->status == 200);
  REQUIRE(cl->embed("actor one"));
  REQUIRE(cl->embed_batch({"actor", "two"}));
  REQUIRE(n.post("/v1/embeddings", R"({"input":[""]})")->status == 422);
  REQUIRE(n.post("/embed", R"({"inputs":["x","y"]})")->status == 200);
  auto res = n.http.Get("/metrics");
  REQUIRE(res);
  REQUIRE(res->status == 200);
  CHECK(res->get_header_value("Content-Type").rfind("text/plain; version=0.0.4", 0) == 0);
  auto& text = res->body;
  INFO(text);
  CHECK(promtool_problems(text).empty());
  auto m = "model=\"" + default_model + "\"";
  auto completed =
      sample_value(text, "embedpool_requests_total{" + m + ",outcome=\"completed\"}");
  auto failed =
      sample_value(text, "embedpool_requests_total{" + m + ",outcome=\"failed\"}");
  auto expired =
      sample_value(text, "embedpool_requests_total{" + m + ",outcome=\"expired\"}");
  auto accepted = sample_value(text, "embedpool_requests_accepted_total{" + m + "}");
  // HTTP and actor requests are in the same ledger.
  CHECK(accepted == 5);
  CHECK(completed == 5);
  CHECK(failed == 0);
  CHECK(expired == 0);
  CHECK(sample_value(text, "embedpool_request_duration_seconds_count{" + m + "}") ==
        completed + failed + expired);
  CHECK(sample_value(text, "embedpool_queue_wait_seconds_count{" + m + "}") == accepted);
  // Every accepted text went through exactly one embedder call.
  CHECK(sample_value(text, "embedpool_batch_texts_sum{" + m + "}") == 1 + 3 + 1 + 2 + 2);
  CHECK(sample_value(text, "embedpool_batch_tokens_sum{" + m + "}") ==
        2 + (1 + 2 + 3) + 2 + 2 + 2);
  CHECK(sample_value(text, "embedpool_compute_seconds_count{" + m + "}") ==
        sample_value(text, "embedpool_batch_texts_count{" + m + "}"));
  CHECK(sample_value(text, "embedpool_replies_total{" + m + ",code=\"ok\"}") == 5);
  CHECK(sample_value(text, "embedpool_replies_total{" + m + ",code=\"invalid_input\"}") ==
        1);
  // Each input's tokens, as the embedder counted them for the batch histogram.
  CHECK(sample_value(text, "embedpool_input_tokens_sum{" + m + "}") ==
        sample_value(text, "embedpool_batch_tokens_sum{" + m + "}"));
  CHECK(sample_value(text, "embedpool_input_tokens_count{" + m + "}") ==
        sample_value(text, "embedpool_batch_texts_sum{" + m + "}"));
  // Node-wide series have no model label.
  CHECK(sample_value(text,
                     "embedpool_http_responses_total{endpoint=\"/v1/"
                     "embeddings\",status=\"200\"}") == 2);
  CHECK(sample_value(text,
                     "embedpool_http_responses_total{endpoint=\"/v1/"
                     "embeddings\",status=\"422\"}") == 1);
  CHECK(sample_value(text, "embedpool_workers{" + m + ",state=\"ready\"}") == 2);
  CHECK(sample_value(text, "embedpool_resident_memory_bytes") > 0);
  CHECK(sample_value(text, "process_resident_memory_bytes") > 0);
  CHECK(sample_value(text, "process_open_fds") > 0);
  CHECK(sample_value(text, "process_cpu_seconds_total") > 0);
  CHECK(sample_value(text, "process_start_time_seconds") > 0);
}

TEST_CASE("embedpool-cli metrics prints the exposition", "[http][metrics]") {
  http_node n;
  REQUIRE(n.post("/embed", R"({"inputs":"counted"})")->status == 200);
  auto r = run_command({EMBEDPOOL_CLI_BIN, "--host=127.0.0.1",
                        "--port=" + std::to_string(n.node.port()), "metrics"},
                       tool_timeout);
  INFO(r.err);
  REQUIRE(r.status.exited);
  REQUIRE(r.status.code == 0);
  CHECK(promtool_problems(r.out).empty());
  CHECK(sample_value(r.out, "embedpool_requests_total{model=\"" + default_model +
                                "\",outcome=\"completed\"}") == 1);
}

TEST_CASE("The official OpenAI Node client works against the node unchanged",
          "[http][openai]") {
  const std::string dir = std::string{EMBEDPOOL_SOURCE_DIR} + "/tools/openai_check";
  INFO("install the client first: (cd tools/openai_check && npm ci)");
  REQUIRE(std::filesystem::exists(dir + "/node_modules/openai/package.json"));
  http_node n;
  std::vector<std::string> texts = {"The quick brown fox", "jumps over", "the lazy dog"};
  auto want = reference(n, texts);
  temp_dir tmp;
  auto expected_file = (tmp.path() / "expected.json").string();
  std::ofstream{expected_file} << json{{"texts", texts}, {"embeddings", want}}.dump();
  auto r = run_command({"/usr/bin/node", dir + "/check.mjs",
                        "http://127.0.0.1:" + std::to_string(n.port) + "/v1",
                        default_model, expected_file},
                       tool_timeout);
  INFO(r.out << r.err);
  CHECK(r.status.exited);
  CHECK(r.status.code == 0);
  CHECK(r.out.find("openai-check: ok") != std::string::npos);
}

TEST_CASE("HTTP on a non-loopback address or on a worker node is refused naming the key",
          "[http][config]") {
  auto public_host = run_command({EMBEDPOOL_NODE_BIN, "--node.port=0",
                                  "--log.file=", "--http.port=0", "--http.host=0.0.0.0"},
                                 tool_timeout);
  CHECK(public_host.status.exited);
  CHECK(public_host.status.code == 2);
  CHECK(public_host.err.find("http.host") != std::string::npos);
  auto worker = run_command(
      {EMBEDPOOL_NODE_BIN, "--node.port=0", "--log.file=", "--node.role=worker",
       "--node.join=127.0.0.1:1", "--http.port=0"},
      tool_timeout);
  CHECK(worker.status.exited);
  CHECK(worker.status.code == 2);
  CHECK(worker.err.find("http.port") != std::string::npos);
}

TEST_CASE("an HTTP port already in use is refused at start naming http.port",
          "[http][config]") {
  http_node first;
  auto second = run_command({EMBEDPOOL_NODE_BIN, "--node.port=0",
                             "--log.file=", "--http.port=" + std::to_string(first.port)},
                            tool_timeout);
  CHECK(second.status.exited);
  CHECK(second.status.code == 2);
  CHECK(second.err.find("http.port") != std::string::npos);
  // The first node still serves its port alone.
  auto live = first.http.Get("/health/live");
  REQUIRE(live);
  CHECK(live->status == 200);
}

namespace {

/// A model directory of the committed BERT fixtures.
std::string bert_fixture(const std::string& name) {
  return std::string{EMBEDPOOL_SOURCE_DIR} + "/tests/data/bert/" + name;
}

/// A node serving the hash model by default plus two BERT fixtures: "mini"
/// (mean pooling, no Normalize, max_seq_length 48) and "prefixed" (Normalize,
/// prompts query/passage).
std::vector<std::string> bert_node_args(std::vector<std::string> extra = {}) {
  std::vector<std::string> args = {
      "--pool.workers=1",
      "--models.names=mini,prefixed",
      "--models.mini.kind=bert",
      "--models.mini.path=" + bert_fixture("mini-mean"),
      "--models.prefixed.kind=bert",
      "--models.prefixed.path=" + bert_fixture("mini-mean-norm-prefixed"),
  };
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

double l2(const std::vector<float>& v) {
  double s = 0;
  for (float x : v)
    s += static_cast<double>(x) * x;
  return std::sqrt(s);
}

}  // namespace

TEST_CASE("GET /v1/models lists every served model and /v1/models/{id} retrieves one",
          "[http][openai]") {
  http_node n{bert_node_args()};
  auto list = n.http.Get("/v1/models");
  REQUIRE(list);
  REQUIRE(list->status == 200);
  auto body = json::parse(list->body);
  CHECK(body["object"] == "list");
  std::vector<std::string> ids;
  for (const auto& m : body["data"]) {
    CHECK(m["object"] == "model");
    CHECK(m["owned_by"] == "embedpool");
    CHECK(m["created"].is_number_integer());
    ids.push_back(m["id"].get<std::string>());
  }
  CHECK(ids == std::vector<std::string>{default_model, "mini", "prefixed"});
  auto one = n.http.Get("/v1/models/mini");
  REQUIRE(one);
  REQUIRE(one->status == 200);
  CHECK(json::parse(one->body)["id"] == "mini");
  check_error(n.http.Get("/v1/models/nope"), 404, "model_not_found");
}

TEST_CASE("usage counts each model's tokens as its worker counted them",
          "[http][usage]") {
  http_node n{bert_node_args()};
  auto usage = [&](const std::string& model, const json& input) {
    auto res = n.post("/v1/embeddings", json{{"model", model}, {"input", input}}.dump());
    REQUIRE(res);
    INFO(res->body);
    REQUIRE(res->status == 200);
    return json::parse(res->body)["usage"]["prompt_tokens"].get<int>();
  };
  // "hello world": two words for the hash model; [CLS] hello world [SEP] for BERT.
  CHECK(usage(default_model, "hello world") == 2);
  CHECK(usage("mini", "hello world") == 4);
  CHECK(usage("mini", json::array({"hello world", "the first world"})) == 4 + 5);
  // A prompt's tokens are counted: "query: " adds two.
  auto res = n.post(
      "/v1/embeddings",
      json{{"model", "prefixed"}, {"input", "hello world"}, {"task", "query"}}.dump());
  REQUIRE(res);
  REQUIRE(res->status == 200);
  CHECK(json::parse(res->body)["usage"]["prompt_tokens"] == 6);
}

TEST_CASE("OpenAI input as token ids embeds exactly what the text would",
          "[http][openai]") {
  http_node n{bert_node_args()};
  auto embed = [&](const json& input) {
    auto res = n.post("/v1/embeddings", json{{"model", "mini"}, {"input", input}}.dump());
    REQUIRE(res);
    INFO(res->body);
    REQUIRE(res->status == 200);
    return json::parse(res->body);
  };
  // The ids of the model's own tokenizer (POST /tokenize), without specials.
  auto tok = n.post("/tokenize",
                    json{{"model", "mini"},
                         {"inputs", json::array({"hello , world !", "the first world"})},
                         {"add_special_tokens", false}}
                        .dump());
  REQUIRE(tok);
  REQUIRE(tok->status == 200);
  std::vector<std::vector<int64_t>> ids;
  for (const auto& row : json::parse(tok->body)) {
    ids.emplace_back();
    for (const auto& t : row)
      ids.back().push_back(t["id"].get<int64_t>());
  }
  REQUIRE(ids.size() == 2);
  // The same tokens give the same vectors, up to float rounding: a worker
  // cuts micro-batches by its time estimate, so under load the two requests
  // may be computed in chunks of other shapes (another BLAS summation order).
  auto same_vector = [](const json& a, const json& b) {
    REQUIRE(a.size() == b.size());
    for (size_t j = 0; j < a.size(); ++j)
      REQUIRE(a[j].get<double>() == Approx(b[j].get<double>()).margin(1e-5));
  };
  auto by_text = embed(json::array({"hello , world !", "the first world"}));
  auto by_ids = embed(ids);
  REQUIRE(by_ids["data"].size() == 2);
  for (size_t i = 0; i < 2; ++i) {
    CHECK(by_ids["data"][i]["index"] == i);
    same_vector(by_ids["data"][i]["embedding"], by_text["data"][i]["embedding"]);
  }
  CHECK(by_ids["usage"] == by_text["usage"]);
  auto single = embed(ids[0]);  // one input as an array of ids
  REQUIRE(single["data"].size() == 1);
  same_vector(single["data"][0]["embedding"], by_text["data"][0]["embedding"]);
  // Out-of-range ids, and token ids for a model without a vocabulary.
  check_error(n.post("/v1/embeddings",
                     json{{"model", "mini"}, {"input", json::array({999999})}}.dump()),
              422, "invalid_input");
  auto hash = n.post("/v1/embeddings", R"({"input":[[1,2,3]]})");
  check_error(hash, 422, "invalid_input");
  CHECK(hash->body.find("no vocabulary") != std::string::npos);
  check_error(n.post("/v1/embeddings", R"({"input":[[1,2],"text"]})"), 422,
              "invalid_input");  // hash: the ids are refused
  check_error(n.post("/v1/embeddings", R"({"input":[[1,"x"]]})"), 422, "invalid_input");
}

TEST_CASE("2,048 OpenAI inputs are split into batch requests of pool.max-batch-items",
          "[http][openai]") {
  http_node n{{"--pool.max-batch-items=256"}};
  std::vector<std::string> texts;
  for (int i = 0; i < 2048; ++i)
    texts.push_back("text number " + std::to_string(i));
  auto res = n.post("/v1/embeddings", json{{"input", texts}}.dump());
  REQUIRE(res);
  REQUIRE(res->status == 200);
  auto body = json::parse(res->body);
  REQUIRE(body["data"].size() == texts.size());
  for (size_t i = 0; i < texts.size(); ++i)
    REQUIRE(body["data"][i]["index"] == i);
  CHECK(body["usage"]["prompt_tokens"] == 3 * 2048);
  // In order: spot-check rows against the actor path.
  for (size_t i : {size_t{0}, size_t{255}, size_t{256}, size_t{1000}, size_t{2047}}) {
    INFO("row " << i);
    CHECK(to_floats(body["data"][i]["embedding"]) == reference(n, {texts[i]})[0]);
  }
  // Eight batch requests spent batch credits like any other.
  auto metrics = n.http.Get("/metrics");
  REQUIRE(metrics);
  CHECK(sample_value(metrics->body, "embedpool_requests_accepted_total{model=\"" +
                                        default_model + "\"}") == 8 + 5);
  // More than OpenAI's 2,048 inputs.
  auto too_many = n.post("/v1/embeddings",
                         json{{"input", std::vector<std::string>(2049, "x")}}.dump());
  check_error(too_many, 413, "too_large");
  CHECK(too_many->body.find("2048") != std::string::npos);
  // Any failing part makes one error answer: the last batch holds an empty text.
  texts.back() = "";
  check_error(n.post("/v1/embeddings", json{{"input", texts}}.dump()), 422,
              "invalid_input");
}

TEST_CASE("OpenAI dimensions: the model's own, or fewer for a Matryoshka model",
          "[http][openai]") {
  SECTION("model.matryoshka = false refuses other dimensions naming the model's") {
    http_node n;
    auto same = n.post("/v1/embeddings", R"({"input":"x","dimensions":384})");
    REQUIRE(same);
    CHECK(same->status == 200);
    for (const char* dims : {"100", "385", "0", "\"64\""}) {
      auto res = n.post("/v1/embeddings",
                        std::string{R"({"input":"x","dimensions":)"} + dims + "}");
      check_error(res, 422, "invalid_input");
      CHECK(res->body.find("384") != std::string::npos);
      CHECK(json::parse(res->body)["error"]["param"] == "dimensions");
    }
  }
  SECTION("model.matryoshka = true truncates and renormalises") {
    http_node n{{"--model.matryoshka=true"}};
    auto full = reference(n, {"matryoshka text"})[0];
    auto res =
        n.post("/v1/embeddings", R"({"input":["matryoshka text"],"dimensions":100})");
    REQUIRE(res);
    REQUIRE(res->status == 200);
    auto row = to_floats(json::parse(res->body)["data"][0]["embedding"]);
    REQUIRE(row.size() == 100);
    CHECK(l2(row) == Approx(1.0).epsilon(1e-5));
    std::vector<float> prefix(full.begin(), full.begin() + 100);
    const double scale = 1.0 / l2(prefix);
    for (size_t j = 0; j < 100; ++j)
      CHECK(row[j] == Approx(prefix[j] * scale).margin(1e-6));
    check_error(n.post("/v1/embeddings", R"({"input":"x","dimensions":385})"), 422,
                "invalid_input");
  }
}

TEST_CASE(
    "Tasks: prompts by name over OpenAI, TEI and BASP, and unknown tasks refused naming "
    "the known ones",
    "[http][tasks]") {
  http_node n{bert_node_args()};
  auto cl = n.actor_client();
  const std::string text = "he was one of the first";
  auto query = cl->embed(text, "query", "prefixed");
  REQUIRE(query);
  auto plain = cl->embed(text, "", "prefixed");
  REQUIRE(plain);
  CHECK(*query != *plain);
  auto openai =
      n.post("/v1/embeddings",
             json{{"model", "prefixed"}, {"input", text}, {"task", "query"}}.dump());
  REQUIRE(openai);
  REQUIRE(openai->status == 200);
  CHECK(to_floats(json::parse(openai->body)["data"][0]["embedding"]) == *query);
  auto tei = n.post(
      "/embed",
      json{{"model", "prefixed"}, {"inputs", text}, {"prompt_name", "query"}}.dump());
  REQUIRE(tei);
  REQUIRE(tei->status == 200);
  CHECK(to_floats(json::parse(tei->body)[0]) == *query);
  // Unknown tasks: over BASP, OpenAI and TEI, for a model with prompts and
  // for models without any.
  auto basp = cl->embed(text, "document", "prefixed");
  REQUIRE_FALSE(basp);
  CHECK(pool::pool_code(basp.error()) == pool::pool_errc::invalid_input);
  CHECK_THAT(pool::error_message(basp.error()),
             Catch::Contains("document") && Catch::Contains("passage, query"));
  CHECK_FALSE(cl->embed(text, "query", "mini"));
  CHECK_FALSE(cl->embed(text, "query"));
  auto bad =
      n.post("/v1/embeddings",
             json{{"model", "prefixed"}, {"input", text}, {"task", "nope"}}.dump());
  check_error(bad, 422, "invalid_input");
  CHECK(bad->body.find("passage, query") != std::string::npos);
  check_error(n.post("/embed", json{{"inputs", text}, {"prompt_name", "query"}}.dump()),
              422, "invalid_input");
}

TEST_CASE("TEI /embed honours normalize, truncate, truncation_direction or refuses them",
          "[http][tei]") {
  http_node n{bert_node_args()};
  auto cl = n.actor_client();
  const std::string text = "the first world";
  auto raw = cl->embed(text, "", "mini");  // no Normalize module: raw mean pooling
  REQUIRE(raw);
  REQUIRE(l2(*raw) != Approx(1.0));
  auto embed = [&](json body) {
    body["model"] = "mini";
    body["inputs"] = text;
    return n.post("/embed", body.dump());
  };
  auto normalized = embed(json::object());  // TEI's default: normalize = true
  REQUIRE(normalized);
  REQUIRE(normalized->status == 200);
  auto row = to_floats(json::parse(normalized->body)[0]);
  CHECK(l2(row) == Approx(1.0).epsilon(1e-5));
  for (size_t j = 0; j < row.size(); ++j)
    CHECK(row[j] == Approx((*raw)[j] / l2(*raw)).margin(1e-6));
  auto unnormalized = embed({{"normalize", false}});
  REQUIRE(unnormalized);
  REQUIRE(unnormalized->status == 200);
  CHECK(to_floats(json::parse(unnormalized->body)[0]) == *raw);
  // The hash model and Normalize models cannot give unnormalised vectors.
  check_error(n.post("/embed", R"({"inputs":"x","normalize":false})"), 422,
              "invalid_input");
  check_error(n.post("/embed", R"({"inputs":"x","model":"prefixed","normalize":false})"),
              422, "invalid_input");
  // truncate: the node's model.truncate (true) is honoured, false refused.
  auto ok = embed({{"truncate", true}, {"truncation_direction", "Right"}});
  REQUIRE(ok);
  CHECK(ok->status == 200);
  auto t = embed({{"truncate", false}});
  check_error(t, 422, "invalid_input");
  CHECK(t->body.find("model.truncate") != std::string::npos);
  check_error(embed({{"truncation_direction", "Left"}}), 422, "invalid_input");
  check_error(embed({{"truncation_direction", "Up"}}), 422, "invalid_input");
  check_error(embed({{"normalize", "yes"}}), 422, "invalid_input");
}

TEST_CASE(
    "model.truncate = false refuses a too-long text with too_large naming its "
    "tokens and the limit",
    "[http][truncate]") {
  http_node n{bert_node_args({"--models.mini.truncate=false"})};
  std::string long_text;
  for (int i = 0; i < 60; ++i)
    long_text += "world ";
  auto res =
      n.post("/v1/embeddings",
             json{{"model", "mini"}, {"input", json::array({"fine", long_text})}}.dump());
  check_error(res, 413, "too_large");
  CHECK_THAT(json::parse(res->body)["error"]["message"].get<std::string>(),
             Catch::Contains("text 1 has 62 tokens") && Catch::Contains("limit of 48"));
  auto cl = n.actor_client();
  auto basp = cl->embed(long_text, "", "mini");
  REQUIRE_FALSE(basp);
  CHECK(pool::pool_code(basp.error()) == pool::pool_errc::too_large);
  // Truncation stays on for the other model, and the short text is fine.
  CHECK(cl->embed(long_text, "", "prefixed"));
  CHECK(cl->embed("fine", "", "mini"));
  // /info says so.
  auto info = n.http.Get("/info?model=mini");
  REQUIRE(info);
  CHECK(json::parse(info->body)["auto_truncate"] == false);
}

TEST_CASE("TEI /info, /tokenize, /embed_all, /health and timing headers", "[http][tei]") {
  http_node n{bert_node_args()};
  auto info = n.http.Get("/info?model=prefixed");
  REQUIRE(info);
  REQUIRE(info->status == 200);
  auto i = json::parse(info->body);
  CHECK(i["model_id"] == "prefixed");
  CHECK(i["dim"] == 32);
  CHECK(i["max_input_length"] == 48);
  CHECK(i["max_client_batch_size"] == 256);
  CHECK(i["model_type"]["embedding"]["pooling"] == "mean");
  CHECK(i["model_dtype"] == "float32");
  CHECK(i["version"].is_string());
  CHECK(i["tasks"] == json::array({"passage", "query"}));
  auto hash_info = n.http.Get("/info");
  REQUIRE(hash_info);
  CHECK(json::parse(hash_info->body)["model_id"] == default_model);
  check_error(n.http.Get("/info?model=nope"), 404, "model_not_found");

  auto tok = n.post("/tokenize", R"({"model":"mini","inputs":"hello world"})");
  REQUIRE(tok);
  REQUIRE(tok->status == 200);
  auto tokens = json::parse(tok->body);
  REQUIRE(tokens.size() == 1);
  REQUIRE(tokens[0].size() == 4);
  CHECK(tokens[0][0]["text"] == "[CLS]");
  CHECK(tokens[0][0]["special"] == true);
  CHECK(tokens[0][1]["text"] == "hello");
  CHECK(tokens[0][1]["special"] == false);
  CHECK(tokens[0][3]["text"] == "[SEP]");
  auto prompted = n.post(
      "/tokenize", R"({"model":"prefixed","inputs":"hello","prompt_name":"query"})");
  REQUIRE(prompted);
  REQUIRE(prompted->status == 200);
  CHECK(json::parse(prompted->body)[0][1]["text"] == "query");
  check_error(n.post("/tokenize", R"({"inputs":"hello"})"), 422,
              "invalid_input");  // hash

  check_error(n.post("/embed_all", R"({"inputs":"x"})"), 501, "not_implemented");
  auto health = n.http.Get("/health");
  REQUIRE(health);
  CHECK(health->status == 200);

  auto res = n.post("/embed", R"({"model":"mini","inputs":["hello world","the first"]})");
  REQUIRE(res);
  REQUIRE(res->status == 200);
  CHECK(res->get_header_value("x-compute-tokens") == "8");
  CHECK(res->get_header_value("x-compute-characters") == "20");
  for (const char* h : {"x-compute-time", "x-queue-time", "x-inference-time"}) {
    INFO(h);
    REQUIRE(res->has_header(h));
    CHECK(std::stoll(res->get_header_value(h)) >= 0);
  }
}

TEST_CASE("LangChain JS OpenAIEmbeddings with its default settings embeds documents",
          "[http][openai][langchain]") {
  const std::string dir = std::string{EMBEDPOOL_SOURCE_DIR} + "/tools/langchain_check";
  INFO("install the client first: (cd tools/langchain_check && npm ci)");
  REQUIRE(std::filesystem::exists(dir + "/node_modules/@langchain/openai/package.json"));
  http_node n;
  // 600 documents: LangChain sends batches of 512 and 88, which the node cuts
  // into batch requests of pool.max-batch-items (256).
  std::vector<std::string> texts;
  for (int i = 0; i < 600; ++i)
    texts.push_back("document " + std::to_string(i) + " about embeddings");
  std::vector<std::vector<float>> want;
  for (size_t first = 0; first < texts.size(); first += 200) {
    auto part =
        reference(n, std::vector<std::string>(
                         texts.begin() + static_cast<std::ptrdiff_t>(first),
                         texts.begin() + static_cast<std::ptrdiff_t>(first + 200)));
    want.insert(want.end(), part.begin(), part.end());
  }
  temp_dir tmp;
  auto expected_file = (tmp.path() / "expected.json").string();
  std::ofstream{expected_file} << json{{"texts", texts}, {"embeddings", want}}.dump();
  auto r = run_command({"/usr/bin/node", dir + "/check.mjs",
                        "http://127.0.0.1:" + std::to_string(n.port) + "/v1",
                        default_model, expected_file},
                       tool_timeout);
  INFO(r.out << r.err);
  CHECK(r.status.exited);
  CHECK(r.status.code == 0);
  CHECK(r.out.find("langchain-check: ok") != std::string::npos);
}

TEST_CASE(
    "A model directory setting of the wrong type, or a missing Pooling folder, stops "
    "the node with exit 2 naming the file and the key",
    "[config][bert]") {
  namespace fs = std::filesystem;
  temp_dir tmp;
  const auto dir = tmp.path() / "model";
  fs::copy(bert_fixture("mini-mean"), dir, fs::copy_options::recursive);
  auto run = [&] {
    return run_command({EMBEDPOOL_NODE_BIN, "--node.port=0", "--log.file=",
                        "--model.kind=bert", "--model.path=" + dir.string()},
                       tool_timeout);
  };
  std::ofstream{dir / "tokenizer_config.json"} << R"({"strip_accents":"no"})";
  auto strip = run();
  CHECK(strip.status.exited);
  CHECK(strip.status.code == 2);
  CHECK_THAT(strip.err, Catch::Contains("tokenizer_config.json") &&
                            Catch::Contains("strip_accents"));
  std::ofstream{dir / "tokenizer_config.json"} << R"({"tokenize_chinese_chars":null})";
  fs::remove_all(dir / "1_Pooling");
  auto pooling = run();
  CHECK(pooling.status.exited);
  CHECK(pooling.status.code == 2);
  CHECK_THAT(pooling.err,
             Catch::Contains("modules.json") && Catch::Contains("1_Pooling"));
}
