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

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <httplib.h>
#include <caf/all.hpp>
#include <nlohmann/json.hpp>

#include "access_log.hpp"
#include "actors.hpp"
#include "defaults.hpp"
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

using clock_type = std::chrono::steady_clock;

/// Bytes a request may take beyond http.max-body-bytes: its request line,
/// headers and chunk framing. A request never reads more from its socket than
/// http.max-body-bytes plus this.
constexpr size_t head_allowance = 64 * 1024;
/// Every wait on a socket is cut in slices this long, so that a stopping
/// server is noticed.
constexpr auto wait_slice = std::chrono::milliseconds(100);
/// A connection past http.max-connections: how long its request head may
/// take to arrive before it is answered anyway, how much of it is kept, how
/// long (and how much) the rest of its request is read and dropped after the
/// answer (so that the peer sees the answer rather than a reset), and how
/// many such connections are handled at once (beyond, 503 without reading).
constexpr auto overflow_head_wait = std::chrono::milliseconds(500);
constexpr size_t overflow_head_bytes = 8192;
constexpr auto linger_time = std::chrono::seconds(1);
constexpr size_t linger_bytes = 64 * 1024;
constexpr size_t overflow_max_pending = 256;

/// Milliseconds of `left` for poll(): rounded up, at most one wait slice.
int poll_ms(clock_type::duration left) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                left + std::chrono::microseconds(999))
                .count();
  return static_cast<int>(std::clamp<int64_t>(ms, 0, wait_slice.count()));
}

/// "10s" or "750ms".
std::string format_ms(clock_type::duration d) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
  return ms % 1000 == 0 ? std::to_string(ms / 1000) + "s" : std::to_string(ms) + "ms";
}

/// A complete response written by hand (connections httplib does not
/// serve): JSON body, Connection: close.
std::string raw_response(int status, const char* reason, const std::string& body,
                         const std::string& extra_headers = {}) {
  return "HTTP/1.1 " + std::to_string(status) + " " + reason +
         "\r\nContent-Type: application/json\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\n" + extra_headers +
         "Connection: close\r\n\r\n" + body;
}

/// Writes all of `text` to a socket, waiting at most `timeout` in total.
void write_all(int sock, const std::string& text, clock_type::duration timeout) {
  const auto until = clock_type::now() + timeout;
  size_t done = 0;
  while (done < text.size() && clock_type::now() < until) {
    auto n =
        ::send(sock, text.data() + done, text.size() - done, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      done += static_cast<size_t>(n);
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
      pollfd p{sock, POLLOUT, 0};
      ::poll(&p, 1, poll_ms(until - clock_type::now()));
    } else {
      return;
    }
  }
}

