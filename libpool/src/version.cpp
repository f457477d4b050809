#include "pool/version.hpp"

#include <caf/config.hpp>

#include "build_info.hpp"

namespace pool {

const char* project_version() {
  return EMBEDPOOL_VERSION_STRING;
}

const char* git_revision() {
  return EMBEDPOOL_GIT_REVISION;
}

std::string version_string() {
  return std::string{project_version()} + " (git " + git_revision() + ")";
}

std::string caf_version() {
  return std::to_string(CAF_VERSION / 10000) + "." +
         std::to_string(CAF_VERSION / 100 % 100) + "." +
         std::to_string(CAF_VERSION % 100);
}

std::string version_text(const std::string& program) {
  return program + " " + version_string() + "\nprotocol " +
         std::to_string(protocol_version) + "\nCAF " + caf_version() + "\n";
}

}  // namespace pool
