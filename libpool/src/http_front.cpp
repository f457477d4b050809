#include "http_front.hpp"

#include <algorithm>
#include <charconv>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include <httplib.h>
#include <caf/all.hpp>
#include <nlohmann/json.hpp>

#include "actors.hpp"
#include "logging.hpp"
#include "metrics.hpp"
#include "pool/protocol.hpp"

namespace pool::detail {

namespace {

using json = nlohmann::json;

/// Seconds a client is told to wait after `overloaded` (the supervisor's
/// 100 ms hint, rounded up to HTTP's whole seconds).
constexpr const char* retry_after_seconds = "1";
/// Keep-alive: an idle connection gives its thread back after this long.
constexpr time_t keep_alive_seconds = 2;
constexpr size_t keep_alive_max_requests = 1000;
/// Bound on a status or metrics query.
constexpr auto status_timeout = std::chrono::seconds(10);

/// httplib's task queue with bounded admission: `enqueue` (called by the
/// accept loop) waits while `max_open` connections are being served or are
/// waiting for a thread, so further connections stay in the kernel backlog.
class bounded_task_queue : public httplib::TaskQueue {
 public:
  bounded_task_queue(size_t threads, size_t max_open) : max_open_(max_open) {
    for (size_t i = 0; i < threads; ++i)
      threads_.emplace_back([this] { run(); });
  }

  void enqueue(std::function<void()> fn) override {
    std::unique_lock<std::mutex> lock{mtx_};
    room_.wait(lock, [this] { return stopping_ || active_ + jobs_.size() < max_open_; });
    // After shutdown the job still runs (it owns and closes the socket).
    jobs_.push_back(std::move(fn));
    work_.notify_one();
  }

  void shutdown() override {
    {
      std::lock_guard<std::mutex> guard{mtx_};
      stopping_ = true;
    }
    work_.notify_all();
    room_.notify_all();
    for (auto& t : threads_)
      t.join();
    threads_.clear();
  }

 private:
  void run() {
    for (;;) {
      std::function<void()> fn;
      {
        std::unique_lock<std::mutex> lock{mtx_};
        work_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
        if (jobs_.empty())
          return;  // stopping and nothing left
        fn = std::move(jobs_.front());
        jobs_.pop_front();
        ++active_;
      }
      fn();
      {
        std::lock_guard<std::mutex> guard{mtx_};
        --active_;
      }
      room_.notify_one();
    }
  }

