#include "pool/node_version.hpp"

#include <cblas.h>

#include "pool/version.hpp"

namespace pool {

std::string openblas_version() {
  std::string config = openblas_get_config();
  while (!config.empty() && config.back() == ' ')
    config.pop_back();
  auto first = config.find_first_not_of(' ');
  return first == std::string::npos ? std::string{"OpenBLAS (unknown)"}
                                    : config.substr(first);
}

std::string node_version_text(const std::string& program) {
  return version_text(program) + openblas_version() + "\n";
}

}  // namespace pool
