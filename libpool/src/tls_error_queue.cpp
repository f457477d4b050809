// Keeps one TLS connection's OpenSSL errors away from the others.
//
// CAF 0.17's openssl session (libcaf_openssl) calls SSL_get_error after
// SSL_read, SSL_write, SSL_accept and SSL_connect without clearing the
// thread's OpenSSL error queue first, and leaves the errors of a failed or
// finished session in it. OpenSSL's SSL_get_error reports SSL_ERROR_SSL
// whenever that queue is not empty, so a stale error of one connection made a
// harmless "want read" on the next connection served by the same multiplexer
// thread look fatal, and CAF closed that connection too: a port scan, a client
// without a certificate or a certified client that finished cut a joined worker
// node and every other client.
//
// The four functions below interpose libssl's: the executable exports them
// (the linker's dynamic list, see libpool/CMakeLists.txt), so the dynamic
// linker binds libcaf_openssl's calls to them. Each clears the calling thread's
// error queue and calls the real function, found with dlsym(RTLD_NEXT). A
// handshake that fails on the accepting side is logged with the peer's address,
// at most one line per second with the count of failures since the last line.
#include "tls_error_queue.hpp"

#include <atomic>
#include <chrono>
#include <cstring>
#include <mutex>
#include <string>

#include <dlfcn.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "interpose.hpp"
#include "logging.hpp"

namespace pool::detail {

namespace {

using read_fn = int (*)(SSL*, void*, int);
using write_fn = int (*)(SSL*, const void*, int);
using handshake_fn = int (*)(SSL*);

/// Why the handshake failed, without taking the error off the queue (CAF
/// reads it after us).
std::string failure_reason(int ssl_error) {
  if (auto code = ERR_peek_error()) {
    char buf[256];
    ERR_error_string_n(code, buf, sizeof(buf));
    return buf;
  }
  if (ssl_error == SSL_ERROR_SYSCALL || ssl_error == SSL_ERROR_ZERO_RETURN)
    return "connection closed during the handshake";
  return "SSL error " + std::to_string(ssl_error);
}

struct refusal_log {
  std::mutex mtx;
  std::chrono::steady_clock::time_point last{};
  bool logged_once = false;
  uint64_t unlogged = 0;  // refusals since the last line, not in it
  std::atomic<uint64_t> total{0};
};

refusal_log& refusals() {
  static refusal_log instance;
  return instance;
}

void note_refused_handshake(SSL* ssl, int ret) {
  auto err = SSL_get_error(ssl, ret);
  if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
    return;
  auto& log = refusals();
  ++log.total;
  uint64_t count = 0;
  {
    std::lock_guard<std::mutex> guard{log.mtx};
    auto now = std::chrono::steady_clock::now();
    ++log.unlogged;
    if (log.logged_once && now - log.last < std::chrono::seconds(1))
      return;
    log.logged_once = true;
    log.last = now;
    count = log.unlogged;
    log.unlogged = 0;
  }
  log_event("tls_handshake_refused")
      .add("peer", socket_peer_address(SSL_get_fd(ssl)))
      .add("reason", failure_reason(err))
      .add("count", count)
      .add("total", log.total.load())
      .write(*get_logger("node"), spdlog::level::warn);
}

}  // namespace

bool tls_error_queue_guard_bound() {
  // The symbol the dynamic linker resolves for everyone (RTLD_DEFAULT) must be
  // this file's, or libcaf_openssl still calls libssl directly.
  auto* global = dlsym(RTLD_DEFAULT, "SSL_read");
  return global == reinterpret_cast<void*>(&::SSL_read);
}

uint64_t tls_refused_handshakes() {
  return refusals().total.load();
}

}  // namespace pool::detail

extern "C" {

int SSL_read(SSL* ssl, void* buf, int num) {
  static const auto next =
      pool::detail::next_definition<pool::detail::read_fn>("SSL_read");
  ERR_clear_error();
  return next(ssl, buf, num);
}

int SSL_write(SSL* ssl, const void* buf, int num) {
  static const auto next =
      pool::detail::next_definition<pool::detail::write_fn>("SSL_write");
  ERR_clear_error();
  return next(ssl, buf, num);
}

int SSL_connect(SSL* ssl) {
  static const auto next =
      pool::detail::next_definition<pool::detail::handshake_fn>("SSL_connect");
  ERR_clear_error();
  return next(ssl);
}

int SSL_accept(SSL* ssl) {
  static const auto next =
      pool::detail::next_definition<pool::detail::handshake_fn>("SSL_accept");
  ERR_clear_error();
  auto ret = next(ssl);
  if (ret <= 0)
    pool::detail::note_refused_handshake(ssl, ret);
  return ret;
}

}  // extern "C"