  const size_t max_open_;
  std::mutex mtx_;
  std::condition_variable work_;
  std::condition_variable room_;
  std::deque<std::function<void()>> jobs_;  // at most max_open_ - active_
  size_t active_ = 0;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

/// HTTP status of a request error.
int status_of(const caf::error& err) {
  if (auto code = pool_code(err)) {
    switch (*code) {
      case pool_errc::overloaded:
        return 429;
      case pool_errc::too_large:
        return 413;
      case pool_errc::invalid_input:
        return 422;
      case pool_errc::shutting_down:
      case pool_errc::unavailable:
        return 503;
      case pool_errc::deadline_exceeded:
        return 504;
      case pool_errc::worker_failed:
      case pool_errc::protocol_mismatch:
        break;
    }
    return 500;
  }
  if (err == caf::sec::request_timeout)
    return 504;
  if (err == caf::sec::request_receiver_down)
    return 503;
  return 500;
}

/// The `code` field of an error body.
std::string code_of(const caf::error& err) {
  if (auto code = pool_code(err))
    return to_string(*code);
  if (err == caf::sec::request_timeout)
    return "deadline_exceeded";
  if (err == caf::sec::request_receiver_down)
    return "unavailable";
  return "internal_error";
}

const char* type_of(int status) {
  if (status == 429)
    return "rate_limit_error";
  if (status >= 500)
    return "server_error";
  return "invalid_request_error";
}

void send_error(httplib::Response& res, int status, const std::string& code,
                const std::string& message) {
  json body = {
      {"error", {{"message", message}, {"type", type_of(status)}, {"code", code}}}};
  res.status = status;
  if (status == 429)
    res.set_header("Retry-After", retry_after_seconds);
  res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace),
                  "application/json");
}

void send_error(httplib::Response& res, const caf::error& err) {
  auto message = pool_code(err) ? error_message(err) : describe(err);
  send_error(res, status_of(err), code_of(err), message);
}

void send_invalid(httplib::Response& res, const std::string& message) {
  send_error(res, 422, "invalid_input", message);
}

/// Appends the shortest decimal text that reads back as exactly `v`.
void append_float(std::string& out, float v) {
  char buf[32];
  auto r = std::to_chars(buf, buf + sizeof(buf), v);
  out.append(buf, r.ptr);
}

void append_row_json(std::string& out, const float* row, size_t dim) {
  out += '[';
  for (size_t j = 0; j < dim; ++j) {
    if (j > 0)
      out += ',';
    append_float(out, row[j]);
  }
  out += ']';
}

/// Base64 of the row's float32 values in little-endian byte order (what the
/// OpenAI clients decode for `encoding_format: "base64"`).
void append_row_base64(std::string& out, const float* row, size_t dim) {
  static_assert(sizeof(float) == 4, "float32 expected");
  static constexpr char alphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::vector<unsigned char> bytes(dim * 4);
  for (size_t j = 0; j < dim; ++j) {
    uint32_t bits;
    std::memcpy(&bits, row + j, 4);
    for (int b = 0; b < 4; ++b)
      bytes[j * 4 + static_cast<size_t>(b)] = static_cast<unsigned char>(bits >> (8 * b));
  }
  out += '"';
  size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    uint32_t n =
        (uint32_t{bytes[i]} << 16) | (uint32_t{bytes[i + 1]} << 8) | bytes[i + 2];
    out += alphabet[(n >> 18) & 63];
    out += alphabet[(n >> 12) & 63];
    out += alphabet[(n >> 6) & 63];
    out += alphabet[n & 63];
  }
  if (auto rest = bytes.size() - i; rest > 0) {
    uint32_t n = uint32_t{bytes[i]} << 16;
    if (rest == 2)
      n |= uint32_t{bytes[i + 1]} << 8;
    out += alphabet[(n >> 18) & 63];
    out += alphabet[(n >> 12) & 63];
    out += rest == 2 ? alphabet[(n >> 6) & 63] : '=';
    out += '=';
  }
  out += '"';
}

/// Texts of an `input` / `inputs` field: a string (single = true) or an array
/// of strings. Returns an error message naming `field`, or "".
std::string read_texts(const json& body, const char* field,
                       std::vector<std::string>& texts, bool& single) {
  auto it = body.find(field);
  if (it == body.end())
    return std::string{field} + " is missing";
  if (it->is_string()) {
    single = true;
    texts.push_back(it->get<std::string>());
    return {};
  }
  if (!it->is_array())
    return std::string{field} + ": expected a string or an array of strings";
  single = false;
  texts.reserve(it->size());
  for (size_t i = 0; i < it->size(); ++i) {
    auto& x = (*it)[i];
    if (!x.is_string())
      return std::string{field} + "[" + std::to_string(i) +
             "]: expected a string (token arrays are not supported)";
    texts.push_back(x.get<std::string>());
  }
  return {};
}

http_endpoint endpoint_of(const std::string& path) {
  if (path == "/health/live")
    return http_endpoint::live;
  if (path == "/health/ready")
    return http_endpoint::ready;
  if (path == "/v1/embeddings")
    return http_endpoint::embeddings;
  if (path == "/embed")
    return http_endpoint::tei_embed;
  if (path == "/metrics")
    return http_endpoint::metrics;
  return http_endpoint::other;
}

}  // namespace

struct http_front::impl {
  caf::actor_system& sys;
  caf::actor supervisor;
  http_front_config cfg;
  std::shared_ptr<model_metrics> metrics;
  httplib::Server server;
  std::thread listener;
  std::mutex gateway_mtx;
  caf::actor gateway;               // cached; refreshed from the supervisor when it dies
  std::vector<std::string> models;  // every model served, default first
  std::shared_ptr<spdlog::logger> log = get_logger("http");

  impl(caf::actor_system& system, caf::actor sup, http_front_config config)
      : sys(system), supervisor(std::move(sup)), cfg(std::move(config)) {
    metrics = cfg.metrics->model(cfg.model_name);
    models.push_back(cfg.model_name);
  }

