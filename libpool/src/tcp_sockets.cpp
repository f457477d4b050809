#include "tcp_sockets.hpp"

#include <cstdlib>
#include <cstring>
#include <vector>

#include <dirent.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>

namespace pool::detail {

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

ino_t socket_inode(int fd) {
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode))
    return 0;
  return st.st_ino;
}

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

}  // namespace pool::detail
