// The OpenSSL error-queue guard for CAF 0.17's openssl module (see
// tls_error_queue.cpp): libpool defines SSL_read, SSL_write, SSL_accept and
// SSL_connect, each clearing the thread's error queue before calling
// libssl's, and every executable linking libpool exports them
// (libpool/src/exported_symbols.list) so that libcaf_openssl binds to them.
#pragma once

#include <cstdint>

namespace pool::detail {

/// True when the process resolves SSL_read to the guard (the executable
/// exports it ahead of libssl); false means CAF calls libssl directly and one
/// failing TLS connection can close others.
bool tls_error_queue_guard_bound();

/// TLS handshakes refused on the accepting side since the process started
/// (logged as `event=tls_handshake_refused`, at most one line per second).
uint64_t tls_refused_handshakes();

}  // namespace pool::detail