  /// Learns every model the node serves from the supervisor's status (the
  /// default alone if it does not answer).
  void load_models() {
    caf::scoped_actor self{sys};
    self->request(supervisor, status_timeout, status_atom::value)
        .receive(
            [&](pool_status& st) {
              if (!st.models.empty())
                models = st.models;
            },
            [](caf::error&) {});
  }

  /// The current gateway; asks the supervisor when none is cached (or when
  /// `refresh`). Null if the supervisor is gone or has none right now.
  caf::actor current_gateway(bool refresh) {
    {
      std::lock_guard<std::mutex> guard{gateway_mtx};
      if (gateway && !refresh)
        return gateway;
    }
    caf::scoped_actor self{sys};
    caf::actor fresh;
    self->request(supervisor, status_timeout, gateway_atom::value)
        .receive([&](caf::actor& gw) { fresh = std::move(gw); }, [](caf::error&) {});
    std::lock_guard<std::mutex> guard{gateway_mtx};
    gateway = fresh;
    return fresh;
  }

  /// Sends one request to the gateway and waits for its reply (bounded); one
  /// retry with a fresh gateway handle if the cached one has died.
  template <class Reply, class... Ts>
  caf::expected<Reply> ask(caf::timespan timeout, const Ts&... xs) {
    for (int attempt = 0; attempt < 2; ++attempt) {
      auto gw = current_gateway(attempt > 0);
      if (!gw)
        return make_error(pool_errc::unavailable, "the node has no gateway right now");
      caf::scoped_actor self{sys};
      caf::expected<Reply> result{caf::error{}};
      self->request(gw, timeout, xs...)
          .receive([&](Reply& reply) { result = std::move(reply); },
                   [&](caf::error& err) { result = std::move(err); });
      if (result || result.error() != caf::sec::request_receiver_down)
        return result;
    }
    return make_error(pool_errc::unavailable, "the node's gateway is gone");
  }

  /// Embeds through the gateway: a single text on the embed lane, an array
  /// on the batch lane, naming `model` only when it is not the default.
  caf::expected<matrix> embed(std::vector<std::string>& texts, bool single,
                              const std::string& model) {
    std::string task;
    bool named = !model.empty() && model != cfg.model_name;
    if (single && named)
      return ask<matrix>(cfg.request_timeout, embed_atom::value, texts.front(), task,
                         model);
    if (single)
      return ask<matrix>(cfg.request_timeout, embed_atom::value, texts.front(), task);
    if (named)
      return ask<matrix>(cfg.request_timeout, batch_atom::value, texts, task, model);
    return ask<matrix>(cfg.request_timeout, batch_atom::value, texts, task);
  }

  /// Parses the body as a JSON object; on failure answers 422 and returns false.
  static bool parse_body(const httplib::Request& req, httplib::Response& res,
                         json& body) {
    body = json::parse(req.body, nullptr, false);
    if (body.is_discarded()) {
      send_invalid(res, "request body is not valid JSON");
      return false;
    }
    if (!body.is_object()) {
      send_invalid(res, "request body must be a JSON object");
      return false;
    }
    return true;
  }

  /// The `model` field: absent or "" = the default; an unknown name answers
  /// 422 naming it and returns false.
  bool read_model(const json& body, httplib::Response& res, std::string& model) {
    auto it = body.find("model");
    if (it == body.end() || it->is_null()) {
      model.clear();
      return true;
    }
    if (!it->is_string()) {
      send_invalid(res, "model: expected a string");
      return false;
    }
    model = it->get<std::string>();
    if (!model.empty() &&
        std::find(models.begin(), models.end(), model) == models.end()) {
      std::string served;
      for (auto& name : models)
        served += (served.empty() ? "\"" : ", \"") + name + "\"";
      send_invalid(res, "unknown model \"" + bounded(model, 128) +
                            "\"; this node serves " + served);
      return false;
    }
    return true;
  }

