#include "http_front.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include <httplib.h>
#include <caf/all.hpp>
#include <nlohmann/json.hpp>

#include "access_log.hpp"
#include "actors.hpp"
#include "logging.hpp"
#include "metrics.hpp"
#include "pool/protocol.hpp"
#include "pool/version.hpp"

namespace pool::detail {

namespace {

using json = nlohmann::json;

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

/// The retry hint of an `overloaded` message ("... retry after 100ms") in
/// whole seconds, at least 1 (HTTP's Retry-After has no smaller unit).
uint64_t retry_after_of(const std::string& message) {
  auto pos = message.rfind("retry after ");
  uint64_t ms = 1000;
  if (pos != std::string::npos) {
    const char* first = message.data() + pos + 12;
    const char* last = message.data() + message.size();
    uint64_t n = 0;
    auto r = std::from_chars(first, last, n);
    if (r.ec == std::errc{} &&
        std::string_view(r.ptr, static_cast<size_t>(last - r.ptr)).rfind("ms", 0) == 0)
      ms = n;
  }
  return std::max<uint64_t>(1, (ms + 999) / 1000);
}

void send_error(httplib::Response& res, int status, const std::string& code,
                std::string message, const std::string& param = {}) {
  if (status == 429) {
    // Body, Retry-After and retry-after-ms (which the OpenAI clients prefer)
    // say the same thing.
    const auto seconds = retry_after_of(message);
    if (auto pos = message.rfind("retry after "); pos != std::string::npos)
      message.resize(pos);
    else
      message += "; ";
    message += "retry after " + std::to_string(seconds) + "s";
    res.set_header("Retry-After", std::to_string(seconds));
    res.set_header("retry-after-ms", std::to_string(seconds * 1000));
  }
  json body = {{"error",
                {{"message", message},
                 {"type", type_of(status)},
                 {"param", param.empty() ? json(nullptr) : json(param)},
                 {"code", code}}}};
  res.status = status;
  res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace),
                  "application/json");
}

void send_error(httplib::Response& res, const caf::error& err) {
  auto message = pool_code(err) ? error_message(err) : describe(err);
  send_error(res, status_of(err), code_of(err), message);
}

void send_invalid(httplib::Response& res, const std::string& message,
                  const std::string& param = {}) {
  send_error(res, 422, "invalid_input", message, param);
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

/// Most inputs of one OpenAI request (OpenAI's own limit).
constexpr size_t max_openai_inputs = 2048;

/// Version reported by GET /info.

/// A request field refused: 422 naming the field.
struct field_error {
  std::string param;
  std::string message;
};

/// Texts of a TEI `inputs` field: a string (single = true) or an array of
/// strings. Returns an error message naming `field`, or "".
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
      return std::string{field} + "[" + std::to_string(i) + "]: expected a string";
    texts.push_back(x.get<std::string>());
  }
  return {};
}

/// True if `x` is an array of integers (one token-id input).
bool is_token_array(const json& x) {
  if (!x.is_array() || x.empty())
    return false;
  for (const auto& t : x)
    if (!t.is_number_integer())
      return false;
  return true;
}

/// Reads a token-id input into `ids`; false if an id does not fit int64.
void read_token_ids(const json& x, std::vector<int64_t>& ids) {
  ids.clear();
  ids.reserve(x.size());
  for (const auto& t : x)
    ids.push_back(
        t.is_number_unsigned() && t.get<uint64_t>() > INT64_MAX ? -1 : t.get<int64_t>());
}

/// Checks that `body` has no key outside `known`; the message names it.
std::string unknown_field(const json& body, std::initializer_list<const char*> known) {
  for (const auto& [key, value] : body.items()) {
    bool ok = false;
    for (const char* k : known)
      ok = ok || key == k;
    if (!ok)
      return key;
  }
  return {};
}

/// L2-normalises the first `dims` values of every row into a matrix of
/// `dims` columns.
void truncate_and_normalize(matrix& m, uint32_t dims) {
  std::vector<float> out(static_cast<size_t>(m.rows) * dims);
  for (uint32_t i = 0; i < m.rows; ++i) {
    const float* row = m.values.data() + static_cast<size_t>(i) * m.dim;
    double norm = 0;
    for (uint32_t j = 0; j < dims; ++j)
      norm += static_cast<double>(row[j]) * row[j];
    const float scale = norm > 0 ? static_cast<float>(1.0 / std::sqrt(norm)) : 0.0f;
    for (uint32_t j = 0; j < dims; ++j)
      out[static_cast<size_t>(i) * dims + j] = row[j] * scale;
  }
  m.values = std::move(out);
  m.dim = dims;
}

