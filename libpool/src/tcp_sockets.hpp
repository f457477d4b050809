// The TCP sockets of this process, read from /proc/self/fd and the kernel
// (plain POSIX; part of the client library). Thread-safe.
#pragma once

#include <cstdint>
#include <string>

#include <netinet/in.h>
#include <sys/types.h>

namespace pool::detail {

/// The local port of a TCP socket, or 0 if `fd` is not one.
uint16_t tcp_local_port(int fd);

/// The inode of `fd` if it is a socket, else 0.
ino_t socket_inode(int fd);

/// The peer of a connected TCP socket, normalised to IPv6 (v4-mapped).
bool tcp_peer(int fd, in6_addr& addr, uint16_t& port);

/// Shuts down (shutdown(2)) every connected TCP socket of this process whose
/// peer is host:port (`host` numeric or resolved); returns how many. The
/// client calls it when a node did not complete its handshake in time: CAF's
/// broker would otherwise keep that half-open connection, and its pending
/// handshake, until the actor system is destroyed (and leak it then).
size_t shutdown_connections_to(const std::string& host, uint16_t port);

}  // namespace pool::detail
