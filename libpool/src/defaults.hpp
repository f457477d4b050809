// The node's internal tunables: timings and bounds that are not configuration
// keys, in one place. Plain constants (std::chrono only, no CAF header), so
// core/ may include this too; `caf::timespan` is `std::chrono::nanoseconds`.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>

namespace pool::detail {

using namespace std::chrono_literals;

// -- answers a peer sees ---------------------------------------------------------

/// The retry hint every `overloaded` answer carries, whoever sheds the request.
constexpr int64_t overload_retry_after_ms = 100;

// -- supervisor ------------------------------------------------------------------

/// How often the supervisor checks deadlines, heartbeats, scaling and the
/// drain (more often if heartbeat.interval is shorter).
constexpr std::chrono::nanoseconds max_tick = 100ms;
/// Most worker slots (local and lent) one supervisor keeps.
constexpr size_t max_slots = 4096;
/// How long without a shed request ends an overload episode.
constexpr std::chrono::nanoseconds overload_quiet = 1s;
/// Minimum spacing of `shed` reports during an overload episode.
constexpr std::chrono::nanoseconds shed_log_interval = 1s;

// -- node root -------------------------------------------------------------------

/// Republishing a replaced gateway: attempts and spacing while the
/// middleman closes the old socket.
constexpr int max_republish_attempts = 50;
constexpr std::chrono::nanoseconds republish_delay = 100ms;
/// How long past the longest drain timeout the root waits for the models'
/// supervisors before it stops them and the gateway.
constexpr std::chrono::nanoseconds drain_grace = 2s;

// -- gateway ---------------------------------------------------------------------

/// Bound on a status query to a supervisor, and on join and leave.
constexpr std::chrono::nanoseconds status_timeout = 10s;
/// Most status and metrics requests waiting for one model's fresh status.
constexpr size_t max_status_waiters = 4096;
/// Bound on resolving a peer's address for a log line.
constexpr std::chrono::nanoseconds resolve_timeout = 1s;

// -- trust boundary and logs -----------------------------------------------------

/// Spacing of `foreign_message_dropped` lines (each with the count since the
/// last one).
constexpr std::chrono::nanoseconds foreign_log_interval = 1s;
/// A peer that keeps sending what the node drops (refused at the trust
/// boundary, messages no handler takes) is disconnected: more than
/// `max_dropped_messages` or `max_dropped_bytes` of them within
/// `dropped_window`. No client of ours sends either.
constexpr uint64_t max_dropped_messages = 10000;
constexpr uint64_t max_dropped_bytes = uint64_t{64} << 20;
constexpr std::chrono::seconds dropped_window{10};
/// Most lines about single requests a component writes per second
/// (request_log.hpp).
constexpr uint32_t request_lines_per_second = 50;

// -- worker nodes ----------------------------------------------------------------

/// Bound on one connect attempt (a frozen supervisor never answers).
constexpr std::chrono::nanoseconds connect_timeout = 10s;
/// Bound on the join handshake.
constexpr std::chrono::nanoseconds join_timeout = 10s;

// -- workers ---------------------------------------------------------------------

/// Upper bound on a drill hang, so that no thread outlives a test run forever.
constexpr std::chrono::nanoseconds max_hang = 10min;

// -- pool::client ----------------------------------------------------------------

/// Backoff between reconnection attempts.
constexpr std::chrono::milliseconds reconnect_backoff_min = 100ms;
constexpr std::chrono::milliseconds reconnect_backoff_max = 2000ms;
/// How often the client actor looks for overdue calls (the precision of the
/// per-call timeout). Calls carry no CAF request timeout: in CAF 0.17 each one
/// would hold an entry in the actor clock until it fires, even after the
/// answer came, so memory would grow with rate x timeout.
constexpr std::chrono::milliseconds expire_interval = 10ms;
/// Coalescing (`client_options::coalesce`): messages carrying embed calls a
/// client keeps on their way before a further call waits for an answer to
/// share a message with others. Enough to keep a few workers busy; a lone
/// caller (and up to this many at once) never waits.
constexpr uint32_t messages_before_lists = 4;

}  // namespace pool::detail