  /// Reads `model` and the texts of `field` from a parsed body and embeds
  /// them into `out`; on any failure answers the error and returns false.
  bool embed_field(const json& body, const char* field, httplib::Response& res,
                   std::string& model, std::vector<std::string>& texts, matrix& out) {
    if (!read_model(body, res, model))
      return false;
    bool single = false;
    if (auto err = read_texts(body, field, texts, single); !err.empty()) {
      send_invalid(res, err);
      return false;
    }
    auto result = embed(texts, single, model);
    if (!result) {
      send_error(res, result.error());
      return false;
    }
    out = std::move(*result);
    return true;
  }

  void on_openai(const httplib::Request& req, httplib::Response& res) {
    json body;
    if (!parse_body(req, res, body))
      return;
    bool base64 = false;
    if (auto it = body.find("encoding_format"); it != body.end() && !it->is_null()) {
      if (!it->is_string() || (*it != "float" && *it != "base64"))
        return send_invalid(res, "encoding_format: expected \"float\" or \"base64\"");
      base64 = *it == "base64";
    }
    std::string model;
    std::vector<std::string> texts;
    matrix m;
    if (!embed_field(body, "input", res, model, texts, m))
      return;
    if (auto it = body.find("dimensions");
        it != body.end() && !it->is_null() && (!it->is_number_unsigned() || *it != m.dim))
      return send_invalid(res, "dimensions: this model's embeddings have " +
                                   std::to_string(m.dim) + " dimensions");
    std::vector<std::string_view> views(texts.begin(), texts.end());
    auto tokens = cfg.model ? cfg.model->count_tokens(views) : 0;
    std::string out;
    out.reserve(64 + m.values.size() * (base64 ? 6 : 12));
    out += R"({"object":"list","data":[)";
    for (uint32_t i = 0; i < m.rows; ++i) {
      if (i > 0)
        out += ',';
      out += R"({"object":"embedding","index":)";
      out += std::to_string(i);
      out += R"(,"embedding":)";
      auto* row = m.values.data() + static_cast<size_t>(i) * m.dim;
      if (base64)
        append_row_base64(out, row, m.dim);
      else
        append_row_json(out, row, m.dim);
      out += '}';
    }
    out += R"(],"model":)";
    out += json(model.empty() ? cfg.model_name : model).dump();
    out += R"(,"usage":{"prompt_tokens":)";
    out += std::to_string(tokens);
    out += R"(,"total_tokens":)";
    out += std::to_string(tokens);
    out += "}}";
    res.set_content(out, "application/json");
  }

  void on_tei(const httplib::Request& req, httplib::Response& res) {
    json body;
    if (!parse_body(req, res, body))
      return;
    std::string model;
    std::vector<std::string> texts;
    matrix m;
    if (!embed_field(body, "inputs", res, model, texts, m))
      return;
    std::string out;
    out.reserve(2 + m.values.size() * 12);
    out += '[';
    for (uint32_t i = 0; i < m.rows; ++i) {
      if (i > 0)
        out += ',';
      append_row_json(out, m.values.data() + static_cast<size_t>(i) * m.dim, m.dim);
    }
    out += ']';
    res.set_content(out, "application/json");
  }

  void on_ready(httplib::Response& res) {
    auto st = ask<pool_status>(status_timeout, status_atom::value);
    if (!st)
      return send_error(res, 503, "unavailable", "no status: " + describe(st.error()));
    auto ready = std::count_if(st->workers.begin(), st->workers.end(),
                               [](const worker_status& w) { return w.state == "ready"; });
    json body = {{"status", "ready"},
                 {"ready_workers", ready},
                 {"draining", st->draining},
                 {"model", st->model}};
    if (ready == 0 || st->draining) {
      body["status"] = "not_ready";
      body["error"] = {{"message", st->draining ? "node is draining" : "no ready worker"},
                       {"type", "server_error"},
                       {"code", st->draining ? "shutting_down" : "unavailable"}};
      res.status = 503;
    }
    res.set_content(body.dump(), "application/json");
  }

  void on_metrics(httplib::Response& res) {
    auto text = ask<std::string>(status_timeout, metrics_atom::value);
    if (!text)
      return send_error(res, text.error());
    res.set_content(*text, "text/plain; version=0.0.4; charset=utf-8");
  }

