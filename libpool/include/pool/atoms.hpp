// Atoms of the embedpool protocol: an index of names. Every atom text is at
// most 10 characters (a CAF 0.17 limit). The messages they start are listed in
// one place each: what a peer sends and gets back in pool/protocol.hpp, the
// messages between a node's actors in libpool/src/actors.hpp.
#pragma once

#include <caf/atom.hpp>

namespace pool {

// -- peer -> gateway -------------------------------------------------------------

/// One text -> `matrix` (one row).
using embed_atom = caf::atom_constant<caf::atom("embed")>;
/// Many texts -> `matrix`.
using batch_atom = caf::atom_constant<caf::atom("batch")>;
/// A model's `pool_status`.
using status_atom = caf::atom_constant<caf::atom("status")>;
/// The node's Prometheus text exposition.
using metrics_atom = caf::atom_constant<caf::atom("metrics")>;
/// The protocol handshake (pool/version.hpp); only builtin types, so that
/// every version can read it.
using hello_atom = caf::atom_constant<caf::atom("hello")>;

// -- between a node's actors (and worker nodes) ----------------------------------

/// Gateway -> supervisor: a request under a ticket; supervisor -> gateway: its
/// answer.
using submit_atom = caf::atom_constant<caf::atom("submit")>;
using answer_atom = caf::atom_constant<caf::atom("answer")>;
/// Supervisor -> worker: a job; worker -> supervisor: its result or failure.
using work_atom = caf::atom_constant<caf::atom("work")>;
using done_atom = caf::atom_constant<caf::atom("done")>;
using fail_atom = caf::atom_constant<caf::atom("fail")>;
/// Heartbeat: supervisor -> worker (high priority), worker -> supervisor.
using ping_atom = caf::atom_constant<caf::atom("ping")>;
using pong_atom = caf::atom_constant<caf::atom("pong")>;
/// Worker node -> gateway -> supervisor: lend workers, take them back.
using join_atom = caf::atom_constant<caf::atom("join")>;
using leave_atom = caf::atom_constant<caf::atom("leave")>;
/// Node root: the current gateway (asked), or the gateway a supervisor reaches
/// lent workers through (told).
using gateway_atom = caf::atom_constant<caf::atom("gateway")>;
/// Node root: the supervisors of the served models, default first.
using models_atom = caf::atom_constant<caf::atom("models")>;
/// Node root, supervisor, lender: start the graceful drain.
using drain_atom = caf::atom_constant<caf::atom("drain")>;

// -- timers and steps an actor sends itself -------------------------------------

/// Supervisor: its periodic check (deadlines, heartbeats, scaling, drain);
/// root: the drain's bound.
using tick_atom = caf::atom_constant<caf::atom("tick")>;
/// Supervisor: start a worker again after its backoff.
using restart_atom = caf::atom_constant<caf::atom("restart")>;
/// Worker: embed the next chunk of locally queued work.
using run_atom = caf::atom_constant<caf::atom("run")>;
/// Worker to its compute thread: embed this chunk and hand it back.
using compute_atom = caf::atom_constant<caf::atom("compute")>;
/// Root: publish a replaced gateway again while the old socket closes.
using republish_atom = caf::atom_constant<caf::atom("republish")>;
/// Lender: the next attempt to reach a supervisor after a backoff.
using reconnect_atom = caf::atom_constant<caf::atom("reconnect")>;

// -- pool::client's own actor ----------------------------------------------------

/// A call to issue; closing (fail everything pending and quit).
using client_call_atom = caf::atom_constant<caf::atom("cl_call")>;
using client_close_atom = caf::atom_constant<caf::atom("cl_close")>;
/// Expire overdue calls; reconnect after losing the node.
using client_expire_atom = caf::atom_constant<caf::atom("cl_expire")>;
using client_reconnect_atom = caf::atom_constant<caf::atom("cl_recon")>;

}  // namespace pool
