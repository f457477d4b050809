// Running a node: what `embedpool-node` does after parsing its arguments.
#pragma once

#include "pool/config.hpp"

namespace pool {

/// Runs a node in the foreground until SIGINT or SIGTERM, then drains:
/// new work gets `shutting_down`, accepted work finishes (up to
/// pool.drain-timeout). A second signal during the drain exits at once.
/// Returns the process exit code: 0 after a clean drain, 1 if the node failed
/// (e.g. the port was taken), 2 for a configuration error.
/// Must be called from the main thread before any other thread is started.
int run_node(const node_config& cfg);

}  // namespace pool
