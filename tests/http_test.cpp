// Multi-process tests of the HTTP front: real `embedpool-node` processes with
// `--http.port=0` on 127.0.0.1, called over HTTP (cpp-httplib's client), over
// BASP (pool::client, the reference "actor path"), through `embedpool-cli
// metrics`, `promtool check metrics` and the official OpenAI Node client.
#include <catch2/catch.hpp>

#include <csignal>
#include <cstring>
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
  // An unknown model is invalid_input naming it.
  auto unknown = n.post("/v1/embeddings", R"({"input":"x","model":"no-such-model"})");
  check_error(unknown, 422, "invalid_input");
  CHECK(unknown->body.find("no-such-model") != std::string::npos);
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

TEST_CASE("An overloaded node answers 429 with Retry-After", "[http]") {
  http_node n{{"--pool.workers=1", "--pool.embed-queue-capacity=1",
               "--pool.overload-policy=reject", "--fault.compute-delay=1500ms"}};
  // One slow request holds the only embed credit.
  auto slow = post_async(n.port, "/v1/embeddings", R"({"input":"slow"})");
  wait_for_in_flight(n, 1);
  auto res = n.post("/v1/embeddings", R"({"input":"fast"})");
  check_error(res, 429, "overloaded");
  CHECK(res->get_header_value("Retry-After") == "1");
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
  CHECK(sample_value(text, "embedpool_http_responses_total{" + m +
                               ",endpoint=\"/v1/embeddings\",status=\"200\"}") == 2);
  CHECK(sample_value(text, "embedpool_http_responses_total{" + m +
                               ",endpoint=\"/v1/embeddings\",status=\"422\"}") == 1);
  CHECK(sample_value(text, "embedpool_workers{" + m + ",state=\"ready\"}") == 2);
  CHECK(sample_value(text, "embedpool_resident_memory_bytes{" + m + "}") > 0);
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
