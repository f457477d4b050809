// `--version` of the binaries that link the full library (embedpool::pool).
#pragma once

#include <string>

namespace pool {

/// OpenBLAS's build configuration as it reports itself at run time, e.g.
/// "OpenBLAS 0.3.21 NO_AFFINITY Haswell MAX_THREADS=64".
std::string openblas_version();

/// `version_text(program)` plus an "OpenBLAS ..." line: what every embedpool
/// executable prints for `--version`.
std::string node_version_text(const std::string& program);

}  // namespace pool
