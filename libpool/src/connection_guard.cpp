#include "connection_guard.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <dirent.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "logging.hpp"

namespace pool::detail {

namespace {

uint64_t limit_value(rlim_t x) {
  return x == RLIM_INFINITY ? UINT64_MAX : static_cast<uint64_t>(x);
}

/// The local port of a TCP socket, or 0 if `fd` is not one.
uint16_t tcp_local_port(int fd) {
  int type = 0;
  socklen_t len = sizeof(type);
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM)
    return 0;
  sockaddr_storage addr{};
  len = sizeof(addr);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
    return 0;
  if (addr.ss_family == AF_INET)
    return ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
  if (addr.ss_family == AF_INET6)
    return ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port);
  return 0;
}

/// The inode of `fd` if it is a socket, else 0.
ino_t socket_inode(int fd) {
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode))
    return 0;
  return st.st_ino;
}

/// The peer of a connected TCP socket, normalised to IPv6 (v4-mapped).
bool tcp_peer(int fd, in6_addr& addr, uint16_t& port) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0)
    return false;
  if (ss.ss_family == AF_INET) {
    auto* in = reinterpret_cast<sockaddr_in*>(&ss);
    addr = in6_addr{};
    addr.s6_addr[10] = 0xff;
    addr.s6_addr[11] = 0xff;
    std::memcpy(&addr.s6_addr[12], &in->sin_addr, 4);
    port = ntohs(in->sin_port);
    return true;
  }
  if (ss.ss_family == AF_INET6) {
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&ss);
    addr = in6->sin6_addr;
    port = ntohs(in6->sin6_port);
    return true;
  }
  return false;
}

}  // namespace

size_t shutdown_connections_to(const std::string& host, uint16_t port) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_V4MAPPED | AI_ALL;
  hints.ai_family = AF_INET6;
  addrinfo* found = nullptr;
  if (getaddrinfo(host.c_str(), nullptr, &hints, &found) != 0)
    return 0;
  std::vector<in6_addr> targets;
  for (auto* ai = found; ai != nullptr; ai = ai->ai_next)
    targets.push_back(reinterpret_cast<sockaddr_in6*>(ai->ai_addr)->sin6_addr);
  freeaddrinfo(found);
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr)
    return 0;
  size_t n = 0;
  int own = dirfd(dir);
  while (auto* entry = readdir(dir)) {
    char* end = nullptr;
    auto fd = static_cast<int>(std::strtol(entry->d_name, &end, 10));
    if (end == entry->d_name || *end != '\0' || fd == own || socket_inode(fd) == 0 ||
        tcp_local_port(fd) == 0)
      continue;
    in6_addr peer{};
    uint16_t peer_port = 0;
    if (!tcp_peer(fd, peer, peer_port) || peer_port != port)
      continue;
    for (const auto& t : targets)
      if (std::memcmp(&t, &peer, sizeof(peer)) == 0) {
        if (shutdown(fd, SHUT_RDWR) == 0)
          ++n;
        break;
      }
  }
  closedir(dir);
  return n;
}

fd_limit raise_fd_limit() {
  fd_limit result;
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) != 0) {
    result.error = errno;
    return result;
  }
  result.soft_before = limit_value(lim.rlim_cur);
  result.hard = limit_value(lim.rlim_max);
  if (lim.rlim_cur != lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &lim) != 0)
      result.error = errno;
  }
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0)
    result.soft = limit_value(lim.rlim_cur);
  return result;
}

idle_connection_reaper::idle_connection_reaper(std::chrono::milliseconds timeout,
                                               std::set<uint16_t> excluded)
    : timeout_(timeout), excluded_(std::move(excluded)), dir_(opendir("/proc/self/fd")) {
  thread_ = std::thread{[this] { run(); }};
}

idle_connection_reaper::~idle_connection_reaper() {
  {
    std::lock_guard<std::mutex> guard{mtx_};
    stop_ = true;
  }
  stop_cv_.notify_all();
  thread_.join();
  if (dir_ != nullptr)
    closedir(static_cast<DIR*>(dir_));
}

void idle_connection_reaper::run() {
  auto period = std::clamp(timeout_ / 4, std::chrono::milliseconds(50),
                           std::chrono::milliseconds(1000));
  std::unique_lock<std::mutex> guard{mtx_};
  while (!stop_cv_.wait_for(guard, period, [this] { return stop_; })) {
    guard.unlock();
    auto n = sweep();
    if (n > 0)
      log_event("idle_connections_closed")
          .add("count", n)
          .add("total", closed_.load())
          .add("timeout_ms", static_cast<int64_t>(timeout_.count()))
          .write(*get_logger("node"), spdlog::level::warn);
    guard.lock();
  }
}

uint64_t idle_connection_reaper::sweep() {
  struct candidate {
    int fd;
    ino_t inode;
    uint16_t port;
  };
  std::vector<candidate> sockets;
  std::set<uint16_t> listening;
  // The directory stays open for the reaper's life: at the descriptor limit,
  // when it matters most, opening it again would fail.
  auto* dir = static_cast<DIR*>(dir_);
  if (dir == nullptr)
    return 0;
  rewinddir(dir);
  int own = dirfd(dir);
  while (auto* entry = readdir(dir)) {
    char* end = nullptr;
    auto fd = std::strtol(entry->d_name, &end, 10);
    if (end == entry->d_name || *end != '\0' || fd == own)
      continue;
    auto inode = socket_inode(static_cast<int>(fd));
    if (inode == 0)
      continue;
    auto port = tcp_local_port(static_cast<int>(fd));
    if (port == 0)
      continue;
    int accepting = 0;
    socklen_t len = sizeof(accepting);
    if (getsockopt(static_cast<int>(fd), SOL_SOCKET, SO_ACCEPTCONN, &accepting, &len) ==
            0 &&
        accepting != 0) {
      listening.insert(port);
      continue;
    }
    sockets.push_back({static_cast<int>(fd), inode, port});
  }
  uint64_t closed = 0;
  for (const auto& s : sockets) {
    if (listening.count(s.port) == 0 || excluded_.count(s.port) != 0)
      continue;  // an outgoing connection, or a port the reaper leaves alone
    tcp_info info{};
    socklen_t len = sizeof(info);
    if (getsockopt(s.fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0)
      continue;
    if (info.tcpi_state != TCP_ESTABLISHED ||
        info.tcpi_last_data_recv < static_cast<uint32_t>(timeout_.count()))
      continue;
    // The descriptor may have been closed and reused since it was listed.
    if (socket_inode(s.fd) != s.inode)
      continue;
    if (shutdown(s.fd, SHUT_RDWR) == 0)
      ++closed;
  }
  closed_ += closed;
  return closed;
}

}  // namespace pool::detail
