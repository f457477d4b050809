// Helpers for the functions libpool puts in front of CAF's and libssl's
// (basp_guard.cpp, peer_backlog.cpp, tls_error_queue.cpp): every executable
// that links libpool exports them (exported_symbols.list), so the dynamic
// linker binds the shared libraries' calls to libpool's definitions, which
// call the original through `next_definition`.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>

#include <dlfcn.h>

namespace pool::detail {

/// The definition of `name` that follows this executable's in lookup order
/// (the shared library's own). Aborts if there is none: a replacement that
/// cannot reach the original must not run.
template <class F>
F next_definition(const char* name) {
  auto* sym = dlsym(RTLD_NEXT, name);
  if (sym == nullptr) {
    std::fprintf(stderr, "embedpool: cannot find the original %s: %s\n", name, dlerror());
    std::abort();
  }
  return reinterpret_cast<F>(sym);
}

/// True when the process resolves `name` to this executable's definition.
inline bool bound_to_us(const char* name) {
  return dlsym(RTLD_DEFAULT, name) != dlsym(RTLD_NEXT, name);
}

/// "HOST:PORT" of the peer of socket `fd`, or "unknown".
std::string socket_peer_address(int fd);

}  // namespace pool::detail
