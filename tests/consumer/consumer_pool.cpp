// Links embedpool::pool (the node's internals): prints what the embedpool
// executables print for --version.
#include <cstdio>

#include <pool/node_version.hpp>

int main() {
  std::fputs(pool::node_version_text("embedpool-consumer-pool").c_str(), stdout);
  return 0;
}
