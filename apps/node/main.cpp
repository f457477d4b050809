// embedpool-node: runs one embedpool node in the foreground.
#include <cstdio>
#include <string>
#include <vector>

#include "pool/config.hpp"
#include "pool/error.hpp"
#include "pool/node.hpp"
#include "pool/node_version.hpp"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.size() == 1 && args[0] == "--version") {
    std::fputs(pool::node_version_text("embedpool-node").c_str(), stdout);
    return 0;
  }
  auto parsed = pool::parse_node_args(args);
  if (!parsed) {
    std::fprintf(stderr, "embedpool-node: %s\n", pool::describe(parsed.error()).c_str());
    std::fprintf(stderr, "Try 'embedpool-node --help'.\n");
    return 2;
  }
  if (parsed->help) {
    std::fputs(pool::node_usage("embedpool-node").c_str(), stdout);
    return 0;
  }
  return pool::run_node(parsed->config);
}
