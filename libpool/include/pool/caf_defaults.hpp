#pragma once
// The CAF settings embedpool's processes start with. Each is a CAF
// command-line option (`--section.key=value`); a setting the user gives
// (configuration file or command line) replaces the default of that key.
#include <string>
#include <vector>

namespace pool {

/// The work-stealing scheduler's idle behaviour, for nodes and clients: no
/// moderate polling phase (`work-stealing.moderate-poll-attempts=0`) and
/// `work-stealing.relaxed-sleep-duration=100ms`, so that an idle process
/// sleeps instead of polling.
std::vector<std::string> scheduler_caf_defaults();

/// Scheduler threads of a node: half the cores, 2 to 8.
unsigned node_scheduler_threads();

/// A node: the scheduler defaults, `node_scheduler_threads()` scheduler
/// threads (`scheduler.max-threads`), plus BASP heartbeats every second and
/// connections closed after 10 s of silence (CAF's defaults of 0 disable
/// both; dead peers must be detected).
std::vector<std::string> node_caf_defaults();

/// A `pool::client` process: the scheduler defaults, at most 2 scheduler
/// threads, and heartbeats every second so that a node with
/// `middleman.connection-timeout` keeps an idle client connected.
std::vector<std::string> client_caf_defaults();

/// The key of a `--section.key=value` option ("section.key").
std::string caf_option_key(const std::string& option);

}  // namespace pool