  void install_routes() {
    server.Get("/health/live", [](const httplib::Request&, httplib::Response& res) {
      res.set_content(R"({"status":"live"})", "application/json");
    });
    server.Get("/health/ready", [this](const httplib::Request&, httplib::Response& res) {
      on_ready(res);
    });
    server.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      on_metrics(res);
    });
    server.Post("/v1/embeddings",
                [this](const httplib::Request& req, httplib::Response& res) {
                  on_openai(req, res);
                });
    server.Post("/embed", [this](const httplib::Request& req, httplib::Response& res) {
      on_tei(req, res);
    });
    // Every status >= 400 without a body of ours (404, 413 for an oversized
    // body, 400 for a malformed request) gets a JSON error body too.
    using error_handler = httplib::Server::HandlerWithResponse;
    server.set_error_handler(
        error_handler{[this](const httplib::Request&, httplib::Response& res) {
          if (!res.body.empty())
            return httplib::Server::HandlerResponse::Unhandled;
          switch (res.status) {
            case 404:
              send_error(res, 404, "not_found", "no such endpoint");
              break;
            case 413:
              send_error(res, 413, "too_large",
                         "request body over http.max-body-bytes (" +
                             std::to_string(cfg.http.max_body_bytes) + ")");
              break;
            default:
              send_error(res, res.status,
                         res.status >= 500 ? "internal_error" : "bad_request",
                         "HTTP " + std::to_string(res.status));
          }
          return httplib::Server::HandlerResponse::Handled;
        }});
    server.set_exception_handler(
        [](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
          std::string what = "unknown exception";
          try {
            std::rethrow_exception(ep);
          } catch (const std::exception& ex) {
            what = ex.what();
          } catch (...) {
          }
          send_error(res, 500, "internal_error", what);
        });
    server.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
      metrics->count_http(endpoint_of(req.path), res.status);
    });
  }
};

http_front::http_front(caf::actor_system& sys, caf::actor supervisor,
                       http_front_config cfg)
    : impl_(std::make_unique<impl>(sys, std::move(supervisor), std::move(cfg))) {}

http_front::~http_front() {
  stop();
}

caf::expected<uint16_t> http_front::start() {
  auto& d = *impl_;
  auto threads = d.cfg.http.threads;
  auto max_open = d.cfg.http.max_connections;
  d.server.new_task_queue = [threads, max_open] {
    return new bounded_task_queue(threads, max_open);
  };
  d.server.set_payload_max_length(d.cfg.http.max_body_bytes);
  d.server.set_keep_alive_timeout(keep_alive_seconds);
  d.server.set_keep_alive_max_count(keep_alive_max_requests);
  // Headers and body are written separately: without TCP_NODELAY, Nagle's
  // algorithm and the peer's delayed ACK add ~40 ms to keep-alive requests.
  d.server.set_tcp_nodelay(true);
  d.install_routes();
  d.load_models();
  int port = d.cfg.http.port;
  if (port == 0) {
    port = d.server.bind_to_any_port(d.cfg.http.host);
    if (port <= 0)
      return make_error(pool_errc::invalid_input,
                        "http.port: cannot bind a free port on " + d.cfg.http.host);
  } else if (!d.server.bind_to_port(d.cfg.http.host, port)) {
    return make_error(
        pool_errc::invalid_input,
        "http.port: cannot bind " + d.cfg.http.host + ":" + std::to_string(port));
  }
  d.listener = std::thread{[&d] { d.server.listen_after_bind(); }};
  log_event("http_listening")
      .add("host", d.cfg.http.host)
      .add("port", static_cast<unsigned>(port))
      .add("threads", d.cfg.http.threads)
      .add("max_connections", d.cfg.http.max_connections)
      .write(*d.log, spdlog::level::info);
  return static_cast<uint16_t>(port);
}

void http_front::stop() {
  if (!impl_ || !impl_->listener.joinable())
    return;
  // httplib's stop only acts on a running server: give the listener thread
  // (started by `start`, already bound) a moment to enter its accept loop.
  for (int i = 0; i < 200 && !impl_->server.is_running(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  impl_->server.stop();
  impl_->listener.join();
  log_event("http_stopped").write(*impl_->log, spdlog::level::info);
}

}  // namespace pool::detail
