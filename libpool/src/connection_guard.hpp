// Descriptor hygiene of a node: a soft RLIMIT_NOFILE raised to the hard limit,
// and a reaper that closes accepted connections silent for longer than
// `middleman.connection-timeout`.
//
// Why the reaper: CAF 0.17.6's BASP broker applies the connection timeout only
// to connections it holds a context for, and it creates one when the first
// complete 75-byte BASP header arrives. A connection that never sends a byte
// (or sends less than a header, or stalls in the TLS handshake) is never timed
// out and holds its descriptor for ever. The broker offers no hook for this, so
// the reaper works below it: it reads the kernel's TCP_INFO of every accepted
// socket of the process and shuts down (shutdown(2), never close(2): the
// descriptor stays CAF's until its multiplexer sees the end of the stream and
// cleans up as for any peer that left) those that received nothing for the
// timeout. It applies the broker's own rule — no data for the timeout, the
// connection goes — to the connections the broker forgets. A legitimate peer
// with `middleman.heartbeat-interval` set sends a heartbeat every interval.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <set>
#include <string>
#include <thread>

namespace pool::detail {

struct fd_limit {
  uint64_t soft_before = 0;  // RLIM_INFINITY shows as UINT64_MAX
  uint64_t soft = 0;
  uint64_t hard = 0;
  int error = 0;  // errno of a failed setrlimit, 0 if none
};

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns both limits.
fd_limit raise_fd_limit();

/// Closes accepted TCP connections of this process (on any port the process
/// listens on, except `excluded` ones) that received no data for `timeout`.
/// Runs one thread, checking every min(1 s, timeout / 4). Thread-safe.
class idle_connection_reaper {
 public:
  idle_connection_reaper(std::chrono::milliseconds timeout, std::set<uint16_t> excluded);
  ~idle_connection_reaper();
  idle_connection_reaper(const idle_connection_reaper&) = delete;
  idle_connection_reaper& operator=(const idle_connection_reaper&) = delete;

  /// Connections shut down so far.
  uint64_t closed() const { return closed_.load(); }

  /// One pass over the process's sockets (also what the thread runs); returns
  /// how many connections it shut down.
  uint64_t sweep();

 private:
  void run();

  const std::chrono::milliseconds timeout_;
  const std::set<uint16_t> excluded_;
  void* dir_;  // DIR* of /proc/self/fd, opened once
  std::atomic<uint64_t> closed_{0};
  std::mutex mtx_;
  std::condition_variable stop_cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace pool::detail