/// The method an endpoint answers ("" for an unknown path): a known path
/// asked with another method gets 405 with it in `Allow`.
std::string allowed_method(const std::string& path) {
  if (path == "/v1/embeddings" || path == "/embed" || path == "/tokenize" ||
      path == "/embed_all")
    return "POST";
  if (path == "/health/live" || path == "/health/ready" || path == "/health" ||
      path == "/metrics" || path == "/info" || path == "/v1/models" ||
      path.rfind("/v1/models/", 0) == 0)
    return "GET";
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
  if (path == "/v1/models" || path.rfind("/v1/models/", 0) == 0)
    return http_endpoint::models;
  if (path == "/info")
    return http_endpoint::info;
  if (path == "/tokenize")
    return http_endpoint::tokenize;
  if (path == "/embed_all")
    return http_endpoint::embed_all;
  if (path == "/health")
    return http_endpoint::health;
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
  caf::actor gateway;  // cached; refreshed from the supervisor when it dies
  std::shared_ptr<spdlog::logger> log = get_logger("http");

  impl(caf::actor_system& system, caf::actor sup, http_front_config config)
      : sys(system), supervisor(std::move(sup)), cfg(std::move(config)) {
    metrics = cfg.metrics->model(cfg.model_name);
    if (cfg.models.empty())
      cfg.models.push_back(http_model{cfg.model_name, cfg.model});
  }

  /// The served model `name` ("" = the default), or null.
  const http_model* find_model(const std::string& name) const {
    if (name.empty())
      return &cfg.models.front();
    for (const auto& m : cfg.models)
      if (m.name == name)
        return &m;
    return nullptr;
  }

  /// 404 model_not_found naming `name` and the models served.
  void send_model_not_found(httplib::Response& res, const std::string& name) const {
    std::string served;
    for (auto& m : cfg.models)
      served += (served.empty() ? "\"" : ", \"") + m.name + "\"";
    send_error(res, 404, "model_not_found",
               "The model \"" + bounded(name, 128) +
                   "\" does not exist; this node serves " + served,
               "model");
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

  /// Embeds through the gateway: a single text on the embed lane; an array
  /// on the batch lane, cut into batch requests of at most the model's
  /// pool.max-batch-items texts, sent one after the other and assembled in
  /// order (the first error is the answer). Names `model` only when it is
  /// not the default.
  caf::expected<matrix> embed(std::vector<std::string>& texts, bool single,
                              const http_model& model, const std::string& task) {
    const bool named = model.name != cfg.models.front().name;
    if (single) {
      if (named)
        return ask<matrix>(cfg.request_timeout, embed_atom::value, texts.front(), task,
                           model.name);
      return ask<matrix>(cfg.request_timeout, embed_atom::value, texts.front(), task);
    }
    const size_t per_batch = std::max<size_t>(1, model.max_batch_items);
    if (texts.size() <= per_batch)  // one request (an empty batch is refused there)
      return named ? ask<matrix>(cfg.request_timeout, batch_atom::value, texts, task,
                                 model.name)
                   : ask<matrix>(cfg.request_timeout, batch_atom::value, texts, task);
    matrix all;
    for (size_t first = 0; first < texts.size(); first += per_batch) {
      const size_t last = std::min(texts.size(), first + per_batch);
      std::vector<std::string> part(
          std::make_move_iterator(texts.begin() + static_cast<ptrdiff_t>(first)),
          std::make_move_iterator(texts.begin() + static_cast<ptrdiff_t>(last)));
      auto m = named ? ask<matrix>(cfg.request_timeout, batch_atom::value, part, task,
                                   model.name)
                     : ask<matrix>(cfg.request_timeout, batch_atom::value, part, task);
      if (!m)
        return m;
      if (all.values.empty())
        all.values.reserve(texts.size() * m->dim);
      all.dim = m->dim;
      all.rows += m->rows;
      all.tokens += m->tokens;
      all.compute_us += m->compute_us;
      all.values.insert(all.values.end(), m->values.begin(), m->values.end());
    }
    return all;
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

  /// The `model` field: absent, null or "" = the default; an unknown name
  /// answers 404 model_not_found and returns null.
  const http_model* read_model(const json& body, httplib::Response& res) {
    auto it = body.find("model");
    if (it == body.end() || it->is_null())
      return find_model("");
    if (!it->is_string()) {
      send_invalid(res, "model: expected a string", "model");
      return nullptr;
    }
    auto name = it->get<std::string>();
    const auto* m = find_model(name);
    if (m == nullptr)
      send_model_not_found(res, name);
    return m;
  }

  /// An optional string field (task, prompt_name); false after answering 422.
  static bool read_string(const json& body, const char* field, httplib::Response& res,
                          std::string& out) {
    auto it = body.find(field);
    if (it == body.end() || it->is_null())
      return true;
    if (!it->is_string()) {
      send_invalid(res, std::string{field} + ": expected a string", field);
      return false;
    }
    out = it->get<std::string>();
    return true;
  }

  /// An optional boolean field; false after answering 422.
  static bool read_bool(const json& body, const char* field, httplib::Response& res,
                        std::optional<bool>& out) {
    auto it = body.find(field);
    if (it == body.end() || it->is_null())
      return true;
    if (!it->is_boolean()) {
      send_invalid(res, std::string{field} + ": expected true or false", field);
      return false;
    }
    out = it->get<bool>();
    return true;
  }

  /// OpenAI's `input`: a string, an array of strings, an array of token ids
  /// or an array of arrays of token ids (decoded with the model's
  /// vocabulary). At most max_openai_inputs items. False after answering.
  bool read_openai_input(const json& body, const http_model& model,
                         httplib::Response& res, std::vector<std::string>& texts,
                         bool& single) {
    auto it = body.find("input");
    if (it == body.end() || it->is_null()) {
      send_invalid(res, "input is missing", "input");
      return false;
    }
    const json& in = *it;
    if (in.is_string()) {
      single = true;
      texts.push_back(in.get<std::string>());
      return true;
    }
    if (!in.is_array()) {
      send_invalid(res,
                   "input: expected a string, an array of strings, an array of token "
                   "ids or an array of arrays of token ids",
                   "input");
      return false;
    }
    single = false;
    std::vector<int64_t> ids;
    auto decode = [&](const json& x, const std::string& where) {
      read_token_ids(x, ids);
      auto text = model.model->detokenize(ids);
      if (!text) {
        send_invalid(res,
                     where + ": model " + model.name + ": " + error_message(text.error()),
                     "input");
        return false;
      }
      texts.push_back(std::move(*text));
      return true;
    };
    if (is_token_array(in))  // one input given as token ids
      return decode(in, "input");
    if (in.size() > max_openai_inputs) {
      send_error(res, 413, "too_large",
                 "input: " + std::to_string(in.size()) + " items; at most " +
                     std::to_string(max_openai_inputs) + " per request",
                 "input");
      return false;
    }
    texts.reserve(in.size());
    for (size_t i = 0; i < in.size(); ++i) {
      const auto& x = in[i];
      const auto where = "input[" + std::to_string(i) + "]";
      if (x.is_string()) {
        texts.push_back(x.get<std::string>());
      } else if (is_token_array(x)) {
        if (!decode(x, where))
          return false;
      } else {
        send_invalid(res, where + ": expected a string or an array of token ids",
                     "input");
        return false;
      }
    }
    return true;
  }

  /// Writes TEI's timing headers: x-compute-time (ms at the front),
  /// x-inference-time (ms of embedder time), x-queue-time (the rest),
  /// x-compute-tokens and x-compute-characters.
  static void set_timing_headers(httplib::Response& res,
                                 std::chrono::steady_clock::time_point started,
                                 const matrix& m, size_t characters) {
    const auto total_us = std::chrono::duration_cast<std::chrono::microseconds>(
                              std::chrono::steady_clock::now() - started)
                              .count();
    const auto total_ms = static_cast<uint64_t>(total_us) / 1000;
    const auto inference_ms = m.compute_us / 1000;
    res.set_header("x-compute-type", "cpu");
    res.set_header("x-compute-time", std::to_string(total_ms));
    res.set_header("x-total-time", std::to_string(total_ms));
    res.set_header("x-inference-time", std::to_string(inference_ms));
    res.set_header("x-queue-time",
                   std::to_string(total_ms > inference_ms ? total_ms - inference_ms : 0));
    res.set_header("x-compute-tokens", std::to_string(m.tokens));
    res.set_header("x-compute-characters", std::to_string(characters));
  }

  void on_openai(const httplib::Request& req, httplib::Response& res) {
    const auto started = std::chrono::steady_clock::now();
    json body;
    if (!parse_body(req, res, body))
      return;
    if (auto key = unknown_field(
            body, {"input", "model", "encoding_format", "dimensions", "task"});
        !key.empty())
      return send_invalid(res,
                          "unknown field \"" + bounded(key, 64) +
                              "\" (supported: input, model, encoding_format, "
                              "dimensions, task)",
                          key);
    bool base64 = false;
    if (auto it = body.find("encoding_format"); it != body.end() && !it->is_null()) {
      if (!it->is_string() || (*it != "float" && *it != "base64"))
        return send_invalid(res, "encoding_format: expected \"float\" or \"base64\"",
                            "encoding_format");
      base64 = *it == "base64";
    }
    const auto* model = read_model(body, res);
    if (model == nullptr)
      return;
    const auto dim = static_cast<uint32_t>(model->model->dim());
    uint32_t dims = dim;
    if (auto it = body.find("dimensions"); it != body.end() && !it->is_null()) {
      const bool ok = it->is_number_integer() && *it >= 1 && *it <= dim &&
                      (*it == dim || model->matryoshka);
      if (!ok)
        return send_invalid(
            res,
            "dimensions: model " + model->name + " has " + std::to_string(dim) +
                " dimensions" +
                (model->matryoshka
                     ? "; ask for 1 to " + std::to_string(dim)
                     : " and does not allow fewer (model.matryoshka = false)"),
            "dimensions");
      dims = it->get<uint32_t>();
    }
    std::string task;
    if (!read_string(body, "task", res, task))
      return;
    std::vector<std::string> texts;
    bool single = false;
    if (!read_openai_input(body, *model, res, texts, single))
      return;
    size_t characters = 0;
    for (const auto& t : texts)
      characters += t.size();
    auto result = embed(texts, single, *model, task);
    if (!result)
      return send_error(res, result.error());
    matrix& m = *result;
    if (dims != m.dim)
      truncate_and_normalize(m, dims);
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
    out += json(model->name).dump();
    out += R"(,"usage":{"prompt_tokens":)";
    out += std::to_string(m.tokens);
    out += R"(,"total_tokens":)";
    out += std::to_string(m.tokens);
    out += "}}";
    set_timing_headers(res, started, m, characters);
    res.set_content(out, "application/json");
  }

  void on_models(const httplib::Request& req, httplib::Response& res) {
    auto entry = [](const http_model& m) {
      return json{
          {"id", m.name}, {"object", "model"}, {"created", 0}, {"owned_by", "embedpool"}};
    };
    if (req.matches.size() > 1) {
      const auto* m = find_model(req.matches[1].str());
      if (m == nullptr || req.matches[1].str().empty())
        return send_model_not_found(res, req.matches[1].str());
      return res.set_content(entry(*m).dump(), "application/json");
    }
    json data = json::array();
    for (const auto& m : cfg.models)
      data.push_back(entry(m));
    res.set_content(json{{"object", "list"}, {"data", data}}.dump(), "application/json");
  }

  /// TEI's options of /embed: normalize, truncate, truncation_direction,
  /// prompt_name. Honoured or refused; false after answering 422.
  bool read_tei_options(const json& body, const http_model& model, httplib::Response& res,
                        bool& normalize, std::string& task) {
    std::optional<bool> norm;
    std::optional<bool> truncate;
    if (!read_bool(body, "normalize", res, norm) ||
        !read_bool(body, "truncate", res, truncate) ||
        !read_string(body, "prompt_name", res, task))
      return false;
    normalize = norm.value_or(true);
    std::string param;
    std::string refusal;
    if (!normalize && model.model->normalizes()) {
      param = "normalize";
      refusal = "normalize: model " + model.name +
                " normalises its embeddings itself (hash, or a Normalize module in "
                "modules.json); normalize=false is not available";
    } else if (truncate && *truncate != model.truncate) {
      param = "truncate";
      refusal = "truncate: model " + model.name + " is served with model.truncate = " +
                (model.truncate ? "true" : "false") +
                "; per-request truncation is not available";
    } else if (auto it = body.find("truncation_direction");
               it != body.end() && !it->is_null()) {
      param = "truncation_direction";
      if (!it->is_string() || (*it != "Right" && *it != "Left"))
        refusal = "truncation_direction: expected \"Right\" or \"Left\"";
      else if (*it == "Left")
        refusal =
            "truncation_direction: only \"Right\" is available (the end of a long text "
            "is cut)";
    }
    if (refusal.empty())
      return true;
    send_invalid(res, refusal, param);
    return false;
  }

  void on_tei(const httplib::Request& req, httplib::Response& res) {
    const auto started = std::chrono::steady_clock::now();
    json body;
    if (!parse_body(req, res, body))
      return;
    if (auto key = unknown_field(body, {"inputs", "model", "normalize", "truncate",
                                        "truncation_direction", "prompt_name"});
        !key.empty())
      return send_invalid(res,
                          "unknown field \"" + bounded(key, 64) +
                              "\" (supported: inputs, normalize, truncate, "
                              "truncation_direction, prompt_name, model)",
                          key);
    const auto* model = read_model(body, res);
    if (model == nullptr)
      return;
    bool normalize = true;
    std::string task;
    if (!read_tei_options(body, *model, res, normalize, task))
      return;
    std::vector<std::string> texts;
    bool single = false;
    if (auto err = read_texts(body, "inputs", texts, single); !err.empty())
      return send_invalid(res, err, "inputs");
    if (texts.size() > model->max_batch_items)
      return send_error(res, 413, "too_large",
                        "inputs: " + std::to_string(texts.size()) + " items; at most " +
                            std::to_string(model->max_batch_items) +
                            " (pool.max-batch-items)",
                        "inputs");
    size_t characters = 0;
    for (const auto& t : texts)
      characters += t.size();
    auto result = embed(texts, single, *model, task);
    if (!result)
      return send_error(res, result.error());
    matrix& m = *result;
    if (normalize && !model->model->normalizes())
      truncate_and_normalize(m, m.dim);
    std::string out;
    out.reserve(2 + m.values.size() * 12);
    out += '[';
    for (uint32_t i = 0; i < m.rows; ++i) {
      if (i > 0)
        out += ',';
      append_row_json(out, m.values.data() + static_cast<size_t>(i) * m.dim, m.dim);
    }
    out += ']';
    set_timing_headers(res, started, m, characters);
    res.set_content(out, "application/json");
  }

  void on_info(const httplib::Request& req, httplib::Response& res) {
    const auto* model = find_model(req.get_param_value("model"));
    if (model == nullptr)
      return send_model_not_found(res, req.get_param_value("model"));
    const auto& e = *model->model;
    json info = {
        {"model_id", model->name},
        {"model_sha", nullptr},
        {"model_dtype", "float32"},
        {"model_type", {{"embedding", {{"pooling", e.pooling()}}}}},
        {"dim", e.dim()},
        {"normalized", e.normalizes()},
        {"max_concurrent_requests", cfg.http.max_connections},
        {"max_input_length",
         e.max_input_tokens() > 0 ? json(e.max_input_tokens()) : json(nullptr)},
        {"max_batch_tokens", nullptr},
        {"max_batch_requests", nullptr},
        {"max_client_batch_size", model->max_batch_items},
        {"auto_truncate", model->truncate},
        {"tasks", e.tasks()},
        {"tokenization_workers", nullptr},
        {"version", pool::version_string()},
        {"protocol", pool::protocol_version},
    };
    res.set_content(info.dump(), "application/json");
  }

  void on_tokenize(const httplib::Request& req, httplib::Response& res) {
    json body;
    if (!parse_body(req, res, body))
      return;
    if (auto key =
            unknown_field(body, {"inputs", "model", "add_special_tokens", "prompt_name"});
        !key.empty())
      return send_invalid(res,
                          "unknown field \"" + bounded(key, 64) +
                              "\" (supported: inputs, add_special_tokens, prompt_name, "
                              "model)",
                          key);
    const auto* model = read_model(body, res);
    if (model == nullptr)
      return;
    std::optional<bool> specials;
    std::string task;
    if (!read_bool(body, "add_special_tokens", res, specials) ||
        !read_string(body, "prompt_name", res, task))
      return;
    if (auto err = check_task(task, model->model->tasks(), model->name))
      return send_error(res, err);
    std::vector<std::string> texts;
    bool single = false;
    if (auto err = read_texts(body, "inputs", texts, single); !err.empty())
      return send_invalid(res, err, "inputs");
    if (texts.size() > model->max_batch_items)
      return send_error(res, 413, "too_large",
                        "inputs: " + std::to_string(texts.size()) + " items; at most " +
                            std::to_string(model->max_batch_items) +
                            " (pool.max-batch-items)",
                        "inputs");
    json out = json::array();
    for (const auto& text : texts) {
      auto tokens = model->model->tokenize(text, task);
      if (!tokens)
        return send_invalid(
            res, "model " + model->name + ": " + error_message(tokens.error()), "model");
      json row = json::array();
      for (const auto& t : *tokens) {
        if (t.special && !specials.value_or(true))
          continue;
        row.push_back({{"id", t.id},
                       {"text", t.text},
                       {"special", t.special},
                       {"start", nullptr},
                       {"stop", nullptr}});
      }
      out.push_back(std::move(row));
    }
    res.set_content(out.dump(-1, ' ', false, json::error_handler_t::replace),
                    "application/json");
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
    server.Get("/v1/models", [this](const httplib::Request& req, httplib::Response& res) {
      on_models(req, res);
    });
    server.Get(R"(/v1/models/(.*))",
               [this](const httplib::Request& req, httplib::Response& res) {
                 on_models(req, res);
               });
    server.Get("/info", [this](const httplib::Request& req, httplib::Response& res) {
      on_info(req, res);
    });
    server.Post("/tokenize", [this](const httplib::Request& req, httplib::Response& res) {
      on_tokenize(req, res);
    });
    server.Post("/embed_all", [](const httplib::Request&, httplib::Response& res) {
      send_error(res, 501, "not_implemented",
                 "/embed_all: token embeddings are not available (the encoder "
                 "returns pooled embeddings only); use /embed");
    });
    // TEI's health: 200 when the node can embed, else 503.
    server.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
      on_ready(res);
    });
    // Every status >= 400 without a body of ours (404, 413 for an oversized
    // body, 400 for a malformed request) gets a JSON error body too.
    using error_handler = httplib::Server::HandlerWithResponse;
    server.set_error_handler(
        error_handler{[this](const httplib::Request& req, httplib::Response& res) {
          if (!res.body.empty())
            return httplib::Server::HandlerResponse::Unhandled;
          switch (res.status) {
            case 404:
              if (auto allow = allowed_method(req.path); !allow.empty()) {
                res.set_header("Allow", allow);
                send_error(res, 405, "method_not_allowed",
                           req.method + " " + bounded(req.path, 128) +
                               ": method not allowed; use " + allow);
              } else {
                send_error(res, 404, "not_found", "no such endpoint");
              }
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
    if (cfg.http.access_log)
      server.set_pre_routing_handler(
          [](const httplib::Request& req, httplib::Response& res) {
            access_log_begin(req, res);
            return httplib::Server::HandlerResponse::Unhandled;
          });
    server.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
      cfg.metrics->count_http(endpoint_of(req.path), res.status);
      if (cfg.http.access_log)
        access_log_end(*log, req, res);
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
  // SO_REUSEADDR only: cpp-httplib's default SO_REUSEPORT would let a second
  // process bind a port in use and silently share its requests.
  d.server.set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  d.install_routes();
  int port = d.cfg.http.port;
  if (port == 0) {
    port = d.server.bind_to_any_port(d.cfg.http.host);
    if (port <= 0)
      return make_error(pool_errc::invalid_input,
                        "http.port: cannot bind a free port on " + d.cfg.http.host);
  } else if (!d.server.bind_to_port(d.cfg.http.host, port)) {
    return make_error(pool_errc::invalid_input,
                      "http.port: cannot bind " + d.cfg.http.host + ":" +
                          std::to_string(port) + " (in use by another process?)");
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