/// Reads and drops what a peer still sends after its answer (at most
/// `max_bytes`, until `until`), so that closing does not reset the
/// connection before the peer has read the answer.
void linger(int sock, size_t max_bytes, clock_type::time_point until) {
  ::shutdown(sock, SHUT_WR);
  char buf[4096];
  size_t drained = 0;
  while (drained < max_bytes && clock_type::now() < until) {
    pollfd p{sock, POLLIN, 0};
    if (::poll(&p, 1, poll_ms(until - clock_type::now())) <= 0)
      continue;
    auto n = ::recv(sock, buf, std::min(sizeof(buf), max_bytes - drained), MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
      return;
    if (n > 0)
      drained += static_cast<size_t>(n);
  }
}

/// The state of the connection a thread serves, shared by its stream, the
/// pre-routing hook and the error handler (all on that thread).
struct connection_state {
  clock_type::time_point first_byte;  // of the current request
  clock_type::time_point deadline;    // first_byte + http.read-timeout (+ slot waits)
  size_t read_bytes = 0;              // read from the socket for the current request
  size_t byte_cap = 0;                // http.max-body-bytes + head_allowance
  size_t written = 0;                 // bytes of the current response written
  bool timed_out = false;             // the deadline passed while reading
  bool too_large = false;             // over byte_cap, or Content-Length over the limit
  bool encoded = false;               // a Content-Encoding other than identity
  bool close = false;                 // close after this response
  bool holds_slot = false;

  void begin(clock_type::time_point now, clock_type::duration timeout, size_t carried) {
    first_byte = now;
    deadline = now + timeout;
    read_bytes = carried;
    written = 0;
    timed_out = too_large = encoded = close = false;
  }
};

thread_local connection_state* t_conn = nullptr;
/// Set while the accept loop runs the job of a connection past
/// http.max-connections (see connection_queue::enqueue).
thread_local bool t_over_limit = false;

/// httplib's Stream over a connection: every read of a request waits at most
/// until the request's deadline (a total from its first byte, not per read)
/// and reads at most its byte cap from the socket; reads stop when the server
/// stops. Buffered, as httplib reads headers one byte at a time.
class deadline_stream final : public httplib::Stream {
 public:
  deadline_stream(int sock, connection_state& st, const std::atomic<socket_t>& listener,
                  clock_type::duration write_timeout)
      : sock_(sock), st_(st), listener_(listener), write_timeout_(write_timeout) {}

  bool is_readable() const override {
    return buffered() > 0 || wait(POLLIN, st_.deadline, true);
  }

  bool is_writable() const override {
    return wait(POLLOUT, clock_type::now() + write_timeout_, false);
  }

  ssize_t read(char* ptr, size_t size) override {
    if (buffered() == 0 && !fill())
      return -1;
    const size_t n = std::min(size, buffered());
    std::memcpy(ptr, buf_ + pos_, n);
    pos_ += n;
    return static_cast<ssize_t>(n);
  }

  ssize_t write(const char* ptr, size_t size) override {
    if (!is_writable())
      return -1;
    auto n = ::send(sock_, ptr, size, MSG_NOSIGNAL);
    if (n > 0)
      st_.written += static_cast<size_t>(n);
    return n;
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    sockaddr_storage addr{};
    socklen_t len = sizeof(addr);
    if (::getpeername(sock_, reinterpret_cast<sockaddr*>(&addr), &len) == 0)
      name_of(addr, len, ip, port);
  }

  void get_local_ip_and_port(std::string& ip, int& port) const override {
    sockaddr_storage addr{};
    socklen_t len = sizeof(addr);
    if (::getsockname(sock_, reinterpret_cast<sockaddr*>(&addr), &len) == 0)
      name_of(addr, len, ip, port);
  }

  socket_t socket() const override { return sock_; }

  size_t buffered() const { return end_ - pos_; }

  /// Waits up to `idle` for the first byte of a request; false if none came
  /// or the server stops (end of stream counts as a byte: the request then
  /// fails to parse and the connection closes).
  bool wait_for_request(clock_type::duration idle) const {
    return buffered() > 0 || wait(POLLIN, clock_type::now() + idle, true);
  }

 private:
  static void name_of(const sockaddr_storage& addr, socklen_t len, std::string& ip,
                      int& port) {
    char host[NI_MAXHOST];
    char serv[NI_MAXSERV];
    if (::getnameinfo(reinterpret_cast<const sockaddr*>(&addr), len, host, sizeof(host),
                      serv, sizeof(serv), NI_NUMERICHOST | NI_NUMERICSERV) == 0) {
      ip = host;
      port = std::atoi(serv);
    }
  }

  bool stopping() const { return listener_ == INVALID_SOCKET; }

  /// Polls for `events` until `until`; false on timeout (or, if
  /// `stoppable`, when the server stops).
  bool wait(short events, clock_type::time_point until, bool stoppable) const {
    for (;;) {
      if (stoppable && stopping())
        return false;
      const auto left = until - clock_type::now();
      if (left <= clock_type::duration::zero())
        return false;
      pollfd p{sock_, events, 0};
      const int r = ::poll(&p, 1, poll_ms(left));
      if (r > 0)
        return true;  // also on an error or hang-up: recv and send say which
      if (r < 0 && errno != EINTR)
        return false;
    }
  }

  bool fill() {
    if (st_.read_bytes >= st_.byte_cap) {
      st_.too_large = true;
      return false;
    }
    if (!wait(POLLIN, st_.deadline, true)) {
      st_.timed_out = !stopping();
      return false;
    }
    const size_t want = std::min(sizeof(buf_), st_.byte_cap - st_.read_bytes);
    for (;;) {
      auto n = ::recv(sock_, buf_, want, 0);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        return false;
      st_.read_bytes += static_cast<size_t>(n);
      pos_ = 0;
      end_ = static_cast<size_t>(n);
      return true;
    }
  }

  const int sock_;
  connection_state& st_;
  const std::atomic<socket_t>& listener_;
  const clock_type::duration write_timeout_;
  char buf_[4096];
  size_t pos_ = 0;
  size_t end_ = 0;
};

/// httplib's task queue: a thread per open connection (started when needed,
/// kept for later connections), at most `max_open`. A connection past them
/// is not queued: its job runs at once on the accept loop with t_over_limit
/// set, which hands the socket to the overflow responder.
class connection_queue : public httplib::TaskQueue {
 public:
  explicit connection_queue(size_t max_open) : max_open_(max_open) {}

  void enqueue(std::function<void()> fn) override {
    {
      std::lock_guard<std::mutex> guard{mtx_};
      if (open_ < max_open_ && !stopping_ && start_thread_if_needed()) {
        ++open_;
        jobs_.push_back(std::move(fn));
        work_.notify_one();
        return;
      }
    }
    t_over_limit = true;
    fn();
    t_over_limit = false;
  }

  void shutdown() override {
    {
      std::lock_guard<std::mutex> guard{mtx_};
      stopping_ = true;
    }
    work_.notify_all();
    for (auto& t : threads_)
      t.join();
    threads_.clear();
  }

 private:
  /// True if a thread will be free for one more job (called under mtx_).
  bool start_thread_if_needed() {
    if (idle_ > jobs_.size())
      return true;
    try {
      threads_.emplace_back([this] { run(); });
      return true;
    } catch (const std::system_error&) {
      return !threads_.empty();  // no new thread: the job waits for one
    }
  }

  void run() {
    std::unique_lock<std::mutex> lock{mtx_};
    for (;;) {
      ++idle_;
      work_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
      --idle_;
      if (jobs_.empty())
        return;  // stopping and nothing left
      auto fn = std::move(jobs_.front());
      jobs_.pop_front();
      lock.unlock();
      fn();
      lock.lock();
      --open_;
    }
  }

  const size_t max_open_;
  std::mutex mtx_;
  std::condition_variable work_;
  std::deque<std::function<void()>> jobs_;
  size_t open_ = 0;  // connections queued or being served
  size_t idle_ = 0;  // threads waiting for a job
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

/// Answers connections past http.max-connections on one thread of its own,
/// without waiting for anything else: reads each one's request head (at most
/// overflow_head_wait), writes what `answer` makes of its method and path
/// (a complete response), lingers briefly and closes.
class overflow_responder {
 public:
  using answer_fn =
      std::function<std::string(std::string_view method, std::string_view path)>;

  explicit overflow_responder(answer_fn answer) : answer_(std::move(answer)) {
    if (::pipe2(wake_, O_CLOEXEC | O_NONBLOCK) != 0)
      wake_[0] = wake_[1] = -1;
  }

  ~overflow_responder() {
    stop();
    for (int fd : wake_)
      if (fd >= 0)
        ::close(fd);
  }

  overflow_responder(const overflow_responder&) = delete;
  overflow_responder& operator=(const overflow_responder&) = delete;

  void start() {
    thread_ = std::thread{[this] { run(); }};
  }

  /// Takes over `sock` (thread-safe).
  void add(int sock) {
    {
      std::lock_guard<std::mutex> guard{mtx_};
      if (!stopping_ && thread_.joinable() && pending_ < overflow_max_pending) {
        ++pending_;
        incoming_.push_back(sock);
        sock = -1;
      }
    }
    if (sock < 0) {
      char byte = 0;
      [[maybe_unused]] auto n = ::write(wake_[1], &byte, 1);
      return;
    }
    // Too many already: answered without reading the request.
    write_all(sock, answer_({}, {}), std::chrono::milliseconds(100));
    ::shutdown(sock, SHUT_RDWR);
    ::close(sock);
  }

  void stop() {
    {
      std::lock_guard<std::mutex> guard{mtx_};
      stopping_ = true;
    }
    char byte = 0;
    [[maybe_unused]] auto n = ::write(wake_[1], &byte, 1);
    if (thread_.joinable())
      thread_.join();
  }

 private:
  struct conn {
    int fd = -1;
    clock_type::time_point deadline;
    std::string head;
    bool answered = false;
    size_t drained = 0;
    bool done = false;
  };

  void answer(conn& c) {
    std::string_view head{c.head};
    std::string_view method;
    std::string_view path;
    if (auto eol = head.find("\r\n"); eol != std::string_view::npos) {
      auto line = head.substr(0, eol);
      auto sp1 = line.find(' ');
      auto sp2 = line.find(' ', sp1 == std::string_view::npos ? sp1 : sp1 + 1);
      if (sp1 != std::string_view::npos && sp2 != std::string_view::npos) {
        method = line.substr(0, sp1);
        path = line.substr(sp1 + 1, sp2 - sp1 - 1);
        path = path.substr(0, path.find('?'));
      }
    }
    write_all(c.fd, answer_(method, path), std::chrono::milliseconds(100));
    ::shutdown(c.fd, SHUT_WR);
    c.answered = true;
    c.deadline = clock_type::now() + linger_time;
  }

  void run() {
    std::vector<conn> conns;
    std::vector<pollfd> fds;
    for (;;) {
      {
        std::lock_guard<std::mutex> guard{mtx_};
        for (int fd : incoming_) {
          ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
          conn c;
          c.fd = fd;
          c.deadline = clock_type::now() + overflow_head_wait;
          conns.push_back(std::move(c));
        }
        incoming_.clear();
        if (stopping_) {
          for (auto& c : conns)
            ::close(c.fd);
          pending_ = 0;
          return;
        }
      }
      auto now = clock_type::now();
      auto next = now + wait_slice;
      fds.assign(1, pollfd{wake_[0], POLLIN, 0});
      for (const auto& c : conns) {
        fds.push_back(pollfd{c.fd, POLLIN, 0});
        next = std::min(next, c.deadline);
      }
      ::poll(fds.data(), fds.size(), poll_ms(next - now));
      char sink[4096];
      while (::read(wake_[0], sink, sizeof(sink)) > 0) {
      }
      now = clock_type::now();
      for (size_t i = 0; i < conns.size(); ++i) {
        auto& c = conns[i];
        if ((fds[i + 1].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
          auto n = ::recv(c.fd, sink, sizeof(sink), MSG_DONTWAIT);
          if (n > 0 && !c.answered)
            c.head.append(sink, std::min(static_cast<size_t>(n),
                                         overflow_head_bytes - c.head.size()));
          else if (n > 0)
            c.drained += static_cast<size_t>(n);
          else if (n == 0 || (errno != EAGAIN && errno != EINTR))
            c.done = true;  // the peer closed or failed
        }
        if (!c.answered && !c.done &&
            (c.head.find("\r\n\r\n") != std::string::npos ||
             c.head.size() >= overflow_head_bytes || now >= c.deadline))
          answer(c);
        if (c.answered && (c.drained >= linger_bytes || now >= c.deadline))
          c.done = true;
      }
      size_t closed = 0;
      conns.erase(std::remove_if(conns.begin(), conns.end(),
                                 [&closed](const conn& c) {
                                   if (!c.done)
                                     return false;
                                   ::close(c.fd);
                                   ++closed;
                                   return true;
                                 }),
                  conns.end());
      if (closed > 0) {
        std::lock_guard<std::mutex> guard{mtx_};
        pending_ -= closed;
      }
    }
  }

  answer_fn answer_;
  int wake_[2] = {-1, -1};
  std::mutex mtx_;
  std::vector<int> incoming_;
  size_t pending_ = 0;  // incoming_ + being answered
  bool stopping_ = false;
  std::thread thread_;
};

/// httplib's Server with bounded reads: serves each connection's requests
/// through a deadline_stream, takes one of `slots` request slots before a
/// request's body is read and handled (see take_slot), refuses what the
/// stream cut (408, 413) and closes those connections.
class bounded_server final : public httplib::Server {
 public:
  /// After a bind: lets the kernel queue up to SOMAXCONN connections that
  /// wait for accept. Debian's compiled cpp-httplib listens with a backlog of
  /// 5, so a burst of connections (slow clients reconnecting beside health
  /// probes) overflowed it and a probe's SYN waited for its 1 s retransmit.
  void widen_backlog() {
    if (auto sock = svr_sock_.load(); sock != INVALID_SOCKET)
      ::listen(sock, SOMAXCONN);
  }

  struct limits {
    size_t max_body = 0;
    clock_type::duration read_timeout = std::chrono::seconds(10);
    clock_type::duration keep_alive = std::chrono::seconds(2);
    size_t slots = 1;
  };

  /// A refused request: "read_timeout" or "too_large", socket bytes read for
  /// it, time since its first byte.
  using refused_fn =
      std::function<void(const char* reason, size_t bytes, clock_type::duration elapsed)>;

  void configure(limits lim, std::function<void(int)> over_limit, refused_fn refused,
                 std::function<std::string()> timeout_response) {
    lim_ = lim;
    free_slots_ = lim.slots;
    over_limit_ = std::move(over_limit);
    refused_ = std::move(refused);
    timeout_response_ = std::move(timeout_response);
  }

  const limits& lim() const { return lim_; }

  /// Waits for a free request slot for the current request; the wait does not
  /// count against its read deadline.
  void take_slot(connection_state& st) {
    const auto started = clock_type::now();
    std::unique_lock<std::mutex> lock{slot_mtx_};
    slot_free_.wait(lock, [this] { return free_slots_ > 0; });
    --free_slots_;
    st.holds_slot = true;
    st.deadline += clock_type::now() - started;
  }

 private:
  void release_slot(connection_state& st) {
    if (!st.holds_slot)
      return;
    st.holds_slot = false;
    {
      std::lock_guard<std::mutex> guard{slot_mtx_};
      ++free_slots_;
    }
    slot_free_.notify_one();
  }

  bool process_and_close_socket(socket_t sock) override {
    if (t_over_limit) {
      over_limit_(sock);
      return true;
    }
    connection_state st;
    st.byte_cap = lim_.max_body + head_allowance;
    deadline_stream strm{sock, st, svr_sock_, std::chrono::seconds(write_timeout_sec_)};
    t_conn = &st;
    bool ok = true;
    auto idle = lim_.read_timeout;  // before the first request; then keep-alive
    for (size_t left = keep_alive_max_count_; left > 0; --left) {
      if (!strm.wait_for_request(idle))
        break;
      st.begin(clock_type::now(), lim_.read_timeout, strm.buffered());
      bool closed = false;
      ok = process_request(strm, left == 1, closed, nullptr);
      release_slot(st);
      if (st.timed_out || st.too_large) {
        // The request line timed out: httplib wrote nothing.
        if (st.timed_out && st.written == 0)
          write_all(sock, timeout_response_(), std::chrono::milliseconds(100));
        refused_(st.timed_out ? "read_timeout" : "too_large", st.read_bytes,
                 clock_type::now() - st.first_byte);
        if (!st.timed_out)
          linger(sock, std::min(linger_bytes, st.byte_cap - st.read_bytes),
                 std::min(st.deadline, clock_type::now() + linger_time));
        break;
      }
      if (!ok || closed || st.close)
        break;
      idle = lim_.keep_alive;
    }
    t_conn = nullptr;
    ::shutdown(sock, SHUT_RDWR);
    ::close(sock);
    return ok;
  }

  limits lim_;
  std::function<void(int)> over_limit_;
  refused_fn refused_;
  std::function<std::string()> timeout_response_;
  std::mutex slot_mtx_;
  std::condition_variable slot_free_;
  size_t free_slots_ = 1;
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
  root_interface root;
  http_front_config cfg;
  std::shared_ptr<model_metrics> metrics;
  bounded_server server;
  std::unique_ptr<overflow_responder> overflow;
  std::thread listener;
  std::mutex gateway_mtx;
  caf::actor gateway;  // cached; refreshed from the root when it dies
  std::shared_ptr<spdlog::logger> log = get_logger("http");

  impl(caf::actor_system& system, root_interface node_root, http_front_config config)
      : sys(system), root(std::move(node_root)), cfg(std::move(config)) {
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

  /// The current gateway; asks the root when none is cached (or when
  /// `refresh`). Null if the root is gone or has none right now.
  caf::actor current_gateway(bool refresh) {
    {
      std::lock_guard<std::mutex> guard{gateway_mtx};
      if (gateway && !refresh)
        return gateway;
    }
    caf::scoped_actor self{sys};
    caf::actor fresh;
    self->request(root, status_timeout, gateway_atom::value)
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
                              const http_model& model, const std::string& task,
                              const httplib::Request& req, const httplib::Response& res) {
    const std::string model_name =
        model.name != cfg.models.front().name ? model.name : "";
    const std::string request_id = res.get_header_value("X-Request-Id");
    const std::string client = req.remote_addr + ":" + std::to_string(req.remote_port);
    if (single)
      return ask<matrix>(cfg.request_timeout, embed_atom::value, texts.front(), task,
                         model_name, request_id, client);
    const size_t per_batch = std::max<size_t>(1, model.max_batch_items);
    if (texts.size() <= per_batch)  // one request (an empty batch is refused there)
      return ask<matrix>(cfg.request_timeout, batch_atom::value, texts, task, model_name,
                         request_id, client);
    matrix all;
    for (size_t first = 0; first < texts.size(); first += per_batch) {
      const size_t last = std::min(texts.size(), first + per_batch);
      std::vector<std::string> part(
          std::make_move_iterator(texts.begin() + static_cast<ptrdiff_t>(first)),
          std::make_move_iterator(texts.begin() + static_cast<ptrdiff_t>(last)));
      auto m = ask<matrix>(cfg.request_timeout, batch_atom::value, part, task, model_name,
                           request_id, client);
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

  /// Parses the body as a JSON object; on failure answers 422 (413 for a
  /// chunked body that came in over http.max-body-bytes) and returns false.
  bool parse_body(const httplib::Request& req, httplib::Response& res, json& body) const {
    if (req.body.size() > cfg.http.max_body_bytes) {
      send_too_large(res);
      return false;
    }
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
    auto result = embed(texts, single, *model, task, req, res);
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
    auto result = embed(texts, single, *model, task, req, res);
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

  void send_too_large(httplib::Response& res) const {
    send_error(res, 413, "too_large",
               "request body over http.max-body-bytes (" +
                   std::to_string(cfg.http.max_body_bytes) + ")");
  }

  /// The answer to a connection past http.max-connections: 200 for GET
  /// /health/live, else 503 (also when its request line never came).
  std::string over_limit_response(std::string_view method, std::string_view path) const {
    const std::string p{path};
    if (method == "GET" && p == "/health/live") {
      cfg.metrics->count_http(http_endpoint::live, 200);
      return raw_response(200, "OK", R"({"status":"live"})");
    }
    if (!p.empty())
      cfg.metrics->count_http(endpoint_of(p), 503);
    json body = {
        {"error",
         {{"message", "too many HTTP connections (http.max-connections = " +
                          std::to_string(cfg.http.max_connections) + "); retry later"},
          {"type", "server_error"},
          {"param", nullptr},
          {"code", "unavailable"}}}};
    return raw_response(503, "Service Unavailable", body.dump(), "Retry-After: 1\r\n");
  }

  std::string read_timeout_message() const {
    return "request not read within http.read-timeout (" +
           format_ms(cfg.http.read_timeout) + ") from its first byte";
  }

  /// GET of a health or metrics endpoint: needs no request slot.
  static bool is_monitoring(const httplib::Request& req) {
    return req.method == "GET" &&
           (req.path == "/health/live" || req.path == "/health/ready" ||
            req.path == "/health" || req.path == "/metrics");
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
          if (auto* st = t_conn;
              st != nullptr && (st->timed_out || st->too_large || st->encoded)) {
            // Cut by the stream (or refused before reading): the rest of the
            // request is not read, so the connection closes.
            // httplib answers "Connection: close" when the request says so;
            // `req` is process_request's own (non-const) Request.
            st->close = true;
            auto& headers = const_cast<httplib::Request&>(req).headers;
            headers.erase("Connection");
            headers.emplace("Connection", "close");
            if (st->timed_out)
              send_error(res, 408, "request_timeout", read_timeout_message());
            else if (st->encoded)
              send_error(res, 415, "unsupported_media_type",
                         "compressed request bodies are not accepted (Content-Encoding); "
                         "send the body as plain JSON");
            else
              send_too_large(res);
            return httplib::Server::HandlerResponse::Handled;
          }
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
              send_too_large(res);
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
    // Before a request's body is read: a Content-Length over the limit is
    // refused at once, and so is a compressed body (httplib would inflate it
    // without a bound: a 4 MiB gzip body of zeros is 4 GiB); any other
    // request but monitoring waits for one of the http.threads request slots.
    server.set_pre_routing_handler(
        [this](const httplib::Request& req, httplib::Response& res) {
          // Every request gets an id (the client's X-Request-Id or a new
          // one), echoed in the response and named in the node's log lines.
          access_log_begin(req, res);
          auto* st = t_conn;
          if (st == nullptr || is_monitoring(req))
            return httplib::Server::HandlerResponse::Unhandled;
          if (req.has_header("Content-Encoding") &&
              req.get_header_value("Content-Encoding") != "identity") {
            st->encoded = true;
            res.status = 415;
            return httplib::Server::HandlerResponse::Handled;
          }
          if (req.has_header("Content-Length")) {
            const auto& text = req.get_header_value("Content-Length");
            uint64_t length = 0;
            auto r = std::from_chars(text.data(), text.data() + text.size(), length);
            if (r.ec == std::errc::result_out_of_range ||
                (r.ec == std::errc{} && length > cfg.http.max_body_bytes)) {
              st->too_large = true;
              res.status = 413;
              return httplib::Server::HandlerResponse::Handled;
            }
          }
          server.take_slot(*st);
          return httplib::Server::HandlerResponse::Unhandled;
        });
    server.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
      cfg.metrics->count_http(endpoint_of(req.path), res.status);
      if (cfg.http.access_log)
        access_log_end(*log, req, res);
    });
  }
};

http_front::http_front(caf::actor_system& sys, root_interface root, http_front_config cfg)
    : impl_(std::make_unique<impl>(sys, std::move(root), std::move(cfg))) {}

http_front::~http_front() {
  stop();
}

caf::expected<uint16_t> http_front::start() {
  auto& d = *impl_;
  auto max_open = d.cfg.http.max_connections;
  d.server.new_task_queue = [max_open] { return new connection_queue(max_open); };
  d.overflow = std::make_unique<overflow_responder>(
      [&d](std::string_view method, std::string_view path) {
        return d.over_limit_response(method, path);
      });
  bounded_server::limits lim;
  lim.max_body = d.cfg.http.max_body_bytes;
  lim.read_timeout =
      std::chrono::duration_cast<clock_type::duration>(d.cfg.http.read_timeout);
  lim.keep_alive = std::chrono::seconds(keep_alive_seconds);
  lim.slots = d.cfg.http.threads;
  d.server.configure(
      lim, [&d](int sock) { d.overflow->add(sock); },
      [&d](const char* reason, size_t bytes, clock_type::duration elapsed) {
        log_event("http_refused")
            .add("reason", reason)
            .add("bytes_read", static_cast<uint64_t>(bytes))
            .add("elapsed_ms",
                 static_cast<int64_t>(
                     std::chrono::duration_cast<std::chrono::milliseconds>(elapsed)
                         .count()))
            .write(*d.log, spdlog::level::info);
      },
      [&d] {
        json body = {{"error",
                      {{"message", d.read_timeout_message()},
                       {"type", type_of(408)},
                       {"param", nullptr},
                       {"code", "request_timeout"}}}};
        return raw_response(408, "Request Timeout", body.dump());
      });
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
  d.server.widen_backlog();
  d.overflow->start();
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
  impl_->overflow->stop();
  log_event("http_stopped").write(*impl_->log, spdlog::level::info);
}

}  // namespace pool::detail
