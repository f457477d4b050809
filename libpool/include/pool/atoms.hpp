// Atoms of the embedpool protocol. Every atom text is at most 10 characters
// (a CAF 0.17 limit). Peers use the first group; the rest is internal to a node.
#pragma once

#include <caf/atom.hpp>

namespace pool {

// -- requests a peer sends to the gateway ------------------------------------

/// `(embed_atom, std::string text [, std::string task])` -> `matrix` (one row).
using embed_atom = caf::atom_constant<caf::atom("embed")>;
/// `(batch_atom, std::vector<std::string> texts [, std::string task])` -> `matrix`.
using batch_atom = caf::atom_constant<caf::atom("batch")>;
/// `(status_atom)` -> `pool_status`.
using status_atom = caf::atom_constant<caf::atom("status")>;
/// `(metrics_atom)` -> `std::string`: the node's Prometheus text exposition.
using metrics_atom = caf::atom_constant<caf::atom("metrics")>;
/// `(hello_atom, uint32_t protocol)` -> `(hello_atom, uint32_t protocol,
/// std::string version)`, or the error `protocol_mismatch` naming both
/// versions. The first message a peer sends after connecting (pool/version.hpp);
/// only builtin types, so that every version can read it.
using hello_atom = caf::atom_constant<caf::atom("hello")>;

// -- supervisor <-> worker ---------------------------------------------------

/// Supervisor -> worker: `(work_atom, job)`; worker -> supervisor: `(done_atom, ...)`.
using work_atom = caf::atom_constant<caf::atom("work")>;
using done_atom = caf::atom_constant<caf::atom("done")>;
using fail_atom = caf::atom_constant<caf::atom("fail")>;
/// Heartbeat: `(ping_atom, uint64_t seq)` (high priority) ->
/// `(pong_atom, uint64_t seq, worker_report)`.
using ping_atom = caf::atom_constant<caf::atom("ping")>;
using pong_atom = caf::atom_constant<caf::atom("pong")>;
/// Worker-internal: process the next chunk of locally queued work.
using run_atom = caf::atom_constant<caf::atom("run")>;

// -- supervisor housekeeping -------------------------------------------------

using tick_atom = caf::atom_constant<caf::atom("tick")>;
using restart_atom = caf::atom_constant<caf::atom("restart")>;
using drain_atom = caf::atom_constant<caf::atom("drain")>;
/// Gateway -> supervisor: `(submit_atom, uint64_t ticket, uint8_t lane, texts,
/// task)`; supervisor -> gateway: `(answer_atom, ticket, matrix | caf::error)`.
using submit_atom = caf::atom_constant<caf::atom("submit")>;
using answer_atom = caf::atom_constant<caf::atom("answer")>;
/// Worker node -> gateway -> supervisor:
/// `(join_atom, std::string node, std::vector<caf::actor> workers)` -> `uint32_t`
/// (workers added); `(leave_atom, std::string node)` -> `uint32_t` once none of
/// the node's workers holds work any more.
using join_atom = caf::atom_constant<caf::atom("join")>;
using leave_atom = caf::atom_constant<caf::atom("leave")>;
/// `(gateway_atom)` -> `caf::actor`: the supervisor's current gateway.
using gateway_atom = caf::atom_constant<caf::atom("gateway")>;

}  // namespace pool
