// A bound on the replies a peer leaves unread, for CAF 0.17.6.
//
// CAF 0.17 appends every message for a connection to that connection's write
// buffer (a std::vector) and never bounds it: a peer that sends requests and
// never reads its socket makes the node hold every reply it owes. CAF offers
// no setting and no callback for it, so libpool replaces four functions of
// libcaf_io, exported by every executable that links libpool
// (exported_symbols.list), the way basp_guard.cpp does:
//  - `scribe_impl::flush()` (plain TCP) and `stream::flush(manager)` (TLS:
//    libcaf_openssl calls it): after each message written to a connection,
//    they see how many bytes wait behind the socket (the write buffer that
//    the kernel has not taken yet);
//  - `basp::routing_table::add_direct` / `erase_direct`: which peer node a
//    connection belongs to.
// When a connection's unwritten bytes pass `max_unread_bytes`, the peer is
// "over its bound": actors a peer can reach (guarded_actor) answer its
// requests `overloaded` at once instead of taking them. When they pass the
// bound by a quarter more (at least 1 MiB more), the connection is shut
// down on the multiplexer thread that owns it: CAF then closes it and frees
// its buffers. Each connection is logged once when it passes the bound and
// once when it is closed.
//
// Thread-safety: every function may be called from any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include <caf/node_id.hpp>

#include "defaults.hpp"

namespace pool::detail {

/// Sets the bound on unwritten reply bytes per peer connection; 0 = none
/// (the default). Thread-safe.
void set_max_unread_bytes(uint64_t bytes);
uint64_t max_unread_bytes();

/// Unwritten bytes at which a connection over its bound is shut down.
uint64_t unread_close_threshold(uint64_t bound);

/// True while the direct connection to `peer` holds more than the bound of
/// unwritten bytes. Cheap (one atomic load) while no connection is over.
bool peer_over_unread_bound(const caf::node_id& peer);

/// "HOST:PORT" of the direct connection to `peer`, or "unknown" when there
/// is none (gone, or reached through another node). For log lines.
std::string peer_address_of(const caf::node_id& peer);

/// A peer that keeps sending what the node drops (messages refused by the
/// trust boundary, messages no handler takes) is disconnected: more than
/// `max_dropped_messages` or `max_dropped_bytes` of them within
/// `dropped_window` (defaults.hpp). No client of ours sends either.
///
/// Counts a dropped message of `bytes` from `peer`. When that takes the peer
/// past the bounds above, its direct connection is marked to be shut down
/// at the next write the node makes to it (a BASP heartbeat at the latest,
/// every middleman.heartbeat-interval), on the multiplexer thread that owns
/// it, and `event=peer_disconnected reason=dropped_messages` is logged once.
void note_dropped_from(const caf::node_id& peer, uint64_t bytes);

/// Connections shut down so far for dropped messages.
uint64_t dropped_connections_closed();

/// Counts a request refused because its peer was over the bound.
void count_unread_refusal();

/// True when CAF's calls resolve to these replacements.
bool peer_backlog_bound();

/// Totals since start: requests refused, connections shut down, and
/// connections that passed the bound.
uint64_t unread_refusals();
uint64_t unread_connections_closed();
uint64_t unread_bound_passed();

}  // namespace pool::detail
